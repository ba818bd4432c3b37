"""The compose project of compose.yaml, built and run once for this directory's tests.

It is taken down (containers, network, volumes) on every path, failure included, and the
teardown checks that the engine holds nothing of it afterwards. Where no Docker engine answers,
the tests are skipped, saying why. When a test fails, the last lines of every container's log
are added to its report.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager

import pytest

from tests.containers.docker import (
    NoEngine,
    Project,
    build_images,
    compose_cli,
    docker_cli,
    ensure_base_image,
)

log = logging.getLogger(__name__)


@contextmanager
def phase(what: str) -> Iterator[None]:
    """Log how long a step took (`tox -e containers` shows these lines): where the minutes go."""
    started = time.monotonic()
    yield
    log.info("%s: %.1f s", what, time.monotonic() - started)


@pytest.fixture(scope="module")
def project() -> Iterator[Project]:
    try:
        docker = docker_cli()
    except NoEngine as e:
        pytest.skip(f"{e}; .ci/run installs docker.io and starts dockerd")
    compose = compose_cli(docker)
    with phase("base image"):
        log.info("%s: %s", "debian:bookworm-slim", ensure_base_image(docker))
    with phase("four images built"):
        build_images(docker)
    running = Project(docker, compose, f"bazar-test-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        with phase(f"compose up ({running.name})"):
            running("up", "-d", "--no-build", timeout=600)
        yield running
    finally:
        with phase("compose down"):
            running("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=600)
        assert running.leftovers() == [], "compose down left these behind"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    running = getattr(item, "funcargs", {}).get("project")
    if report.failed and report.when == "call" and isinstance(running, Project):
        try:
            logs = running("logs", "--no-color", "--tail=30", timeout=60)
        except Exception as e:  # the report must not hide the failure behind this one
            logs = f"(no logs: {e})"
        report.sections.append(("compose logs (last 30 lines per container)", logs))
    return report

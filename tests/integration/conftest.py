"""Fixtures for the integration tests: real Bazar processes on loopback, and one HTTP pool per test.

* ``cluster``: one ``twistd -n bazar-cluster`` per test module (its state is shared by that
  module's tests); ``fresh_cluster``: one for a single test, e.g. one that stops or kills it.
* ``processes``: start any other process (a role alone); each is stopped by pid afterwards.
* ``http``: a treq client on one ``HTTPConnectionPool``, closed when the test ends;
  ``api`` wraps it for the module's cluster.

When a test fails, the last lines of every process it may have talked to are added to its
report (see ``pytest_runtest_makereport``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.web.client import Agent, HTTPConnectionPool

from bazar.launch import Cluster, Process, Processes
from tests.integration.api import Api
from tests.integration.cluster import LOG_TAIL_LINES, start_cluster

_test_started = pytest.StashKey[float]()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield running
    running.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = start_cluster(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop_all_cleanly()


@pytest_twisted.async_yield_fixture
async def http() -> AsyncIterator[HTTPClient]:
    """The test's one HTTP client; its pool is closed (every connection aborted) afterwards."""
    from twisted.internet import reactor

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 32
    pool.retryAutomatically = False  # never send a write twice behind the test's back
    yield HTTPClient(Agent(reactor, pool=pool))
    await pool.closeCachedConnections()


@pytest.fixture
def api(http: HTTPClient, cluster: Cluster) -> Api:
    return Api(http, cluster)


# -- the logs of the processes a failed test used, in its report -------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_test_started] = time.monotonic()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        since = item.stash.get(_test_started, 0.0)
        for process in Process.registry:
            if process.stopped is None or process.stopped >= since:
                report.sections.append(
                    (
                        f"{process.name} (pid {process.pid}) log: {process.log_path}",
                        process.log_tail(LOG_TAIL_LINES),
                    )
                )
    return report

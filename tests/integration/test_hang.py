"""``python -m bazar.bench.hang`` end to end: two sequencer hangs on a cluster of its own.

It fills both logs past one replication batch, hangs the catalog sequencer and then the order
sequencer, resumes each, and must report every trial's outage, no write failing after a
resume, converged replicas, one election per hang and none else, then exit 0 with nothing of
its cluster left running.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import kill_processes_under

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 240.0


@pytest.fixture(autouse=True)
def nothing_left_behind(tmp_path: Path) -> Iterator[None]:
    """However the test ends, nothing it started outlives it (its cluster runs in a session of
    its own, but under ``tmp_path``: the tool's temporary directory is made there)."""
    yield
    left = kill_processes_under(tmp_path)
    assert not left, f"processes outlived the test, killed now: {left}"


def test_two_hangs(tmp_path: Path) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "bazar.bench.hang", "--trials", "2", "--resume-within", "1", "--seed", "3"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env={**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"},
    )
    assert process.returncode == 0, (process.stdout, process.stderr[-3000:])
    assert re.search(r"trial 1/2: catalog-\d stopped; writes out for \d+\.\d\d s", process.stderr)
    assert re.search(r"trial 2/2: order-\d stopped; writes out for \d+\.\d\d s", process.stderr)
    outage = re.search(r"write outage after a hung sequencer: p50 (\S+) s, p99 (\S+) s", process.stdout)
    assert outage is not None, process.stdout
    assert 0 < float(outage.group(1)) <= float(outage.group(2)), outage.group(0)
    assert "2 trials, 2 with writes acknowledged again" in process.stdout
    assert "writes failed from 2 s after a resume: 0" in process.stdout
    assert "trials whose replicas did not converge within 30 s: 0" in process.stdout
    assert "elections: 2, of which no fault caused 0" in process.stdout
    assert not list(tmp_path.glob("bazar-hang-*")), "its directory was left behind"

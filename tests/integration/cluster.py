"""What the integration tests add to ``bazar.launch``: their secret, and a sweep for strays.

Everything here is synchronous (subprocess, ``/proc``): fixtures use it outside the reactor,
and tests only call it between their own HTTP calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from bazar import launch
from bazar.launch import STOP_TIMEOUT, Cluster, Layout, twistd, wait_for

SECRET = "integration-secret"
LOG_TAIL_LINES = 150  # of each process's log, in a failed test's report


def write_config(directory: Path, *, secret: str | None = SECRET, **settings: Any) -> Layout:
    """``bazar.launch.write_config`` with the tests' secret (``secret=None``: none in the file)."""
    return launch.write_config(directory, secret=secret, **settings)


def start_cluster(directory: Path, *, secret: str | None = SECRET, **settings: Any) -> Cluster:
    """``bazar.launch.start_cluster`` with the tests' secret; ``Cluster.stop`` stops it."""
    return launch.start_cluster(directory, secret=secret, **settings)


def processes_under(directory: Path) -> dict[int, int]:
    """Every live process (pid -> process group) whose working directory is ``directory`` or
    below: what a test started there, however it was started (in a session of its own, by a
    process of its own that has since died, ...), never this test run itself."""
    root = directory.resolve()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd").removesuffix(" (deleted)"))
            state, _ppid, pgid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:  # gone, or another user's
            continue
        if state != "Z" and cwd.is_relative_to(root) and int(pgid) != os.getpgrp():
            found[int(entry.name)] = int(pgid)
    return found


def kill_processes_under(directory: Path, timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGKILL to the process group of everything ``processes_under(directory)`` finds; what
    was found, to report (a passing test leaves nothing)."""
    found = processes_under(directory)
    described = []
    for pid in found:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            command = "?"
        described.append(f"{pid} {command[:120]}")
    for pgid in set(found.values()):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not processes_under(directory), timeout, "the processes to be gone")
    return described


def run_twistd(cwd: Path, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a twistd command expected to end by itself (a start-up error), with a deadline.

    In a session of its own, so that if it does not end, its whole process group is killed.
    """
    command = twistd(*args)
    with subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise AssertionError(f"{command} still ran after {timeout:.0f}s; killed") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

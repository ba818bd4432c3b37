"""Processes in sessions of their own, stopped by pid and then by process group.

Each runs in a session of its own, so Ctrl-C at the terminal does not reach it half-way
through a measurement, and stopping it can reach any child it left behind: SIGTERM to its
PID, and if it (or a child) outlives a deadline, SIGKILL to its process group, which it
alone owns (``stop_group``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bazar.launch.probe import group_alive, poll, port_is_free, process_group

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
# twistd stops cleanly on SIGTERM and then exits *by* SIGTERM (Twisted re-raises the signal
# that stopped the reactor), which subprocess reports as -15.
CLEAN_EXIT = (0, -signal.SIGTERM)
STOP_TIMEOUT = 15.0
CHILDREN_TIMEOUT = 2.0  # how long children may outlive a process ``Process.stop`` stopped


class StartError(Exception):
    """A process did not come up; the message has the end of its log."""


class Unclean(Exception):
    """A process did not stop cleanly (see ``Process.stop_cleanly``); the message says how."""


def twistd(*args: str) -> list[str]:
    """``twistd -n --pidfile= args...`` with this Python."""
    return [*TWISTD, *args]


@dataclass(frozen=True)
class Stopped:
    """How ``stop_group`` stopped a process and its process group."""

    status: int | None
    """Its exit status if it exited within the deadline after SIGTERM; None if it was killed."""
    killed: bool = False
    """Whether a deadline passed (SIGTERM was not enough) and the group was sent SIGKILL."""
    outlived: tuple[int, ...] = ()
    """The group's live pids when that deadline passed (the process itself too, if ``status``
    is None)."""
    survivors: tuple[int, ...] = ()
    """Pids still live in the group even after SIGKILL and a deadline (never expected)."""


def kill_group(popen: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
    """SIGKILL to the process group ``popen`` leads (its own session), then reap ``popen``."""
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be refused
        pass


def stop_group(
    popen: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT, children_timeout: float = STOP_TIMEOUT
) -> Stopped:
    """Stop a process started in a session of its own, and everything left in its process group.

    SIGTERM to its PID only (unless it already had one): a parent such as ``bazar-cluster``
    stops its children itself (its process monitor would restart one that died first). If it
    has not exited within ``timeout`` seconds, SIGKILL to its whole group at once. If it has,
    every other process still in its group gets ``children_timeout`` seconds more (polled)
    before SIGKILL goes to the group. After a SIGKILL the group must be empty within
    ``timeout``; who is left is reported as ``survivors``.
    """
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
    return _reap_group(popen, timeout, children_timeout)


def _reap_group(popen: subprocess.Popen[Any], timeout: float, children_timeout: float) -> Stopped:
    """``stop_group`` after the SIGTERM."""
    pgid = popen.pid  # a session leader's pid is its process group's id
    try:
        status: int | None = popen.wait(timeout)
    except subprocess.TimeoutExpired:
        status = None
    if status is not None and poll(lambda: not group_alive(pgid), children_timeout) is not None:
        return Stopped(status)
    # The process itself, or children of its that outlived it (a cluster's replicas), are still
    # in its group (or were until a moment ago: the deadline passed all the same).
    outlived = tuple(process_group(pgid))
    kill_group(popen, timeout)
    poll(lambda: not group_alive(pgid), timeout)
    return Stopped(status, killed=True, outlived=outlived, survivors=tuple(process_group(pgid)))


# -- processes ----------------------------------------------------------------------------------


class Process:
    """A child in its own session, its output in ``log_path``, stopped by pid (see ``stop``)."""

    registry: ClassVar[list[Process]] = []  # every one started here, for a failed test's report

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        cwd: Path,
        ports: Iterable[int] = (),
        expect_status: Collection[int] | None = CLEAN_EXIT,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.ports = tuple(ports)  # loopback ports it listens on: free again once it is stopped
        self.expect_status = expect_status  # None: any exit status is clean
        self.log_path = cwd / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                self.args,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        self.pid = self.popen.pid  # also its process group's id
        self.started = time.monotonic()
        self.stopped: float | None = None
        Process.registry.append(self)

    def __repr__(self) -> str:
        return f"<{self.name} pid {self.pid}>"

    def running(self) -> bool:
        return self.popen.poll() is None

    def group(self) -> list[int]:
        """This process and every descendant still in its process group."""
        return process_group(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"

    def kill_group(self) -> None:
        """SIGKILL to its whole process group at once (no SIGTERM first)."""
        kill_group(self.popen, STOP_TIMEOUT)
        self.stopped = time.monotonic()

    def stop(self, timeout: float = STOP_TIMEOUT, children_timeout: float = CHILDREN_TIMEOUT) -> Stopped:
        """SIGTERM to the PID; SIGKILL to its process group if it or a child is still there."""
        stopped = stop_group(self.popen, timeout, children_timeout)
        self.stopped = time.monotonic()
        return stopped

    def stop_cleanly(self, timeout: float = STOP_TIMEOUT) -> None:
        """``stop`` (children get ``timeout`` too); Unclean, with its log, if it needed SIGKILL,
        exited with another status than ``expect_status`` or left a port of its listening."""
        self._check(self.stop(timeout, children_timeout=timeout), timeout)

    def _check(self, stopped: Stopped, timeout: float) -> None:
        problems = []
        if stopped.status is None:
            problems.append(
                f"did not exit within {timeout:.0f}s of SIGTERM; killed (pids {list(stopped.outlived)})"
            )
        else:
            if self.expect_status is not None and stopped.status not in self.expect_status:
                problems.append(
                    f"exited with status {stopped.status}, expected one of {tuple(self.expect_status)}"
                )
            if stopped.killed:
                problems.append(f"children outlived it: pids {list(stopped.outlived)}; killed")
        if stopped.survivors:
            problems.append(f"still running after SIGKILL: pids {list(stopped.survivors)}")
        if poll(lambda: all(port_is_free(p) for p in self.ports), timeout) is None:
            problems.append(f"ports still listening: {[p for p in self.ports if not port_is_free(p)]}")
        if problems:
            raise Unclean(
                f"{self.name} (pid {self.pid}) did not stop cleanly: {'; '.join(problems)}\n"
                f"--- last lines of {self.log_path} ---\n{self.log_tail(150)}"
            )


class Processes:
    """Everything started for one run (or test), to stop whatever happens."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory  # where ``start`` runs them unless told otherwise
        self.started: list[Process] = []

    def start(
        self,
        name: str,
        args: Sequence[str],
        cwd: Path | None = None,
        ports: Iterable[int] = (),
        expect_status: Collection[int] | None = CLEAN_EXIT,
    ) -> Process:
        directory = cwd or self.directory
        assert directory is not None, "Processes(directory) or start(..., cwd=)"
        process = Process(name, args, directory, ports, expect_status)
        self.started.append(process)
        return process

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> list[Process]:
        """SIGTERM to every one at once, then each reaped as ``Process.stop`` does; those
        stopped, the last started first."""
        processes, self.started = self.started, []
        for process in processes:
            if process.running():
                process.popen.send_signal(signal.SIGTERM)
        for process in reversed(processes):
            _reap_group(process.popen, timeout, CHILDREN_TIMEOUT)
            process.stopped = time.monotonic()
        return processes[::-1]

    def stop_all_cleanly(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to every one at once, then each checked as ``Process.stop_cleanly`` does;
        Unclean with what went wrong with each, once all are stopped."""
        processes, self.started = self.started, []
        for process in processes:
            if process.running():
                process.popen.send_signal(signal.SIGTERM)
        problems = []
        for process in processes:
            try:
                process._check(_reap_group(process.popen, timeout, timeout), timeout)
            except Unclean as e:
                problems.append(str(e))
            process.stopped = time.monotonic()
        if problems:
            raise Unclean("\n\n".join(problems))

"""Real Bazar processes for the integration tests: configs on free loopback ports, start, wait, stop.

Everything here is synchronous (subprocess, sockets, ``/proc``): fixtures use it outside the
reactor, and tests only call it between their own HTTP calls. Every process is started in a
session of its own, so stopping it can also reach any child it left behind (by process group).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from bazar import config
from bazar.bench.cluster import (
    kill_group,
    listening_pid,
    loopback_ports,
    process_group,
    stop_group,
)

T = TypeVar("T")

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
SECRET_HEADER = "X-Bazar-Secret"
CATALOGS = ("catalog-1", "catalog-2", "catalog-3")
ORDERS = ("order-1", "order-2", "order-3")
REPLICAS = (*CATALOGS, *ORDERS)
NAMES = ("frontend", *REPLICAS)

# twistd stops cleanly on SIGTERM and then exits *by* SIGTERM (Twisted re-raises the signal
# that stopped the reactor), which subprocess reports as -15.
CLEAN_EXIT = (0, -signal.SIGTERM)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
LOG_TAIL_LINES = 150

# Never through a proxy: every URL here is on 127.0.0.1.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- polling ---------------------------------------------------------------------------


def poll(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``check`` until it returns something truthy; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {result!r})")
        time.sleep(interval)  # the poll's interval, not a guess at how long something takes


# -- ports -----------------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (bound with SO_REUSEADDR, as Twisted would)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


# -- HTTP, synchronously (fixtures only; tests use treq) -------------------------------


def get_json(url: str, secret: str | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={SECRET_HEADER: secret} if secret else {})
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """One cluster's config file and where its processes listen."""

    directory: Path
    config: Path
    ports: dict[str, int]  # HTTP
    channel_ports: dict[str, int]  # the internal channel (bazar.channel)
    secret: str | None
    data_dir: Path

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def ports_of(self, name: str) -> tuple[int, int]:
        """Both ports ``name`` listens on."""
        return self.ports[name], self.channel_ports[name]

    def all_ports(self) -> list[int]:
        return [*self.ports.values(), *self.channel_ports.values()]

    @property
    def frontend(self) -> str:
        return self.url("frontend")


def write_config(
    directory: Path,
    *,
    secret: str | None = "integration-secret",
    cache_size: int = 5,
    books: int | None = None,
    name: str = "bazar.toml",
) -> Layout:
    """A config for 1 + 3 + 3 processes on free loopback ports, data under ``directory``.

    ``secret=None`` leaves the secret out, so the processes read (or create) ``data/secret``;
    ``books=None`` leaves the catalog at its default size (the report's seven books).
    """
    ports, channel_ports = loopback_ports(NAMES)
    raw = config.document(
        {"data_dir": "data", "cache_size": cache_size, "secret": secret, "books": books},
        {process: config.endpoints(ports[process], channel_ports[process]) for process in NAMES},
    )
    path = config.write(directory / name, raw)
    return Layout(directory, path, ports, channel_ports, secret, directory / "data")


# -- processes -------------------------------------------------------------------------


class Process:
    """A process under test: its own session, its output in a log file, stopped by pid."""

    registry: ClassVar[list[Process]] = []  # for the failure report: see conftest

    def __init__(self, name: str, args: list[str], cwd: Path, ports: Iterable[int] = ()) -> None:
        self.name = name
        self.args = args
        self.ports = tuple(ports)
        self.log_path = cwd / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                args,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.pid = self.popen.pid  # also its process group's id
        self.started = time.monotonic()
        self.stopped: float | None = None
        Process.registry.append(self)

    def __repr__(self) -> str:
        return f"<Process {self.name} pid={self.pid}>"

    def group(self) -> list[int]:
        """This process and every descendant still in its process group."""
        return process_group(self.pid)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def kill_group(self) -> None:
        """SIGKILL to its whole process group at once (no SIGTERM first)."""
        kill_group(self.popen, STOP_TIMEOUT)
        self.stopped = time.monotonic()

    def stop(
        self, *, expect_status: Collection[int] | None = CLEAN_EXIT, timeout: float = STOP_TIMEOUT
    ) -> None:
        """Stop it by pid and make sure nothing of it is left; AssertionError (with its log) if not.

        SIGTERM and a deadline first; SIGKILL to the whole process group if the process or
        any child outlives it (``bazar.bench.cluster.stop_group``). Then every port it was
        given must be free again.
        """
        problems = []
        stopped = stop_group(self.popen, timeout, children_timeout=timeout)
        if stopped.status is None:
            problems.append(
                f"did not exit within {timeout:.0f}s of SIGTERM; killed (pids {list(stopped.outlived)})"
            )
        else:
            if expect_status is not None and stopped.status not in expect_status:
                problems.append(
                    f"exited with status {stopped.status}, expected one of {tuple(expect_status)}"
                )
            if stopped.killed:
                problems.append(f"children outlived it: pids {list(stopped.outlived)}; killed")
        if stopped.survivors:
            problems.append(f"still running after SIGKILL: pids {list(stopped.survivors)}")
        busy = [p for p in self.ports if not port_is_free(p)]
        if busy:
            try:
                poll(lambda: all(port_is_free(p) for p in self.ports), timeout, "its ports to be free")
            except AssertionError:
                problems.append(f"ports still listening: {[p for p in self.ports if not port_is_free(p)]}")
        self.stopped = time.monotonic()
        if problems:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) did not stop cleanly: {'; '.join(problems)}\n"
                f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
            )


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
    poll(lambda: not processes_under(directory), timeout, "the processes to be gone")
    return described


class Processes:
    """Starts processes in one directory and remembers them, to stop each afterwards."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Process] = []
        self.expected_status: dict[Process, Collection[int] | None] = {}

    def start(
        self,
        name: str,
        args: list[str],
        ports: tuple[int, ...] = (),
        expect_status: Collection[int] | None = CLEAN_EXIT,
    ) -> Process:
        process = Process(name, args, self.directory, ports)
        self.started.append(process)
        self.expected_status[process] = expect_status
        return process

    def stop_all(self) -> None:
        errors = []
        for process in self.started:
            try:
                process.stop(expect_status=self.expected_status[process])
            except AssertionError as e:
                errors.append(str(e))
        assert not errors, "\n\n".join(errors)


def twistd(*args: str) -> list[str]:
    return [*TWISTD, *args]


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


# -- the cluster -----------------------------------------------------------------------


class Cluster:
    """``twistd -n bazar-cluster`` on its own config, started and healthy."""

    def __init__(self, layout: Layout, process: Process) -> None:
        self.layout = layout
        self.process = process

    @property
    def secret(self) -> str:
        assert self.layout.secret is not None
        return self.layout.secret

    @property
    def frontend(self) -> str:
        return self.layout.frontend

    def url(self, name: str) -> str:
        return self.layout.url(name)

    def status(self) -> dict[str, Any]:
        """``GET /bazar/cluster``, synchronously."""
        code, body = get_json(self.frontend + "/bazar/cluster")
        assert code == 200, (code, body)
        return body

    def healthy(self) -> dict[str, Any] | None:
        """The cluster's status when all six replicas are healthy, else None."""
        if self.process.popen.poll() is not None:
            raise AssertionError(
                f"the cluster exited with status {self.process.popen.returncode} while starting\n"
                f"--- {self.process.log_path} ---\n{self.process.log_tail()}"
            )
        try:
            state = self.status()
        except (OSError, ValueError, AssertionError):
            return None
        replicas = state["replicas"]
        if len(replicas) == len(REPLICAS) and all(r["healthy"] for r in replicas):
            return state
        return None

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        try:
            return poll(self.healthy, timeout, "all six replicas to be healthy", interval=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- {self.process.log_path} ---\n{self.process.log_tail()}") from None

    def pid_of(self, name: str) -> int | None:
        """The pid of the child process listening as ``name`` (frontend, catalog-2, ...)."""
        return listening_pid(self.layout.ports[name], self.process.group())

    def stop(self) -> None:
        self.process.stop()


def start_cluster(directory: Path, **config: Any) -> Cluster:
    layout = write_config(directory, **config)
    process = Process(
        "bazar-cluster",
        twistd("bazar-cluster", "--config", str(layout.config)),
        directory,
        layout.all_ports(),
    )
    cluster = Cluster(layout, process)
    try:
        cluster.wait_healthy()
    except BaseException:
        process.kill_group()
        raise
    return cluster

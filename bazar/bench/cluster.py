"""Processes the benchmark starts itself: Bazar clusters, the ceiling and the floor, stopped by PID.

Each process runs in a session of its own, so Ctrl-C at the terminal does not reach it
half-way through a measurement; the benchmark stops it instead: SIGTERM to its PID, and
if it (or a child it left behind) outlives a deadline, SIGKILL to its process group, which
it alone owns (``stop_group``, which the integration tests' harness uses too).
``Processes.stop_all`` runs in a ``finally``, so this also happens on errors and
interrupts. Everything here is synchronous: it runs before, between and after the
reactor's measurements.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bazar import config

T = TypeVar("T")

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
CATALOGS = ("catalog-1", "catalog-2", "catalog-3")
ORDERS = ("order-1", "order-2", "order-3")
NAMES = ("frontend", *CATALOGS, *ORDERS)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
CHILDREN_TIMEOUT = 2.0  # how long children may outlive a process the benchmark stopped

# Never through a proxy: every URL here is on 127.0.0.1.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StartError(Exception):
    """A process did not come up; the message has the end of its log."""


def poll(check: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T | None:
    """Call ``check`` until it returns something truthy or ``timeout`` passes (then None)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago (bound to port 0 together)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def get_json(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    """GET ``url`` synchronously: (status, decoded JSON body)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def get_text(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> str:
    request = urllib.request.Request(url, headers=headers or {})
    with _opener.open(request, timeout=timeout) as response:
        text: str = response.read().decode()
        return text


# -- processes ---------------------------------------------------------------------------------


class Process:
    """A child in its own session, its output in ``log_path``."""

    def __init__(self, name: str, args: Sequence[str], cwd: Path) -> None:
        self.name = name
        self.log_path = cwd / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                list(args),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        self.pid = self.popen.pid  # also its process group's id

    def __repr__(self) -> str:
        return f"<{self.name} pid {self.pid}>"

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"

    def stop(self, timeout: float = STOP_TIMEOUT) -> Stopped:
        """SIGTERM to the PID; SIGKILL to its process group if it or a child is still there."""
        return stop_group(self.popen, timeout, children_timeout=CHILDREN_TIMEOUT)


def listening_inodes(port: int, tables: Iterable[str] = ("/proc/net/tcp", "/proc/net/tcp6")) -> set[str]:
    """The socket inodes listening on TCP ``port``, from the kernel's tables."""
    inodes = set()
    for table in tables:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    return inodes


def listening_pid(port: int, candidates: Iterable[int] | None = None) -> int | None:
    """The pid (of ``candidates``, or of every process we may look into) listening on TCP
    ``port``, found through /proc; None if none is."""
    sockets = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    if not sockets:
        return None
    if candidates is None:
        candidates = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    for pid in candidates:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:  # another user's process, or gone
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in sockets:
                    return pid
            except OSError:
                continue
    return None


def process_group(pgid: int) -> list[int]:
    """The live (not zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in process group ``pgid``."""
    return bool(process_group(pgid))


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

    SIGTERM to its PID only: a parent such as ``bazar-cluster`` stops its children itself
    (its process monitor would restart one that died first). If it has not exited within
    ``timeout`` seconds, SIGKILL to its whole group at once. If it has, every other process
    still in its group gets ``children_timeout`` seconds more (polled) before SIGKILL goes to
    the group. After a SIGKILL the group must be empty within ``timeout``; who is left is
    reported as ``survivors``.
    """
    pgid = popen.pid  # a session leader's pid is its process group's id
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
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


class Processes:
    """Everything the benchmark started, to stop (in reverse order) whatever happens."""

    def __init__(self) -> None:
        self.started: list[Process] = []

    def start(self, name: str, args: Sequence[str], cwd: Path) -> Process:
        process = Process(name, args, cwd)
        self.started.append(process)
        return process

    def stop_all(self) -> list[str]:
        """Stop every process; the names of those that needed more than SIGTERM are not errors."""
        stopped = []
        while self.started:
            process = self.started.pop()
            process.stop()
            stopped.append(f"{process.name} (pid {process.pid})")
        return stopped


# -- clusters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterInfo:
    """A cluster the benchmark talks to: its front end, and (if it started it) its replicas and secret."""

    label: str
    url: str
    cache_size: int | None
    secret: str | None = None
    # (name, URL) of every process of the cluster, when the benchmark started it.
    process_urls: tuple[tuple[str, str], ...] = ()
    process: Process | None = None
    directory: Path | None = None


def loopback_ports(names: Sequence[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Free loopback ports for each of ``names``: one for HTTP, one for its internal channel."""
    ports = free_ports(2 * len(names))
    return dict(zip(names, ports[: len(names)], strict=True)), dict(
        zip(names, ports[len(names) :], strict=True)
    )


def write_config(directory: Path, cache_size: int, secret: str) -> tuple[Path, dict[str, int]]:
    """A config for 1 + 3 + 3 processes on free loopback ports, data under ``directory``."""
    ports, channel_ports = loopback_ports(NAMES)
    raw = config.document(
        {"data_dir": "data", "cache_size": cache_size, "secret": secret},
        {name: config.endpoints(ports[name], channel_ports[name]) for name in NAMES},
    )
    return config.write(directory / "bazar.toml", raw), ports


def cluster_status(url: str) -> dict[str, Any] | None:
    """``GET /bazar/cluster`` when every replica is healthy, else None."""
    try:
        code, body = get_json(url + "/bazar/cluster", timeout=2.0)
    except (OSError, ValueError):
        return None
    if code != 200 or not isinstance(body, dict):
        return None
    replicas = body.get("replicas", [])
    if replicas and all(r.get("healthy") for r in replicas):
        return body
    return None


def start_cluster(
    processes: Processes, directory: Path, label: str, cache_size: int, timeout: float = START_TIMEOUT
) -> ClusterInfo:
    """``twistd -n bazar-cluster`` on a fresh config in ``directory``, healthy; StartError if not.

    Ports are picked free just before the start; if one was taken meanwhile, the cluster
    exits at once, and it is tried once more on new ports.
    """
    directory.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    for attempt in (1, 2):
        config, ports = write_config(directory, cache_size, secret)
        process = processes.start(
            f"bazar-cluster-{label}", [*TWISTD, "bazar-cluster", "--config", str(config)], directory
        )
        url = f"http://127.0.0.1:{ports['frontend']}"

        def ready(process: Process = process, url: str = url) -> bool:
            return not process.running() or cluster_status(url) is not None

        poll(ready, timeout, interval=0.1)
        if process.running() and cluster_status(url) is not None:
            return ClusterInfo(
                label=label,
                url=url,
                cache_size=cache_size,
                secret=secret,
                process_urls=tuple((n, f"http://127.0.0.1:{ports[n]}") for n in NAMES),
                process=process,
                directory=directory,
            )
        exited = not process.running()
        process.stop()
        processes.started.remove(process)
        if not (exited and "in use" in process.log_tail() and attempt == 1):
            state = (
                f"exited with status {process.popen.returncode}"
                if exited
                else f"not healthy after {timeout:.0f} s"
            )
            raise StartError(
                f"the {label} cluster (cache_size = {cache_size}) {state}; "
                f"its log ({process.log_path}) ends:\n"
                f"{process.log_tail()}"
            )
    raise AssertionError("unreachable")  # pragma: no cover


def start_ceiling(
    processes: Processes, directory: Path, size: int, timeout: float = 15.0
) -> tuple[Process, int]:
    """``python -m bazar.bench.ceiling`` on a free port, serving ``size`` bytes; (process, port)."""
    (port,) = free_ports(1)
    process = processes.start(
        "ceiling",
        [sys.executable, "-m", "bazar.bench.ceiling", "--port", str(port), "--size", str(size)],
        directory,
    )
    try:
        _wait_until_listening(process, port, timeout)
    except StartError:
        process.stop()
        raise
    return process, port


def start_floor(
    processes: Processes, directory: Path, durable: bool, timeout: float = 15.0
) -> tuple[list[Process], int]:
    """A purchase's message chain without Bazar's work (``python -m bazar.bench.floor``), each
    process on free loopback ports, started from the chain's ends; (processes, front end's port).
    ``durable``: each replica commits one SQLite row per write, in its own directory."""
    names = ("catalog-2", "catalog-3", "order-2", "order-3", "front", "front-channel", "catalog-1", "order-1")
    port = dict(zip(names, free_ports(len(names)), strict=True))
    chain = [
        ("catalog-2", ["follower"]),
        ("catalog-3", ["follower"]),
        ("order-2", ["follower"]),
        ("order-3", ["follower"]),
        ("front", ["front", "--peer", str(port["order-1"]), "--channel-port", str(port["front-channel"])]),
        ("catalog-1", ["catalog", *_peers(port, "catalog-2", "catalog-3", "front-channel")]),
        ("order-1", ["order", *_peers(port, "catalog-1", "order-2", "order-3")]),
    ]
    started: list[Process] = []
    kind = "durable" if durable else "messages"
    try:
        for name, args in chain:
            args = [*args, "--port", str(port[name])]
            if durable and name != "front":
                (directory / f"floor-{name}").mkdir(parents=True, exist_ok=True)
                args += ["--durable", str(directory / f"floor-{name}")]
            command = [sys.executable, "-m", "bazar.bench.floor", *args]
            started.append(processes.start(f"floor-{kind}-{name}", command, directory))
            # The front end listens for invalidations last.
            _wait_until_listening(started[-1], port["front-channel" if name == "front" else name], timeout)
    except StartError:
        for process in reversed(started):
            process.stop()
            processes.started.remove(process)
        raise
    return started, port["front"]


def _wait_until_listening(process: Process, port: int, timeout: float) -> None:
    poll(lambda: not process.running() or accepts_connections(port), timeout)
    if not process.running() or not accepts_connections(port):
        raise StartError(f"{process.name} did not start; its log ends:\n{process.log_tail()}")


def _peers(port: dict[str, int], *names: str) -> list[str]:
    return [arg for name in names for arg in ("--peer", str(port[name]))]


# -- what a cluster's processes count (only when we know the secret) -------------------------------


def _metrics(cluster: ClusterInfo, names: Sequence[str]) -> list[tuple[str, str]] | None:
    """(name, /metrics text) of each of ``names``; None if the secret or an answer is missing."""
    if cluster.secret is None:
        return None
    urls = [(name, url) for name, url in cluster.process_urls if name in names]
    if len(urls) != len(names):
        return None
    try:
        return [
            (name, get_text(url + "/metrics", headers={"X-Bazar-Secret": cluster.secret}))
            for name, url in urls
        ]
    except (OSError, ValueError):
        return None


def catalog_reads(cluster: ClusterInfo) -> int | None:
    """GETs the catalog replicas have answered, from their /metrics; None if unknown.

    Lets the benchmark tell how many backend reads N cache misses caused: concurrent misses
    of one key share one backend request, and misses of several books in one turn of the
    front end's reactor one lookup (``bazar.batching``), so under load the two numbers differ.
    """
    texts = _metrics(cluster, CATALOGS)
    if texts is None:
        return None
    return count_reads(text for _, text in texts)


def count_reads(expositions: Iterable[str]) -> int | None:
    """The data reads (books, lookups, searches) counted in these /metrics texts; None if unreadable."""
    total = 0.0
    try:
        for text in expositions:
            for line in text.splitlines():
                if line.startswith("bazar_requests_total{") and 'method="GET"' in line:
                    if any(f'route="/catalog/{route}' in line for route in ("books", "search", "lookup")):
                        total += float(line.rsplit(" ", 1)[1])
    except (ValueError, IndexError):
        return None
    return int(total)


def cpu_seconds(cluster: ClusterInfo) -> dict[str, float] | None:
    """Each process's CPU time so far (``process_cpu_seconds_total`` from its /metrics), by name;
    None if unknown. Taken before and after a run, it says where the run's CPU time went."""
    texts = _metrics(cluster, NAMES)
    if texts is None:
        return None
    seconds = {}
    try:
        for name, text in texts:
            for line in text.splitlines():
                if line.startswith("process_cpu_seconds_total "):
                    seconds[name] = float(line.split()[1])
    except (ValueError, IndexError):
        return None
    return seconds if len(seconds) == len(NAMES) else None

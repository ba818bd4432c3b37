"""The clusters and other processes the benchmark starts itself (with ``bazar.launch``), and
what their /metrics count.

``Processes.stop_all`` runs in a ``finally`` (``bazar.bench.cli``), so every process is
stopped by pid (then by process group) also on errors and interrupts.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from bazar.launch import (
    CATALOGS,
    NAMES,
    REPLICAS,
    START_TIMEOUT,
    Process,
    Processes,
    StartError,
    accepts_connections,
    free_ports,
    get_text,
    poll,
)
from bazar.launch import start_cluster as launch_cluster
from bazar.protocol import SECRET_HEADER
from bazar.reactors import IBenchReactor


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


def react_in_tempdir(
    prefix: str,
    run: Callable[[IBenchReactor, Processes, Path], Awaitable[int]],
    before_stop: Callable[[Processes], None] = lambda processes: None,
) -> int:
    """``run(reactor, processes, directory)`` under ``task.react``, in a temporary directory
    made for it; every process it started is stopped afterwards (``before_stop`` first),
    however it ended. Its exit code, or 130 if it was interrupted."""
    codes: list[int] = []
    processes = Processes()

    async def main_task(reactor: IBenchReactor) -> None:
        codes.append(await run(reactor, processes, Path(workdir)))

    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        try:
            task.react(lambda reactor: ensureDeferred(main_task(reactor)))
        except SystemExit as e:
            if e.code not in (0, None):
                raise
        finally:
            before_stop(processes)
            processes.stop_all()
    return codes[0] if codes else 130


def start_cluster(
    processes: Processes,
    directory: Path,
    label: str,
    cache_size: int,
    timeout: float = START_TIMEOUT,
    frontends: int | None = None,
) -> ClusterInfo:
    """``twistd -n bazar-cluster`` on a fresh config in ``directory``, healthy; StartError if
    not. ``frontends``: that many front ends, sharing one public port (its URL is the cluster's)."""
    secret = secrets.token_urlsafe(24)
    shared = {} if frontends is None else {"frontends": frontends, "shared_port": True}
    cluster = launch_cluster(
        directory, processes, label=label, secret=secret, cache_size=cache_size, timeout=timeout, **shared
    )
    return ClusterInfo(
        label=label,
        url=cluster.layout.public_url,
        cache_size=cache_size,
        secret=secret,
        process_urls=tuple((name, cluster.url(name)) for name in (*cluster.layout.frontends, *REPLICAS)),
        process=cluster.process,
        directory=directory,
    )


def start_ceiling(
    processes: Processes, directory: Path, size: int, timeout: float = 15.0
) -> tuple[Process, int]:
    """``python -m bazar.bench.ceiling`` on a free port, serving ``size`` bytes; (process, port)."""
    (started, port) = start_ceilings(processes, directory, size, 1, timeout)
    return started[0], port


def start_ceilings(
    processes: Processes, directory: Path, size: int, count: int, timeout: float = 15.0
) -> tuple[list[Process], int]:
    """``count`` ceilings (``python -m bazar.bench.ceiling``) serving ``size`` bytes, all on one
    free port (shared, ``--reuse-port``, when more than one); (processes, port). StartError,
    with every one of them stopped, if one does not start."""
    (port,) = free_ports(1)
    command = [sys.executable, "-m", "bazar.bench.ceiling", "--port", str(port), "--size", str(size)]
    if count > 1:
        command.append("--reuse-port")
    started: list[Process] = []
    try:
        for number in range(1, count + 1):
            name = "ceiling" if count == 1 else f"ceiling-{number}"
            started.append(processes.start(name, command, directory))
            # Its own log line: on a shared port, the others' sockets accept connections already.
            poll(lambda: not started[-1].running() or "ceiling: " in started[-1].log_tail(5), timeout)
            _wait_until_listening(started[-1], port, timeout)
    except StartError:
        for process in started:
            process.stop()
            processes.started.remove(process)
        raise
    return started, port


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
            (name, get_text(url + "/metrics", headers={SECRET_HEADER: cluster.secret})) for name, url in urls
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


def cpu_seconds(cluster: ClusterInfo, names: Sequence[str] = NAMES) -> dict[str, float] | None:
    """Each process's CPU time so far (``process_cpu_seconds_total`` from its /metrics), by name
    (of ``names``); None if unknown. Taken before and after a run, it says where the run's CPU
    time went."""
    texts = _metrics(cluster, names)
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
    return seconds if len(seconds) == len(names) else None


def frontends_cpu(cluster: ClusterInfo) -> float | None:
    """The CPU seconds all of ``cluster``'s front ends have used so far; None if unknown."""
    names = [name for name, _ in cluster.process_urls if name.startswith("frontend")]
    seconds = cpu_seconds(cluster, names) if names else None
    return None if seconds is None else sum(seconds.values())


def processes_cpu(processes: Iterable[Process]) -> float | None:
    """The CPU seconds (user + system, /proc) these running processes have used; None if unknown."""
    total = 0.0
    try:
        for process in processes:
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return total

"""``python -m bazar.bench.profile``: where a purchase's CPU time goes, process by process.

Starts a cluster of its own in which every process loads ``bazar/bench/profiling/
sitecustomize.py`` (a cProfile of the main thread's CPU time, started and stopped by signal),
warms it up, then runs ``--clients`` purchases at a time in a closed loop for ``--seconds``,
and as long again with every process profiled. It prints, for each process of a purchase
(the front end, the order and catalog sequencers, their followers): the CPU milliseconds per
purchase answered 200 in the first window (``process_cpu_seconds_total`` from its /metrics,
every thread: SQLite's too; the profiler, which slows a process down several times, is off
then), and from the second where its main thread's busy time went, by area (JSON, logging,
metrics, AMP, HTTP, Deferreds, Bazar's own code, the reactor) and by function (own time,
``tottime``). ``--json FILE`` keeps every figure, ``--keep DIR`` the profiles.

``--code DIR``: the cluster's processes import Bazar from ``DIR`` (another checkout, e.g. the
code before a change) while this tool runs from its own: the same measurement of both.
``--cpu N``: every process of the cluster on CPU ``N`` alone and the clients on the others, so
that purchases per second say what one core buys (Linux).
The cluster runs in a temporary directory and is stopped at the end, however the run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bazar.bench.cluster import ClusterInfo, cpu_seconds, react_in_tempdir, start_cluster
from bazar.bench.load import Call, Target, closed_loop
from bazar.launch import NAMES, Processes, listening_pid, poll
from bazar.reactors import IBenchReactor

HOOK = Path(__file__).with_name("profiling")  # holds the sitecustomize.py every process loads
BOOKS = range(7)
STOCK = 1_000_000
WARM_UP = 200
TOP = 5  # functions per process
# The processes of a purchase, in the order it reaches them.
HOPS = ("frontend", "order-1", "catalog-1", "catalog-2", "catalog-3", "order-2", "order-3")


@dataclass(frozen=True)
class Hop:
    name: str
    cpu_ms: float | None  # per purchase, every thread (/metrics), in the window not profiled
    areas: dict[str, float]  # share of the profiled main thread's time, by what the code is
    top: list[tuple[str, float]]  # (function, share of its own time)


# The reactor's wait for events, by the name cProfile gives it.
IDLE = re.compile(r"<method '(poll|select)' of 'select\.(epoll|poll)' objects>|<built-in method select\.")

# Where a process hands the core to another: its send to a peer on loopback, or the lock
# release that wakes a thread (adbapi's), wakes the receiver, which on a machine with fewer
# cores than busy processes often runs at once. On the profile's clock (wall time) that
# wait looks like the call's own time: counted apart, so that it does not swell its callers.
HANDOFF = re.compile(r"<method '(send|sendmsg|release)' of '(_socket\.socket|_thread\.lock)' objects>")
HANDOFFS = "send, wake-ups"

# What code is, by where it lives: the first match names a function's area.
AREAS = (
    ("json", ("/json/",)),
    ("logging", ("twisted/logger/",)),
    ("metrics", ("prometheus_client/", "bazar/metrics.py")),
    ("AMP", ("twisted/protocols/amp.py",)),
    ("HTTP", ("twisted/web/", "klein/", "werkzeug/", "treq/", "bazar/bench/load.py")),
    ("Deferreds", ("twisted/internet/defer.py",)),
    ("Bazar", ("/bazar/",)),
    ("reactor, sockets", ("twisted/",)),
)


def area_of(filename: str) -> str:
    for area, marks in AREAS:
        if any(mark in filename for mark in marks):
            return area
    return "other"


def areas(entries: Mapping[Any, Any]) -> dict[str, float]:
    """Seconds of own time by area. A builtin (``isinstance``, ``len``) counts in its callers'
    areas, in proportion to the time it spent called by each; a send or a lock release in an
    area of its own (``HANDOFF``)."""
    seconds: dict[str, float] = {}
    for (filename, _, name), (_, _, own, _, callers) in entries.items():
        if HANDOFF.match(name):
            where = {HANDOFFS: own}
        elif filename != "~" or not callers:
            where = {area_of(filename): own}
        else:
            called = sum(row[2] for row in callers.values()) or 1.0
            where = {}
            for caller, row in callers.items():
                area = area_of(caller[0])
                where[area] = where.get(area, 0.0) + own * row[2] / called
        for area, time_ in where.items():
            seconds[area] = seconds.get(area, 0.0) + time_
    return seconds


def function_name(key: tuple[str, int, str]) -> str:
    """``file:line(function)`` with the path cut to what says where it is."""
    filename, line, name = key
    if filename == "~":
        return name  # a builtin: "<method 'poll' of 'select.epoll' objects>"
    parts = Path(filename).parts
    for anchor in ("site-packages", "lib", "bazar"):
        if anchor in parts:
            index = len(parts) - 1 - parts[::-1].index(anchor)
            parts = parts[index + (anchor != "bazar") :]
            break
    return f"{'/'.join(parts)}:{line}({name})"


def busy(entries: Mapping[Any, Any]) -> dict[Any, Any]:
    """The profile without the reactor's wait for events (``epoll``, ``poll``, ``select``):
    the profile's clock is wall time, and that wait is the process being idle."""
    return {key: row for key, row in entries.items() if not IDLE.match(key[2])}


def hop_figures(name: str, stats: pstats.Stats | None, cpu_ms: float | None) -> Hop:
    """One process's figures: its CPU time per purchase, and its profile's shares."""
    if stats is None:
        return Hop(name, cpu_ms, {}, [])
    entries = busy(stats.stats)  # type: ignore[attr-defined]
    total = sum(row[2] for row in entries.values()) or 1.0
    own = sorted(((row[2], key) for key, row in entries.items()), reverse=True)
    top = [(function_name(key), seconds / total) for seconds, key in own[:TOP]]
    shares = {area: seconds / total for area, seconds in sorted(areas(entries).items(), key=lambda a: -a[1])}
    return Hop(name, cpu_ms, shares, top)


def table(hops: Sequence[Hop]) -> str:
    """The hops as a Markdown table: CPU ms per purchase, where the main thread's time went
    by area, then the functions that took most of it (their own time)."""
    lines = [
        "| process | CPU ms per purchase | main thread, by area | top functions (own time) |",
        "|---|--:|---|---|",
    ]
    for hop in hops:
        cpu = "?" if hop.cpu_ms is None else f"{hop.cpu_ms:.2f}"
        where = ", ".join(f"{area} {share:.0%}" for area, share in hop.areas.items() if share >= 0.02)
        top = "; ".join(f"{name} {share:.1%}" for name, share in hop.top)
        lines.append(f"| {hop.name} | {cpu} | {where} | {top} |")
    return "\n".join(lines)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)  # progress, on stderr


def signal_all(pids: Mapping[str, int], signum: int) -> None:
    for pid in pids.values():
        os.kill(pid, signum)


async def run(reactor: IBenchReactor, args: argparse.Namespace, processes: Processes, directory: Path) -> int:
    profiles = directory / "profiles"
    profiles.mkdir()
    # Read by the cluster's processes as they start (and by nothing in this one, already running).
    path = [str(HOOK), *([str(args.code)] if args.code else []), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    os.environ["BAZAR_PROFILE"] = str(profiles)
    say(f"starting a cluster in {directory}")
    cluster = start_cluster(processes, directory, "profile", cache_size=5)
    if args.cpu is not None:
        parent = [cluster.process.pid] if cluster.process is not None else []  # ``bazar-cluster``
        pin([*pids_of(cluster).values(), *parent], args.cpu)
        others = os.sched_getaffinity(0) - {args.cpu}
        if others:
            os.sched_setaffinity(0, others)  # the clients
    target = Target.from_url(cluster.url)
    stock = [Call("stock", "PUT", f"/bazar/update_quantity/{b}", b'{"quantity":%d}' % STOCK) for b in BOOKS]
    await closed_loop(reactor, target, stock.__getitem__, count=len(stock), concurrency=1, max_seconds=30)

    def buy(i: int) -> Call:
        return Call("buy", "POST", f"/bazar/purchase/{BOOKS[i % len(BOOKS)]}", b'{"quantity":1}')

    await closed_loop(reactor, target, buy, count=WARM_UP, concurrency=args.clients, max_seconds=30)
    say(f"{args.clients} clients buying for {args.seconds:g} s, then as long again, profiled")
    before = cpu_seconds(cluster)
    result = await closed_loop(
        reactor, target, buy, count=10**9, concurrency=args.clients, max_seconds=args.seconds
    )
    after = cpu_seconds(cluster)
    pids = pids_of(cluster)
    signal_all(pids, signal.SIGUSR1)
    profiled = await closed_loop(
        reactor, target, buy, count=10**9, concurrency=args.clients, max_seconds=args.seconds
    )
    signal_all(pids, signal.SIGUSR2)
    files = {name: profiles / f"{pid}.pstats" for name, pid in pids.items()}
    poll(lambda: all(f.exists() for f in files.values()), 10.0)
    purchases = sum(1 for sample in result.samples if sample.status == 200)
    hops = []
    for name in HOPS:
        cpu_ms = None
        if before is not None and after is not None and purchases:
            cpu_ms = (after[name] - before[name]) * 1000 / purchases
        stats = pstats.Stats(str(files[name])) if files[name].exists() else None
        hops.append(hop_figures(name, stats, cpu_ms))
        if args.keep and stats is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files[name], args.keep / f"{name}.pstats")
    failed = len(result.samples) - purchases + sum(1 for sample in profiled.samples if sample.status != 200)
    load = os.getloadavg()[0]
    total = sum(h.cpu_ms for h in hops if h.cpu_ms is not None)
    print(
        f"{purchases} purchases in {result.elapsed:.1f} s ({purchases / result.elapsed:.0f}/s, "
        f"{total:.2f} ms of CPU each), {args.clients} clients; {len(profiled.samples)} more profiled; "
        f"{failed} not 200; load average {load:.2f} at the end"
        + (f"; the cluster on CPU {args.cpu} alone" if args.cpu is not None else "")
    )
    print(table(hops))
    if args.json:
        figures = {"purchases": purchases, "seconds": result.elapsed, "failed": failed, "load": load}
        args.json.write_text(json.dumps({**figures, "hops": [vars(h) for h in hops]}, indent=2))
    return 0 if purchases and not failed else 1


def pin(pids: Iterable[int], cpu: int) -> None:
    """Every thread of these processes on CPU ``cpu`` alone (``--cpu``: the cluster's CPU cost
    as throughput on one core). Threads started later (adbapi's) inherit it from the thread
    that starts them."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), {cpu})


def pids_of(cluster: ClusterInfo) -> dict[str, int]:
    """Each process's pid, by name (the one listening on its port)."""
    pids = {}
    for name, url in cluster.process_urls:
        if name in NAMES:
            pid = listening_pid(urlsplit(url).port or 0)
            assert pid is not None, f"no process listens as {name}"
            pids[name] = pid
    return pids


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bazar.bench.profile", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--clients", type=int, default=10, help="purchases at a time (10)")
    parser.add_argument("--seconds", type=float, default=10.0, help="of purchases profiled (10)")
    parser.add_argument("--code", type=Path, help="a checkout of Bazar for the cluster's processes")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--keep", type=Path, help="copy each process's profile here (<name>.pstats)")
    parser.add_argument(
        "--cpu", type=int, help="run the whole cluster on this CPU alone, the clients on the others (Linux)"
    )
    args = parser.parse_args(argv)
    if args.cpu is not None and args.cpu not in os.sched_getaffinity(0):
        parser.error(f"--cpu {args.cpu}: this process may run on CPUs {sorted(os.sched_getaffinity(0))} only")
    started = time.monotonic()
    try:
        return react_in_tempdir(
            "bazar-profile-", lambda reactor, processes, directory: run(reactor, args, processes, directory)
        )
    finally:
        say(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(main())

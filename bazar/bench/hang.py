"""``python -m bazar.bench.hang``: how long writes stop when a sequencer hangs, over many trials.

Each trial SIGSTOPs the replica that sequences one role's writes (catalog and order in turn)
while a writer sends that role a write every ``--interval`` seconds through the front end,
whatever happened to the ones before (an open loop: a write caught by the hang must not hold
up the next). The *outage* is the time from the SIGSTOP to the acknowledgement of the first
write sent after it. A random time from 0 to ``--resume-within`` seconds after that, the old
sequencer is SIGCONTed: it steps down and is caught up while writes go on. The trial checks
that every write sent from ``REPLICATION_TIMEOUT`` (2 s) after the resume on is acknowledged
(a write never waits on a follower that is not making progress), and waits until every
replica of the role holds the same data again.

Before the first trial the role's log is made longer than one replication batch, since a
catch-up of more than one batch is what once stopped writes for good. After the last trial,
each role's epoch tells how many elections there were: one per trial, and any other is one
that no fault caused. The cluster runs in a temporary directory and every process is stopped
at the end, a stopped one SIGCONTed first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import treq
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from bazar.bench.cluster import ClusterInfo, react_in_tempdir, start_cluster
from bazar.follower_link import REPLICATION_TIMEOUT
from bazar.launch import Processes, listening_pid
from bazar.protocol import SECRET_HEADER, STATUS_PATH
from bazar.reactors import IBenchReactor

ROLES = ("catalog", "order")
LOG_ENTRIES = 700  # writes per role before the first trial: more than one 500-entry batch
STOCK = 1_000_000


@dataclass
class Write:
    sent: float
    answered: float | None = None
    status: int | None = None  # None: no answer (timeout or connection error)


@dataclass
class Trial:
    role: str
    old: str
    outage: float | None = None
    resumed_after: float = 0.0
    late_failures: int = 0  # writes sent from REPLICATION_TIMEOUT after the resume that failed
    converged_after: float | None = None
    writes: list[Write] = field(default_factory=list)


class Bench:
    def __init__(self, reactor: IBenchReactor, cluster: ClusterInfo, interval: float, timeout: float) -> None:
        self.reactor = reactor
        self.cluster = cluster
        self.interval = interval
        self.timeout = timeout
        self.pool = HTTPConnectionPool(reactor)
        self.pool.maxPersistentPerHost = 64
        self.headers = Headers({SECRET_HEADER: [cluster.secret or ""]})
        self.urls = dict(cluster.process_urls)

    async def call(self, method: str, url: str, body: Any = None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        response = await treq.request(
            method, url, data=data, headers=self.headers, pool=self.pool, timeout=timeout or self.timeout
        )
        text = await response.content()
        return response.code, (json.loads(text) if text else None)

    async def status(self, name: str) -> dict[str, Any] | None:
        try:
            code, body = await self.call("GET", self.urls[name] + STATUS_PATH, timeout=1.0)
        except Exception:
            return None
        return body if code == 200 else None

    async def sequencer(self, role: str) -> str:
        for name in self.urls:
            if name.startswith(role):
                status = await self.status(name)
                if status and status.get("sequencer") == name:
                    return name
        raise RuntimeError(f"no {role} sequencer answers")

    def write_path(self, role: str, n: int) -> tuple[str, str, Any]:
        if role == "catalog":
            return "PUT", f"/bazar/update_price/{n % 7}", {"price": 10 + n % 90}
        return "POST", f"/bazar/purchase/{n % 7}", {"quantity": 1}

    async def write(self, role: str, n: int) -> Write:
        write = Write(time.monotonic())
        method, path, body = self.write_path(role, n)
        try:
            write.status, _ = await self.call(method, self.cluster.url + path, body)
        except Exception:
            write.status = None
        write.answered = time.monotonic()
        return write

    async def fill_log(self, role: str, entries: int) -> None:
        for start in range(0, entries, 50):
            await DeferredList([ensureDeferred(self.write(role, n)) for n in range(start, start + 50)])

    async def converged(self, role: str, deadline: float) -> float | None:
        """Seconds until every replica of ``role`` has the same last_seq and digest (None: never)."""
        started = time.monotonic()
        names = [n for n in self.urls if n.startswith(role)]
        while time.monotonic() < deadline:
            statuses = [await self.status(n) for n in names]
            if all(statuses) and len({(s["last_seq"], s["digest"]) for s in statuses if s}) == 1:
                return time.monotonic() - started
            await task.deferLater(self.reactor, 0.1, lambda: None)
        return None

    async def trial(self, role: str, resume_within: float, rng: random.Random) -> Trial:
        old = await self.sequencer(role)
        pid = listening_pid(urlsplit(self.urls[old]).port or 0)
        if pid is None:
            raise RuntimeError(f"no process listens for {old}")
        result = Trial(role, old)
        pending: list[Deferred[Write]] = []
        done: list[Write] = []
        stop_writing = [False]

        def finished(write: Write) -> Write:
            done.append(write)
            return write

        async def writer() -> None:
            n = 0
            while not stop_writing[0]:
                pending.append(ensureDeferred(self.write(role, n)).addCallback(finished))
                n += 1
                await task.deferLater(self.reactor, self.interval, lambda: None)

        writing = ensureDeferred(writer())
        await task.deferLater(self.reactor, 0.5, lambda: None)
        stopped_at = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            while time.monotonic() - stopped_at < 30:
                acked = [w.answered for w in done if w.status == 200 and w.sent > stopped_at and w.answered]
                if acked:
                    result.outage = min(acked) - stopped_at
                    break
                await task.deferLater(self.reactor, 0.01, lambda: None)
            result.resumed_after = rng.uniform(0, resume_within)
            await task.deferLater(self.reactor, result.resumed_after, lambda: None)
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        await task.deferLater(self.reactor, REPLICATION_TIMEOUT + 3.0, lambda: None)
        stop_writing[0] = True
        await writing
        result.writes = [w for ok, w in await DeferredList(pending) if ok]
        result.late_failures = sum(
            1 for w in result.writes if w.sent >= resumed_at + REPLICATION_TIMEOUT and w.status != 200
        )
        result.converged_after = await self.converged(role, time.monotonic() + 30)
        return result


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)  # progress, on stderr


async def run(reactor: IBenchReactor, args: argparse.Namespace, processes: Processes, directory: Path) -> int:
    """The trials, on a cluster started in ``directory`` (``processes`` are stopped by the caller)."""
    say(f"starting a cluster in {directory}")
    cluster = start_cluster(processes, directory, "hang", cache_size=5)
    bench = Bench(reactor, cluster, args.interval, args.timeout)
    try:
        for book in range(7):
            await bench.call("PUT", f"{cluster.url}/bazar/update_quantity/{book}", {"quantity": STOCK})
        for role in ROLES:
            say(f"{LOG_ENTRIES} {role} writes, so that its log is longer than one replication batch")
            await bench.fill_log(role, LOG_ENTRIES)
        rng = random.Random(args.seed)
        trials: list[Trial] = []
        for number in range(args.trials):
            role = ROLES[number % len(ROLES)]
            trial = await bench.trial(role, args.resume_within, rng)
            trials.append(trial)
            outage = "none acknowledged" if trial.outage is None else f"{trial.outage:.2f} s"
            converged = "never" if trial.converged_after is None else f"{trial.converged_after:.1f} s"
            say(
                f"trial {number + 1}/{args.trials}: {trial.old} stopped; writes out for {outage}; "
                f"resumed {trial.resumed_after:.2f} s after; {trial.late_failures} writes failed from "
                f"{REPLICATION_TIMEOUT:g} s after the resume; replicas equal {converged} later"
            )
        epochs = {
            role: (await bench.status(await bench.sequencer(role)) or {}).get("epoch", 0) for role in ROLES
        }
    finally:
        await bench.pool.closeCachedConnections()
    outages = [t.outage for t in trials if t.outage is not None]
    caused = {role: sum(1 for t in trials if t.role == role) for role in ROLES}
    spurious = sum(int(epochs[role]) - 1 - caused[role] for role in ROLES)
    print(f"{len(trials)} trials, {len(outages)} with writes acknowledged again")
    if outages:
        print(
            f"write outage after a hung sequencer: p50 {statistics.median(outages):.2f} s, "
            f"p99 {percentile(outages, 0.99):.2f} s, max {max(outages):.2f} s"
        )
    print(
        f"writes failed from {REPLICATION_TIMEOUT:g} s after a resume: {sum(t.late_failures for t in trials)}"
    )
    unconverged = sum(1 for t in trials if t.converged_after is None)
    print(f"trials whose replicas did not converge within 30 s: {unconverged}")
    print(f"elections: {sum(int(e) - 1 for e in epochs.values())}, of which no fault caused {spurious}")
    ok = (
        len(outages) == len(trials)
        and not any(t.late_failures or t.converged_after is None for t in trials)
        and spurious == 0
    )
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bazar.bench.hang", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="sequencer hangs, alternating roles (20)")
    parser.add_argument("--resume-within", type=float, default=3.0, help="resume 0 to this many s after (3)")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between writes (0.02)")
    parser.add_argument("--timeout", type=float, default=10.0, help="a write's client timeout (10)")
    parser.add_argument("--seed", type=int, default=None, help="for the resume offsets (default: random)")
    args = parser.parse_args(argv)

    def resume(processes: Processes) -> None:
        # Interrupted (Ctrl-C stops the reactor mid-trial), a sequencer may still be stopped.
        for process in processes.started:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGCONT)

    return react_in_tempdir(
        "bazar-hang-", lambda reactor, processes, directory: run(reactor, args, processes, directory), resume
    )


if __name__ == "__main__":
    sys.exit(main())

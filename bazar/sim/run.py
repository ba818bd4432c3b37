"""One simulated run (a *schedule*): a cluster, clients, faults, then every check.

Everything in a run follows from its seed: the faults (``bazar.sim.faults``), the network's
delays, the clients' operations, each replica's election timeouts, the idempotency keys the
front end and the order replicas make up, and the run's *knobs* (the replication batch
size, the disk's latency), each from its own generator so that removing a fault (shrinking)
leaves the rest of the run as it was as far as it can. The timeline:

    0 s          every process starts; clients start at 1 s
    2 - 12 s     the faults
    HEAL (14 s)  every fault ends: within LIVENESS seconds a catalog write and a purchase
                 must be acknowledged (every role accepts writes again)
    HEAL + 4 s   the clients stop; QUIET seconds later (END, 25 s) the checks of the disks
                 run, and the messages of the last SPIN_WINDOW of those seconds are counted
                 (no process spins)
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import provider

from bazar import follower_link, validation
from bazar.protocol import IDEMPOTENCY_HEADER
from bazar.sim import checks
from bazar.sim.callers import public_call
from bazar.sim.cluster import FRONTEND, SimCluster
from bazar.sim.faults import Fault, Injector, draw_schedule
from bazar.sim.serving import PublicAnswer
from bazar.sim.workload import Op, Workload

FAULTS_FROM, FAULTS_FOR = 2.0, 10.0
HEAL = 14.0
CLIENTS_FOR = 4.0  # seconds after the heal
LIVENESS = 10.0  # seconds after the heal by which each role must have accepted a write
QUIET = 7.0  # seconds after the clients stop (more than an orphan scan's interval)
# The quiet seconds whose messages are counted: QUIET's last, from 4 s after the clients
# stopped (more than their 3 s deadline: no client call is left). Every process is back to
# its steady rate within a second of the clients' stop (92-94 messages a second from then
# on, in seeds 1000-1029), so these seconds count what the 3 s after QUIET counted before.
SPIN_WINDOW = 3.0
END = HEAL + CLIENTS_FOR + QUIET  # the checks of the disks
SPIN_FROM = END - SPIN_WINDOW
assert HEAL + CLIENTS_FOR < SPIN_FROM <= HEAL + LIVENESS <= END
MAX_QUIET_RATE = 150.0  # messages per simulated second once quiet (about 95 expected: heartbeats, probes)


@dataclass(frozen=True)
class Knobs:
    """What a schedule varies beyond its faults (FoundationDB's "buggify")."""

    max_batch: int
    disk_latency: float
    clients: int

    @classmethod
    def draw(cls, rng: random.Random) -> Knobs:
        return cls(
            max_batch=rng.choice([2, 3, 5, follower_link.MAX_BATCH]),
            disk_latency=rng.choice([0.0, 0.0, 0.002, 0.02]),
            clients=rng.randint(2, 4),
        )


@dataclass
class Result:
    seed: int
    faults: list[Fault]
    knobs: Knobs
    problems: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    messages: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.problems)


def schedule_of(seed: int, wipes: bool = False) -> list[Fault]:
    """The faults of ``seed``; with ``wipes``, perhaps a wipe too (``bazar.sim.faults``): a disk
    lost on top of another fault is beyond what three replicas can survive, so wipes are for
    searches that look for them (``--wipes``), not the default."""
    from bazar.sim.cluster import sim_config

    names = [FRONTEND, *(r.name for r in (*sim_config().catalog, *sim_config().order))]
    faults, extra = random.Random(f"{seed}:faults"), random.Random(f"{seed}:extra")
    return draw_schedule(faults, names, FAULTS_FROM, FAULTS_FOR, extra if wipes else None)


@contextmanager
def _knobs(knobs: Knobs, seed: int) -> Iterator[None]:
    """The run's batch size, and idempotency keys from a counter (not uuid4) while it runs."""
    counter = itertools.count(1)
    saved = follower_link.MAX_BATCH, validation.new_idempotency_key
    follower_link.MAX_BATCH = knobs.max_batch
    validation.new_idempotency_key = lambda: f"bazar-sim-{seed}-{next(counter)}"
    try:
        yield
    finally:
        follower_link.MAX_BATCH, validation.new_idempotency_key = saved


@contextmanager
def _logged(cluster: SimCluster, errors: list[str], trace: list[str] | None) -> Iterator[None]:
    """Unexpected errors the processes log (``log.failure``) are problems; with ``trace``,
    their warnings go there too, stamped with simulated time."""

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        failure = event.get("log_failure")
        level = event.get("log_level")
        if failure is None and (trace is None or level not in (LogLevel.info, LogLevel.warn, LogLevel.error)):
            return
        from twisted.logger import formatEvent

        text = formatEvent(event)
        if "Unhandled error in Deferred" in text:
            return  # reported when garbage collected: not this run's moment, perhaps not its error
        line = f"t={cluster.sim.now:7.3f}  log: {text}"
        if isinstance(failure, Failure):
            errors.append(f"{line}: {failure.getErrorMessage()}")
        if trace is not None:
            trace.append(line)

    globalLogPublisher.addObserver(observe)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observe)


def run_schedule(
    seed: int, faults: list[Fault] | None = None, verbose: bool = False, wipes: bool = False
) -> Result:
    """Run the schedule of ``seed`` (or ``faults`` instead of its own) and check everything."""
    faults = schedule_of(seed, wipes) if faults is None else faults
    knobs = Knobs.draw(random.Random(f"{seed}:knobs"))
    result = Result(seed, faults, knobs)
    cluster = SimCluster(random.Random(f"{seed}:network"), disk_latency=knobs.disk_latency)
    logged: list[str] = []
    try:
        with _knobs(knobs, seed), _logged(cluster, logged, result.trace if verbose else None):
            _run(cluster, seed, faults, knobs, result)
        result.problems = [*logged, *result.problems]
        result.problems += [f"an event raised {type(e).__name__}: {e}" for e in cluster.errors]
    finally:
        cluster.close()
    return result


def _run(cluster: SimCluster, seed: int, faults: list[Fault], knobs: Knobs, result: Result) -> None:
    workload = Workload(cluster, random.Random(f"{seed}:clients"), knobs.clients)
    injector = Injector(cluster, result.trace)
    cluster.start_all()
    cluster.run_for(1.0)
    workload.run_until(HEAL + CLIENTS_FOR)
    injector.schedule(faults)
    cluster.run_for(HEAL - cluster.sim.now)
    injector.heal()
    probe = _LivenessProbe(cluster, workload)
    cluster.run_for(SPIN_FROM - cluster.sim.now)
    before = cluster.network.delivered
    cluster.run_for(HEAL + LIVENESS - cluster.sim.now)
    result.problems += probe.problems()
    cluster.run_for(END - cluster.sim.now)
    rate = (cluster.network.delivered - before) / SPIN_WINDOW
    if rate > MAX_QUIET_RATE:
        result.problems.append(
            f"spinning: {rate:.0f} messages per second once quiet (at most {MAX_QUIET_RATE:g})"
        )
    result.messages = cluster.network.delivered
    result.ops = workload.ops
    unfinished = [op for op in workload.ops if op.end is None]
    result.problems += [f"a client never got an answer: {op.describe()}" for op in unfinished[:3]]
    result.problems += checks.disk_problems(cluster, workload.ops)


class _LivenessProbe:
    """From the heal on: a new price for book 0, and a keyed purchase of book 1, tried every
    half second until acknowledged; each must be within LIVENESS seconds."""

    def __init__(self, cluster: SimCluster, workload: Workload) -> None:
        self.cluster = cluster
        self.workload = workload
        self.host = cluster.network.host("liveness")
        self.host.start()
        self.healed = cluster.sim.now
        self.done: dict[str, float] = {}
        self._try("catalog")
        self._try("order")

    def _try(self, role: str) -> None:
        now = self.cluster.sim.now
        if now - self.healed > LIVENESS:
            return
        op = Op("liveness", "price" if role == "catalog" else "buy_keyed", 0 if role == "catalog" else 1, now)
        if role == "catalog":
            self.workload._prices += 1
            op.value = float(1000 + self.workload._prices)
            body, path, headers = {"price": op.value}, "/bazar/update_price/0", {}
            method = "PUT"
        else:
            op.key = "liveness-key"
            body, path, headers = {"quantity": 1}, "/bazar/purchase/1", {IDEMPOTENCY_HEADER: op.key}
            method = "POST"
        self.workload.ops.append(op)
        d = public_call(self.cluster.network, self.host, FRONTEND, method, path, body, headers, 2.0)

        def answered(answer: Any) -> None:
            op.end = self.cluster.sim.now
            ok = isinstance(answer, PublicAnswer) and answer.code < 300
            op.ok = (
                True if ok else (False if isinstance(answer, PublicAnswer) and answer.code < 500 else None)
            )
            op.answers.append(
                str(answer.code) if isinstance(answer, PublicAnswer) else type(answer.value).__name__
            )
            if ok:
                if role == "order":
                    op.value = answer.json()
                self.done[role] = op.end
            else:
                self.host.schedule(self.cluster.sim.now + 0.5, self._try, role)

        d.addBoth(answered)

    def problems(self) -> list[str]:
        return [
            f"liveness: no {role} write was acknowledged within {LIVENESS:g} s of the heal"
            for role in ("catalog", "order")
            if role not in self.done
        ]

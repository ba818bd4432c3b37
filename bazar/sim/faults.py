"""Fault schedules: what goes wrong when, drawn from a seeded generator.

A schedule is a list of ``Fault``: at a simulated time, one of

* ``pause`` a process for a while (it handles nothing, its timers wait: SIGSTOP, a GC pause);
* ``hang`` a role's sequencer for HANG seconds: long enough for another replica to take over
  (about 1 s), short enough that it resumes within 0 to 3 s of the takeover, with writes
  going on: the timing the sequencer-hang bug needed (issue 15), too narrow to leave to
  ``pause``'s draw;
* ``crash`` a process and restart it from its disk after a while (or at the heal);
* ``partition`` the processes into two sides for a while (one process alone, or any split);
* ``cut`` one direction between two processes for a while;
* ``drop`` every connection between two processes (once);
* ``slow`` the link between two processes (up to ``extent`` seconds more per message);
* ``drift`` a process's clock (rate ``extent``) for a while, within what the leases allow
  (``_within_drift``, below);
* ``wipe`` a follower of a role (``~catalog``, ``~order``: the first replica of the role, by
  name, that is up and does not sequence it): crashed and restarted at once on an empty disk
  (a replaced machine, a lost volume). Its sequencer, which had no request on its way to it,
  still counts it in sync, from where it was, while it now lacks the whole log: a follower in
  sync more than a batch behind while writes queue, the gap of the sequencer-hang bug (issue
  15) that the other faults leave to chance, since a new sequencer presumes the followers
  that did not vote for it out of sync.

A target may be ``@catalog`` or ``@order``: whichever replica sequences that role's writes
when the fault starts, so that the faults that matter most are not left to chance.

Wipes are drawn from a generator of their own (``extra``), after the other faults, so that
adding them left every seed's other faults as they were.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from bazar.leases import CLOCK_DRIFT
from bazar.sim.cluster import FRONTEND, SimCluster

KINDS = ("pause", "hang", "crash", "partition", "cut", "drop", "slow", "drift")
WEIGHTS = (20, 12, 18, 18, 7, 10, 8, 7)
HANG = (0.8, 4.0)
WIPE_CHANCE = 0.35  # of a schedule having a wipe


@dataclass(frozen=True)
class Fault:
    at: float
    kind: str
    targets: tuple[str, ...]
    duration: float = 0.0
    extent: float = 0.0

    def describe(self) -> str:
        what = {
            "pause": "pause {t}",
            "hang": "hang {t}",
            "crash": "crash {t}",
            "partition": "partition {t} from the rest",
            "cut": "cut {t}",
            "drop": "drop the connections of {t}",
            "slow": "slow the link {t} (up to +{e:.2f} s)",
            "drift": "drift {t}'s clock (rate {e:.3f})",
            "wipe": "crash {t} and restart it at once on an empty disk",
        }[self.kind].format(
            t=" -> ".join(self.targets) if self.kind == "cut" else ", ".join(self.targets), e=self.extent
        )
        until = f" for {self.duration:.2f} s" if self.duration else ""
        return f"t={self.at:7.3f}  {what}{until}"


def draw_schedule(
    rng: random.Random,
    cluster_names: list[str],
    start: float,
    length: float,
    extra: random.Random | None = None,
) -> list[Fault]:
    """Between 1 and 8 faults in [start, start + length), and perhaps a wipe (``extra``)."""
    replicas = [n for n in cluster_names if n != FRONTEND]
    targets = [*replicas, "@catalog", "@catalog", "@order", "@order"]
    faults = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.choices(KINDS, WEIGHTS)[0]
        at = round(start + rng.uniform(0, length), 3)
        duration = round(rng.uniform(0.2, 6.0), 3)
        if kind == "hang":
            role = rng.choice(["@catalog", "@order"])
            fault = Fault(at, kind, (role,), round(rng.uniform(*HANG), 3))
        elif kind in ("pause", "crash", "drift"):
            target = rng.choice(targets)
            rate = round(rng.uniform(1 - CLOCK_DRIFT, 1 + CLOCK_DRIFT), 4)  # drawn for all three
            fault = Fault(at, kind, (target,), duration, rate if kind == "drift" else 0.0)
        elif kind == "partition":
            side = rng.choice(
                [[rng.choice(targets)], rng.sample(cluster_names, rng.randint(1, len(cluster_names) - 1))]
            )
            fault = Fault(at, kind, tuple(sorted(side)), duration)
        else:
            a, b = rng.sample([*cluster_names, "@catalog", "@order"], 2)
            extent = round(rng.uniform(0.05, 2.5), 3) if kind == "slow" else 0.0
            fault = Fault(at, kind, (a, b), 0.0 if kind == "drop" else duration, extent)
        faults.append(fault)
    _within_drift(faults)
    if extra is not None and extra.random() < WIPE_CHANCE:
        role = extra.choice(["catalog", "order"])
        faults.append(Fault(round(start + extra.uniform(0, length), 3), "wipe", (f"~{role}",)))
    return sorted(faults, key=lambda f: f.at)


def _within_drift(faults: list[Fault]) -> None:
    """Move drifts' rates (in place, as little as needed) so that no clock ever runs slower
    than ``1 - CLOCK_DRIFT`` times another's: what the leases' terms assume, or a failure
    would be the schedule's, not the code's. A holder's ``HOLDER_TERM`` (``LEASE_TERM * (1 -
    CLOCK_DRIFT)`` from a receipt before its sequencer's count began) ends first while the
    holder's clock runs at least ``1 - CLOCK_DRIFT`` times the sequencer's; a sequencer's
    ``LEADER_TERM`` (``VOTE_GUARD * (1 - 2 * CLOCK_DRIFT)`` from a send before the follower's
    guard began) while its clock runs at least ``1 - 2 * CLOCK_DRIFT`` times the follower's.
    Any replica may sequence, so replicas of a role may differ either way; the bound is kept
    for every pair of processes, as ``bazar.leases`` states it.

    One drift against the undrifted rest (1.0) keeps it: rates are drawn within
    ``CLOCK_DRIFT`` of 1.0 (the slowest is the edge exactly). Drifts that overlap in time are
    presumed on different processes (``@catalog`` is resolved when the fault starts): one
    that breaks the bound with 1.0 or a drift in force when it starts is moved to just within
    it (1e-4 inside, rounded to 4 decimals: clear of float rounding), so overlapping drifts
    reach the edge too, and a seed without such a clash draws the schedule it drew before."""
    placed: list[Fault] = []
    for i in sorted((i for i, f in enumerate(faults) if f.kind == "drift"), key=lambda i: faults[i].at):
        fault = faults[i]
        rates = [1.0, *(d.extent for d in placed if d.at + d.duration >= fault.at)]
        fastest, slowest = max(rates), min(rates)
        if not (slowest >= fault.extent * (1 - CLOCK_DRIFT) and fault.extent >= fastest * (1 - CLOCK_DRIFT)):
            low = round(fastest * (1 - CLOCK_DRIFT) + 1e-4, 4)
            high = round(slowest / (1 - CLOCK_DRIFT) - 1e-4, 4)
            fault = faults[i] = replace(fault, extent=min(max(fault.extent, low), high))
        placed.append(fault)


class Injector:
    """Applies a schedule's faults to a cluster, and heals them all at the end."""

    def __init__(self, cluster: SimCluster, trace: list[str]) -> None:
        self.cluster = cluster
        self.trace = trace
        self.paused: set[str] = set()
        self.down: set[str] = set()
        self.cuts: list[set[tuple[str, str]]] = []

    def schedule(self, faults: list[Fault]) -> None:
        for fault in faults:
            self.cluster.sim.callLater(fault.at - self.cluster.sim.now, self.apply, fault)

    def _resolve(self, target: str) -> str:
        if target[0] not in "@~":
            return target
        role = target[1:]
        sequencing = [
            name
            for name, process in sorted(self.cluster.processes.items())
            if process.role is not None
            and process.role.replica.role == role
            and process.role.writer is not None
        ]
        if target[0] == "@":
            return sequencing[0] if sequencing else f"{role}-1"
        config = self.cluster.config
        replicas = [r.name for r in (config.catalog if role == "catalog" else config.order)]
        followers = [n for n in replicas if n not in sequencing and n not in self.down]
        return followers[0] if followers else replicas[-1]

    def apply(self, fault: Fault) -> None:
        cluster, network = self.cluster, self.cluster.network
        names = tuple(self._resolve(t) for t in fault.targets)
        self.trace.append(f"{fault.describe()}  [{', '.join(names)}]")
        later = cluster.sim.callLater
        if fault.kind in ("pause", "hang"):
            (name,) = names
            if name in self.paused or name in self.down:
                return
            cluster.host(name).pause()
            self.paused.add(name)
            later(fault.duration, self._resume, name)
        elif fault.kind in ("crash", "wipe"):
            (name,) = names
            if name in self.down:
                return
            self.paused.discard(name)
            cluster.crash(name)
            if fault.kind == "wipe":
                cluster.wipe(name)
                cluster.restart(name)  # at once: no request of its sequencer's saw it down
            else:
                self.down.add(name)
                later(fault.duration, self._restart, name)
        elif fault.kind in ("partition", "cut"):
            if fault.kind == "partition":
                side = set(names)
                rest = set(cluster.names) - side
                pairs = {(a, b) for a in side for b in rest} | {(b, a) for a in side for b in rest}
            else:
                pairs = {(names[0], names[1])}
            pairs -= network.cut
            network.cut |= pairs
            self.cuts.append(pairs)
            later(fault.duration, self._uncut, pairs)
        elif fault.kind == "drop":
            network.drop(*names)
        elif fault.kind == "slow":
            key = (names[0], names[1])
            network.slow[key] = fault.extent
            later(fault.duration, network.slow.pop, key, None)
        elif fault.kind == "drift":
            (name,) = names
            cluster.host(name).set_rate(fault.extent)
            later(fault.duration, cluster.host(name).set_rate, 1.0)

    def _resume(self, name: str) -> None:
        if name in self.paused:
            self.paused.discard(name)
            self.cluster.host(name).resume()
            self.trace.append(f"t={self.cluster.sim.now:7.3f}  resume {name}")

    def _restart(self, name: str) -> None:
        if name in self.down:
            self.down.discard(name)
            self.cluster.restart(name)
            self.trace.append(f"t={self.cluster.sim.now:7.3f}  restart {name}")

    def _uncut(self, pairs: set[tuple[str, str]]) -> None:
        self.cluster.network.cut -= pairs
        if pairs in self.cuts:
            self.cuts.remove(pairs)

    def heal(self) -> None:
        """Every fault ends: partitions healed, paused processes resumed, crashed ones restarted."""
        for name in sorted(self.paused):
            self._resume(name)
        for name in sorted(self.down):
            self._restart(name)
        self.cluster.network.heal()
        self.cuts.clear()
        for name in self.cluster.names:
            self.cluster.host(name).set_rate(1.0)
        self.trace.append(f"t={self.cluster.sim.now:7.3f}  heal everything")

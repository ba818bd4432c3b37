"""The simulated network: every call between processes, as messages the simulator controls.

A call (an HTTP request, or a call on the internal channel) is a message from its caller's
process to its callee's, and the answer one back. Each goes on a *connection* (caller,
callee, transport) that keeps TCP's order: a message never overtakes an earlier one on the
same connection, however their delays were drawn. What a fault does, and how the caller
sees it (as ``bazar.client`` and ``bazar.channel`` report a real network's failures):

* callee not running: the connection is refused, ``NotSent`` (or, under a connection that
  was open, reset: ``Unavailable``), one network delay later;
* a partition between them: a new connection gets no answer, ``NotSent`` at the caller's
  deadline; a message on an open one (either way) is lost, ``Unavailable`` at the deadline;
* a connection dropped: every call on it fails at once with ``Unavailable`` (the callee may
  still finish what it got, as a Twisted server does);
* a process paused: what reaches it waits, in order, until it resumes (``Host``).

The callee serves a call through its real resource (``bazar.sim.serving.Endpoint``); the
callers (``bazar.sim.callers``) are a process's ``ReplicaClient`` and an outside client.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from bazar.errors import NotSent, Unavailable
from bazar.sim.clock import Event, ProcessClock, SimClock
from bazar.sim.serving import Endpoint

LATENCY = (0.0002, 0.002)  # seconds one message takes on a healthy link, drawn uniformly


class Host:
    """One process of the cluster (or an outside client) as the simulator sees it.

    Every event of the process (a timer of its ``clock``, a message reaching it) runs through
    ``event``: not while it is paused (held, and run late on ``resume``), never for an
    incarnation that crashed."""

    def __init__(self, name: str, sim: SimClock) -> None:
        self.name = name
        self.sim = sim
        self.incarnation = 0
        self.alive = False
        self.paused = False
        self.rate = 1.0
        self._anchor = (0.0, 0.0)  # (simulated time, this process's time) when the rate was set
        self.clock = ProcessClock(self, 0)
        self.endpoint: Endpoint | None = None
        self.process: Any = None  # what was built for this incarnation
        self._held: list[DelayedCall | Event] = []

    def local_time(self) -> float:
        sim_then, local_then = self._anchor
        return local_then + (self.sim.now - sim_then) * self.rate

    def sim_time_at(self, local: float) -> float:
        """The first simulated time (from now on) at which this process's clock shows ``local``:
        a timer must never fire before its time, or a ``LoopingCall`` reschedules itself a few
        ulps ahead, forever."""
        sim_then, local_then = self._anchor
        when = max(self.sim.now, sim_then + (local - local_then) / self.rate)
        while local_then + (when - sim_then) * self.rate < local:
            when = math.nextafter(when, math.inf)
        return when

    def set_rate(self, rate: float) -> None:
        self._anchor = (self.sim.now, self.local_time())
        self.rate = rate

    def schedule(self, when: float, f: Callable[..., Any], *args: Any) -> Event:
        return self.sim.event(when, self, self.incarnation, f, args)

    def event(self, call: DelayedCall | Event) -> None:
        if not self.alive or call.incarnation != self.incarnation:  # type: ignore[union-attr]
            call.called = 1
            return
        if self.paused:
            self._held.append(call)
            return
        call.called = 1
        try:
            call.func(*call.args, **call.kw)
        except Exception as e:
            self.sim.on_error(e)

    def start(self) -> None:
        self.alive = True
        self.paused = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        """Runs, late and in the order they came due, what came due while paused."""
        self.paused = False
        held, self._held = self._held, []
        for call in held:
            if not call.cancelled:
                self.sim.requeue(call)

    def crash(self) -> None:
        """Everything of this incarnation is gone: its timers, its messages, its memory."""
        self.alive = False
        self.paused = False
        self._held = []
        self.incarnation += 1
        self.clock = ProcessClock(self, self.incarnation)
        self.endpoint = None
        self.process = None


@dataclass
class _Call:
    deferred: Deferred[Any]
    caller: Host
    incarnation: int
    conn: _Conn
    generation: int
    connected: bool  # the connection was (or got) made: a lost call may have arrived
    target: str
    timer: Any = None
    settled: bool = False


@dataclass
class _Conn:
    open: bool = False
    generation: int = 0
    forward: float = 0.0  # when the last message to the callee arrives
    backward: float = 0.0  # when the last answer to the caller arrives
    calls: list[_Call] = field(default_factory=list)


Serve = Callable[[Endpoint], Deferred[Any]]


class Network:
    """Every connection between the hosts, and the faults now in force."""

    def __init__(self, sim: SimClock, rng: random.Random) -> None:
        self.sim = sim
        self.rng = rng
        self.hosts: dict[str, Host] = {}
        self._conns: dict[tuple[str, str, str], _Conn] = {}
        self.cut: set[tuple[str, str]] = set()  # (from, to): messages that way are lost
        self.slow: dict[tuple[str, str], float] = {}  # (a, b) -> extra delay, at most, either way
        self.delivered = 0  # messages delivered (requests and answers), for the spin check

    def host(self, name: str) -> Host:
        if name not in self.hosts:
            self.hosts[name] = Host(name, self.sim)
        return self.hosts[name]

    # -- faults ------------------------------------------------------------------------------

    def blocked(self, a: str, b: str) -> bool:
        return (a, b) in self.cut

    def partition(self, *groups: set[str]) -> None:
        """No message between hosts of different groups (hosts in none talk to everyone)."""
        for i, group in enumerate(groups):
            for other in groups[i + 1 :]:
                for a in group:
                    for b in other:
                        self.cut |= {(a, b), (b, a)}

    def cut_one_way(self, a: str, b: str) -> None:
        self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()
        self.slow.clear()

    def drop(self, a: str, b: str) -> int:
        """Drop every connection between ``a`` and ``b``; how many calls it failed."""
        failed = 0
        for (src, dst, _), conn in sorted(self._conns.items()):
            if {src, dst} == {a, b}:
                failed += self._reset(conn, f"the connection to {dst} was dropped")
        return failed

    def crashed(self, name: str) -> None:
        """``name`` died: its connections are reset (its callers' calls fail), its own calls vanish."""
        for (src, dst, _), conn in sorted(self._conns.items()):
            if name in (src, dst):
                self._reset(conn, f"{dst} is unreachable: ConnectionLost")

    def _reset(self, conn: _Conn, message: str) -> int:
        conn.open = False
        conn.generation += 1
        calls, conn.calls = conn.calls, []
        for call in calls:
            if call.caller.alive and call.caller.incarnation == call.incarnation:
                delay = self._latency(call.caller.name, call.target)
                call.caller.schedule(self.sim.now + delay, self._settle, call, Failure(Unavailable(message)))
        return len(calls)

    # -- calls -------------------------------------------------------------------------------

    def _latency(self, a: str, b: str) -> float:
        delay = LATENCY[0] + (LATENCY[1] - LATENCY[0]) * self.rng.random()  # rng.uniform(*LATENCY)
        if self.slow:
            extra = self.slow.get((a, b)) or self.slow.get((b, a))
            if extra:
                delay += self.rng.uniform(0, extra)
        return delay

    def call(self, caller: Host, target: str, kind: str, serve: Serve, timeout: float) -> Deferred[Any]:
        """``serve(endpoint)`` at ``target``'s endpoint, its answer back to ``caller``."""
        callee = self.hosts[target]
        conn = self._conns.get((caller.name, target, kind))
        if conn is None:
            conn = self._conns[caller.name, target, kind] = _Conn()
        d: Deferred[Any] = Deferred()
        call = _Call(d, caller, caller.incarnation, conn, conn.generation, conn.open, target)
        call.timer = caller.clock.callLater(timeout, self._expire, call, timeout)
        if not callee.alive:
            error = Unavailable if conn.open else NotSent
            conn.open = False
            conn.generation += 1
            failure = Failure(error(f"{target} is unreachable: ConnectionRefusedError"))
            caller.schedule(self.sim.now + self._latency(caller.name, target), self._settle, call, failure)
            return d
        if self.blocked(caller.name, target):
            if conn.open:
                conn.calls.append(call)  # lost on its way: the caller's deadline tells
            return d
        conn.open = True
        call.connected = True
        conn.calls.append(call)
        arrival = max(self.sim.now + self._latency(caller.name, target), conn.forward)
        conn.forward = arrival
        callee.schedule(arrival, self._arrive, call, callee, serve)
        return d

    def _arrive(self, call: _Call, callee: Host, serve: Serve) -> None:
        if call.generation != call.conn.generation or self.blocked(call.caller.name, callee.name):
            return  # dropped, or lost to a partition on its way
        self.delivered += 1
        assert callee.endpoint is not None
        try:
            answer = serve(callee.endpoint)
        except Exception:
            answer = Deferred()
            answer.errback(Failure())
        answer.addBoth(self._answered, call, callee)

    def _answered(self, result: Any, call: _Call, callee: Host) -> None:
        conn = call.conn
        if call.generation != conn.generation or self.blocked(callee.name, call.caller.name):
            return
        if not callee.alive:
            return
        arrival = max(self.sim.now + self._latency(callee.name, call.caller.name), conn.backward)
        conn.backward = arrival
        caller = call.caller
        if caller.alive and caller.incarnation == call.incarnation:
            self.sim.event(arrival, caller, call.incarnation, self._answer, (call, result))

    def _answer(self, call: _Call, result: Any) -> None:
        if call.generation != call.conn.generation:
            return
        self.delivered += 1
        self._settle(call, result)

    def _settle(self, call: _Call, result: Any) -> None:
        if call.settled:
            return
        call.settled = True
        if call in call.conn.calls:
            call.conn.calls.remove(call)
        if call.timer.active():
            call.timer.cancel()
        call.deferred.callback(result) if not isinstance(result, Failure) else call.deferred.errback(result)

    def _expire(self, call: _Call, timeout: float) -> None:
        if call.settled:
            return
        if not call.connected:
            error: Exception = NotSent(f"{call.target} is unreachable: TimeoutError")
        else:
            error = Unavailable(f"{call.target} did not answer within {timeout:.3g} s")
            conn = call.conn
            if call in conn.calls:
                conn.calls.remove(call)
            # The caller gives up on the connection (the channel aborts a silent one, and
            # the HTTP pool closes a cancelled request's): the next call connects anew.
            conn.open = False
            conn.generation += 1
        self._settle(call, Failure(error))

"""Simulated time: one global clock for the whole cluster, and each process's view of it.

``SimClock`` is ``task.Clock``'s idea (time moves only when told) on a heap, so that a run
with thousands of pending timers does not sort a list at every ``callLater``; calls due at
the same moment run in the order they were scheduled, so a run is a function of its seed.

``ProcessClock`` is what one process is given as its reactor's clock. Its calls belong to
the process (``Host``): they never run while it is paused (they run, late, when it resumes,
as a SIGSTOPped process's timers do) and never after it crashed. Its time may drift: a
process whose clock runs at rate 1.01 sees 1.01 s pass per simulated second.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer


class Host(Protocol):
    """What a process's clock needs of its process (``bazar.sim.network.Host``), named here
    so that the clock does not import the network, which imports the clock."""

    sim: SimClock

    def event(self, call: DelayedCall) -> None: ...

    def local_time(self) -> float: ...

    def sim_time_at(self, local: float) -> float: ...


@implementer(IReactorTime)
class SimClock:
    """The cluster's one clock: ``run_until`` runs every call due, in time order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, DelayedCall]] = []
        self._order = itertools.count()
        # Called with each exception a call raised (a reactor would log it and go on).
        self.on_error: Callable[[BaseException], object] = lambda error: None

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> DelayedCall:
        return self.schedule(self.now + max(delay, 0.0), None, callable, args, kw)

    def schedule(
        self, when: float, host: Host | None, f: Callable[..., Any], args: Any = (), kw: Any = None
    ) -> DelayedCall:
        """A call at simulated time ``when``; with ``host``, one of that process's events."""
        call = DelayedCall(when, f, args, kw or {}, lambda c: None, self._reset, self.seconds)
        call.host = host  # type: ignore[attr-defined]
        self._push(call)
        return call

    def _push(self, call: DelayedCall) -> None:
        heapq.heappush(self._heap, (call.getTime(), next(self._order), call))

    def _reset(self, call: DelayedCall) -> None:
        self._push(call)  # the entry at its old time is skipped when it comes up

    def requeue(self, call: DelayedCall) -> None:
        """Put back a call that came due while its process was paused (it keeps its time)."""
        self._push(call)

    def getDelayedCalls(self) -> list[DelayedCall]:
        return [c for _, _, c in self._heap if c.active()]

    def next_time(self) -> float | None:
        while self._heap:
            when, _, call = self._heap[0]
            if call.cancelled or call.called or call.getTime() != when:
                heapq.heappop(self._heap)
                continue
            return when
        return None

    def run_until(self, end: float) -> None:
        """Run every call due up to ``end``, then stand at ``end``."""
        while True:
            when = self.next_time()
            if when is None or when > end:
                break
            _, _, call = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            host = call.host  # type: ignore[attr-defined]
            if host is not None:
                host.event(call)
            else:
                call.called = 1
                try:
                    call.func(*call.args, **call.kw)
                except Exception as e:
                    self.on_error(e)
        self.now = max(self.now, end)


@implementer(IReactorTime)
class ProcessClock:
    """One incarnation of one process's clock (see the module docstring)."""

    def __init__(self, host: Host, incarnation: int) -> None:
        self.host = host
        self.incarnation = incarnation

    def seconds(self) -> float:
        return self.host.local_time()

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> DelayedCall:
        host = self.host
        target = host.local_time() + max(delay, 0.0)
        when = host.sim_time_at(target)
        call = host.sim.schedule(when, host, callable, args, kw)
        call.incarnation = self.incarnation  # type: ignore[attr-defined]
        return call

    def getDelayedCalls(self) -> list[DelayedCall]:
        return [c for c in self.host.sim.getDelayedCalls() if getattr(c, "host", None) is self.host]

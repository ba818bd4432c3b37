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

    def event(self, call: DelayedCall | Event) -> None: ...

    def local_time(self) -> float: ...

    def sim_time_at(self, local: float) -> float: ...


def _never(call: DelayedCall) -> None:
    """A DelayedCall's canceller: a cancelled call is skipped when it comes up."""


class Event:
    """A call the simulator makes of its own (a message reaching a process, a client's next
    step): never cancelled or moved, so lighter than a ``DelayedCall``, which a process's
    own ``callLater`` still gets."""

    __slots__ = ("args", "called", "func", "host", "incarnation", "kw", "time")
    cancelled = 0
    kw: dict[str, Any]

    def __init__(
        self, time: float, func: Callable[..., Any], args: Any, host: Host, incarnation: int
    ) -> None:
        self.time = time
        self.func = func
        self.args = args
        self.kw = _NO_KW
        self.host = host
        self.incarnation = incarnation
        self.called = 0

    def getTime(self) -> float:
        return self.time

    def active(self) -> bool:
        return not self.called


_NO_KW: dict[str, Any] = {}
Call = DelayedCall | Event


@implementer(IReactorTime)
class SimClock:
    """The cluster's one clock: ``run_until`` runs every call due, in time order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Call]] = []
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
        call = DelayedCall(when, f, args, kw or {}, _never, self._push, self.seconds)
        call.host = host  # type: ignore[attr-defined]
        self._push(call)
        return call

    def event(self, when: float, host: Host, incarnation: int, f: Callable[..., Any], args: Any) -> Event:
        """One of ``host``'s events, of its incarnation ``incarnation``, at ``when``."""
        call = Event(when, f, args, host, incarnation)
        heapq.heappush(self._heap, (when, next(self._order), call))
        return call

    def _push(self, call: Call) -> None:
        # A call reset to another time is pushed again: its entry at the old time is skipped.
        heapq.heappush(self._heap, (call.getTime(), next(self._order), call))

    def requeue(self, call: Call) -> None:
        """Put back a call that came due while its process was paused (it keeps its time)."""
        self._push(call)

    def getDelayedCalls(self) -> list[DelayedCall]:
        return [c for _, _, c in self._heap if isinstance(c, DelayedCall) and c.active()]

    def next_time(self) -> float | None:
        heap = self._heap
        while heap:
            when, _, call = heap[0]
            if call.cancelled or call.called or call.getTime() != when:
                heapq.heappop(heap)
                continue
            return when
        return None

    def run_until(self, end: float) -> None:
        """Run every call due up to ``end``, then stand at ``end``."""
        heap, pop = self._heap, heapq.heappop
        while heap:
            when, _, call = heap[0]
            if call.cancelled or call.called or call.getTime() != when:
                pop(heap)
                continue
            if when > end:
                break
            pop(heap)
            if when > self.now:
                self.now = when
            host = call.host  # type: ignore[union-attr]
            if host is not None:
                host.event(call)
            else:
                call.called = 1
                try:
                    call.func(*call.args, **call.kw)
                except Exception as e:
                    self.on_error(e)
        if end > self.now:
            self.now = end


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

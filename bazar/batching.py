"""Misses for different books in one turn of the reactor share one read: a lookup.

``bazar.readthrough`` makes concurrent misses for *one* key share a fetch. Under load the
front end also has misses for several *different* books at the same moment, and each
fetch is an HTTP call that costs the front end several times the CPU of answering a hit
(about 0.3 ms of treq and Agent against 0.05 ms). A ``Batcher`` gathers every key asked
for during one turn of the reactor and fetches them together when the turn ends
(``callLater(0)``): one call per turn rather than one per key. Nothing waits longer than
it would have: the turn was ending anyway, and a lone miss goes out as soon as it does.

The catalog answers a lookup (``bazar.protocol.LOOKUP_PATH``, ``?ids=3,1,4``) from one snapshot, with one
sequence number, exactly as it would answer each id on its own; the front end splits the
answer (``bazar.frontend.cached_reads.split_lookup``), so the cache sees one answer per book.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

# The most ids one lookup names: one short SQL statement at the catalog (a few hundred
# microseconds at most, so it may run on the reactor thread) and a short URL.
MAX_LOOKUP = 64

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Batcher(Generic[K, V]):
    """``load(key)`` one key at a time; ``fetch_many(keys)`` is called once per turn of the
    reactor (per ``max_keys`` keys) and must answer for every key it is given."""

    def __init__(
        self,
        fetch_many: Callable[[list[K]], Deferred[dict[K, V]]],
        clock: IReactorTime,
        max_keys: int = MAX_LOOKUP,
    ) -> None:
        self._fetch_many = fetch_many
        self._clock = clock
        self._max_keys = max_keys
        self._waiting: dict[K, list[Deferred[V]]] = {}
        self._flush: IDelayedCall | None = None

    def load(self, key: K) -> Deferred[V]:
        """``key``'s answer, fetched with every other key asked for in this turn."""
        d: Deferred[V] = Deferred()
        self._waiting.setdefault(key, []).append(d)
        if self._flush is None:
            self._flush = self._clock.callLater(0, self._fetch_waiting)
        return d

    def _fetch_waiting(self) -> None:
        self._flush = None
        waiting, self._waiting = self._waiting, {}
        keys = list(waiting)
        for start in range(0, len(keys), self._max_keys):
            batch = keys[start : start + self._max_keys]
            try:
                fetched = self._fetch_many(batch)
            except Exception:
                fetched = fail()
            fetched.addBoth(_deliver, {key: waiting[key] for key in batch})


def _deliver(result: Mapping[K, V] | Failure, waiters: dict[K, list[Deferred[V]]]) -> None:
    """Each key's answer to its waiters; the batch's failure to all of them."""
    for key, deferreds in waiters.items():
        if isinstance(result, Failure):
            outcome: V | Failure = result
        elif key in result:
            outcome = result[key]
        else:
            outcome = Failure(KeyError(f"the batch had no answer for {key!r}"))
        for d in deferreds:
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)

"""Read-through caching in front of the replicas, safe against racing writes.

Two things the plain LRU cannot do alone:

* **Coalescing**: concurrent misses for one key share a single backend request.
* **Fill guard**: a fetch that started before an invalidation of its key must not put the
  old value back into the cache. An invalidation therefore marks the key's in-flight fetch
  stale (its result is still returned to the requests that were already waiting, which
  began before the write was acknowledged) and detaches it, so a request that arrives
  after the invalidation starts a fresh fetch instead of joining the stale one.

* **Version floor**: a sequencer tells the front end which keys a write changed *while* its
  followers apply that write (one round trip less for every write), so for a moment a
  follower may still hold the old value. Each answer says which write its replica had
  applied (``version``); each invalidation raises the cache's ``floor`` to its write's
  sequence number; a fill is cached only if its answer is at least as new as the floor was
  when the fill started. An older answer is still returned to its requests (the write is
  not acknowledged yet), never stored.

* **No entry older than a write an answer showed**: the invalidation of a write can arrive
  after a follower's answer has shown it (it is on its way; or it was lost and the write
  failed, though committed everywhere). Each answer's version raises ``observed``; while it
  is beyond ``floor``, an entry older than it is not served (``fresh``), but fetched again, so
  no read goes back in time behind one that showed the write. A newer write's invalidation
  ends that; so after a lost push, the sequencer's next pushes flush the whole cache
  (``invalidate_all``) until the front end's lease is renewed (``bazar.leases``).

* **A new epoch drops everything**: when another replica takes over sequencing, nothing
  cached before the takeover is kept, nor stored by a fill that was then in flight
  (``invalidate_all``). Replicas answer only with writes a majority has
  (``bazar.replica.ReplicaApp.read_committed``), but that takes three replicas per role; the
  cache does not count on it.

An invalidation names a key or a *prefix* (see ``bazar.lru``): invalidating ``info/all``
drops every cached page of that listing and marks every page fill of it in flight stale,
so a page fetched before a write can no more be stored after it than a single book can.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from bazar.lru import LRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Fill(Generic[V]):
    """One backend fetch and the requests waiting for it."""

    def __init__(self, floor: int) -> None:
        self.stale = False
        self.floor = floor  # the oldest answer this fill may store
        self.waiters: list[Deferred[V]] = []

    def wait(self) -> Deferred[V]:
        d: Deferred[V] = Deferred()
        self.waiters.append(d)
        return d

    def fire(self, result: V | Failure) -> None:
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)


class ReadThroughCache(Generic[K, V]):
    def __init__(
        self,
        lru: LRUCache[K, V],
        cacheable: Callable[[V], bool] = lambda value: True,
        version: Callable[[V], int] = lambda value: 0,
        trusted: Callable[[], bool] = lambda: True,
    ) -> None:
        """``version(value)``: the sequence number of the newest write a fetched value reflects;
        ``trusted()``: whether cached values may be answered now (a cache lease is held:
        ``bazar.leases``); if not, every read is a miss."""
        self.lru = lru
        self.trusted = trusted
        self._cacheable = cacheable
        self._version = version
        self.floor = 0  # the newest write any invalidation was for
        self.observed = 0  # the newest write any answer reflected
        self._inflight: dict[K, _Fill[V]] = {}
        self._inflight_by_prefix: dict[Hashable, set[K]] = {}

    def get(self, key: K, fetch: Callable[[], Deferred[V]]) -> tuple[V | None, Deferred[V] | None]:
        """``(value, None)`` on a hit; ``(None, deferred)`` on a miss, fetching once per key."""
        value = self.hit(key)
        if value is not None:
            return value, None
        self.lru.stats.misses += 1
        fill = self._inflight.get(key)
        if fill is not None:
            return None, fill.wait()
        fill = self._inflight[key] = _Fill(self.floor)
        prefix = self.lru.prefix_of(key)
        if prefix is not None:
            self._inflight_by_prefix.setdefault(prefix, set()).add(key)
        waiting = fill.wait()  # before fetching: a fetch may complete synchronously
        fetch().addBoth(self._filled, key, fill)
        return None, waiting

    def hit(self, key: K) -> V | None:
        """The cached value of ``key`` if it may be served (a lease is held: ``trusted``, and
        ``fresh``), counted as a hit and marked recently used; else None, counting nothing (the
        caller's miss path counts it)."""
        value = self.lru.peek(key)
        if value is None or not self.trusted() or not self.fresh(value):
            return None
        self.lru.get(key)
        return value

    def fresh(self, value: V) -> bool:
        """Whether a cached ``value`` may be served: no answer has shown a write newer than it
        that no invalidation has covered yet (``observed`` beyond ``floor``)."""
        return self.floor >= self.observed or self._version(value) >= self.observed

    def _filled(self, result: V | Failure, key: K, fill: _Fill[V]) -> None:
        if self._inflight.get(key) is fill:
            self._detach(key)
        if not isinstance(result, Failure):
            self.observed = max(self.observed, self._version(result))
        if (
            not fill.stale
            and not isinstance(result, Failure)
            and self._cacheable(result)
            and self._version(result) >= fill.floor
        ):
            self.lru.put(key, result)
        fill.fire(result)

    def _detach(self, key: K) -> _Fill[V] | None:
        """Forget the fill in flight for ``key`` (later misses start their own); the fill, if any."""
        fill = self._inflight.pop(key, None)
        prefix = self.lru.prefix_of(key)
        if fill is not None and prefix is not None:
            keys = self._inflight_by_prefix[prefix]
            keys.discard(key)
            if not keys:
                del self._inflight_by_prefix[prefix]
        return fill

    def invalidate(self, name: K, seq: int = 0) -> None:
        """Forget the key ``name`` and every key with the prefix ``name``, now, and make sure no
        fetch already under way for any of them stores it again, nor any later fetch an
        answer older than write ``seq``."""
        self.floor = max(self.floor, seq)
        self.lru.invalidate(name)
        self.lru.invalidate_prefix(name)
        for key in [name, *self._inflight_by_prefix.get(name, ())]:
            fill = self._detach(key)
            if fill is not None:
                fill.stale = True

    def invalidate_all(self) -> int:
        """Forget every key, and make sure no fetch already under way stores its answer; how
        many entries were cached."""
        for fill in self._inflight.values():
            fill.stale = True
        self._inflight.clear()
        self._inflight_by_prefix.clear()
        return self.lru.invalidate_all()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

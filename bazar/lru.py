"""A bounded least-recently-used cache, hand-rolled on ``collections.OrderedDict``.

The OrderedDict keeps entries from least to most recently used: a hit moves its entry to
the end, and an insert beyond capacity drops the first one. Counters make the cache's
behaviour observable (tests, metrics, the benchmark) without logging every access.

Keys may belong to a *prefix* (every cached page of one listing, e.g. ``info/all``): a
secondary index prefix -> keys, kept on every put, eviction and invalidation, lets
``invalidate_prefix`` drop them all in time proportional to their number, not the cache's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def key_prefix(key: object) -> Hashable | None:
    """The prefix a key belongs to: its ``prefix`` attribute if it has one (see
    ``bazar.invalidation.PageKey``), else none."""
    prefix: Hashable | None = getattr(key, "prefix", None)
    return prefix


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    invalidations: int = 0


class LRUCache(Generic[K, V]):
    def __init__(self, capacity: int, prefix_of: Callable[[K], Hashable | None] = key_prefix) -> None:
        """``capacity`` entries at most; 0 is a disabled cache (every get misses, nothing is kept).

        ``prefix_of`` says which prefix a key belongs to (None: none)."""
        if capacity < 0:
            raise ValueError(f"capacity must be at least 0, not {capacity}")
        self.capacity = capacity
        self.stats = CacheStats()
        self._entries: OrderedDict[K, V] = OrderedDict()
        self.prefix_of = prefix_of
        self._by_prefix: dict[Hashable, set[K]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[K]:
        """Keys from least to most recently used: the first is evicted next."""
        return list(self._entries)

    def peek(self, key: K) -> V | None:
        """The cached value without counting a hit or miss or changing the order."""
        return self._entries.get(key)

    def keys_with_prefix(self, prefix: Hashable) -> set[K]:
        return set(self._by_prefix.get(prefix, ()))

    def get(self, key: K) -> V | None:
        try:
            value = self._entries[key]
        except KeyError:
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return value

    def miss(self) -> None:
        """Count a read the cache was not asked to answer (its lease had lapsed) as a miss."""
        self.stats.misses += 1

    def put(self, key: K, value: V) -> None:
        if self.capacity == 0:
            return
        if key not in self._entries:
            prefix = self.prefix_of(key)
            if prefix is not None:
                self._by_prefix.setdefault(prefix, set()).add(key)
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            evicted, _ = self._entries.popitem(last=False)
            self._unindex(evicted)
            self.stats.evictions += 1

    def invalidate(self, key: K) -> bool:
        """Drop ``key``; True when it was cached."""
        if key not in self._entries:
            return False
        del self._entries[key]
        self._unindex(key)
        self.stats.invalidations += 1
        return True

    def invalidate_prefix(self, prefix: Hashable) -> int:
        """Drop every key with this prefix; how many there were."""
        keys = self._by_prefix.pop(prefix, set())
        for key in keys:
            del self._entries[key]
        self.stats.invalidations += len(keys)
        return len(keys)

    def invalidate_all(self) -> int:
        """Drop every entry; how many there were."""
        count = len(self._entries)
        self._entries.clear()
        self._by_prefix.clear()
        self.stats.invalidations += count
        return count

    def _unindex(self, key: K) -> None:
        prefix = self.prefix_of(key)
        if prefix is None:
            return
        keys = self._by_prefix.get(prefix)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_prefix[prefix]

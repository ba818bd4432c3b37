"""A bounded least-recently-used cache, hand-rolled on ``collections.OrderedDict``.

The OrderedDict keeps entries from least to most recently used: a hit moves its entry to
the end, and an insert beyond capacity drops the first one. Counters make the cache's
behaviour observable (tests, metrics, the benchmark) without logging every access.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    invalidations: int = 0


class LRUCache(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        """``capacity`` entries at most; 0 is a disabled cache (every get misses, nothing is kept)."""
        if capacity < 0:
            raise ValueError(f"capacity must be at least 0, not {capacity}")
        self.capacity = capacity
        self.stats = CacheStats()
        self._entries: OrderedDict[K, V] = OrderedDict()

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

    def get(self, key: K) -> V | None:
        try:
            value = self._entries[key]
        except KeyError:
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return value

    def put(self, key: K, value: V) -> None:
        if self.capacity == 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.stats.evictions += 1

    def invalidate(self, key: K) -> bool:
        """Drop ``key``; True when it was cached."""
        if self._entries.pop(key, None) is None:
            return False
        self.stats.invalidations += 1
        return True

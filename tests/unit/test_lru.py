"""Tests for ``bazar.lru``: the bounded least-recently-used cache and its counters."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bazar.lru import CacheStats, LRUCache

BOOKS = range(7)  # the report's scenario: seven books...
CAPACITY = 5  # ...and a cache of five entries


def filled(capacity: int = CAPACITY, keys: range | list[int] = range(CAPACITY)) -> LRUCache[int, str]:
    """A cache with ``keys`` put in order (so the first is the least recently used)."""
    cache: LRUCache[int, str] = LRUCache(capacity)
    for key in keys:
        cache.put(key, f"book {key}")
    return cache


class GetPutTests(SynchronousTestCase):
    def test_get_returns_what_was_put(self) -> None:
        """A value put under a key is returned by get for that key."""
        cache = filled()
        self.assertEqual(cache.get(3), "book 3")
        self.assertEqual(len(cache), CAPACITY)
        self.assertIn(3, cache)

    def test_get_of_a_missing_key_is_none(self) -> None:
        """A key never put is a miss: get returns None and the key is not contained."""
        cache = filled()
        self.assertIsNone(cache.get(42))
        self.assertNotIn(42, cache)

    def test_put_replaces_the_value(self) -> None:
        """Putting an existing key replaces its value without growing the cache."""
        cache = filled()
        cache.put(2, "new")
        self.assertEqual(cache.get(2), "new")
        self.assertEqual(len(cache), CAPACITY)
        self.assertEqual(cache.stats.evictions, 0)

    def test_keys_from_least_to_most_recently_used(self) -> None:
        """keys() lists entries in insertion order when nothing was read."""
        self.assertEqual(filled().keys(), [0, 1, 2, 3, 4])

    def test_get_moves_to_the_end(self) -> None:
        """A hit makes its key the most recently used."""
        cache = filled()
        cache.get(0)
        self.assertEqual(cache.keys(), [1, 2, 3, 4, 0])

    def test_put_of_an_existing_key_moves_to_the_end(self) -> None:
        """Re-putting a key makes it the most recently used."""
        cache = filled()
        cache.put(1, "again")
        self.assertEqual(cache.keys(), [0, 2, 3, 4, 1])

    def test_miss_does_not_reorder(self) -> None:
        """A miss leaves the recency order alone."""
        cache = filled()
        cache.get(99)
        self.assertEqual(cache.keys(), [0, 1, 2, 3, 4])


class EvictionTests(SynchronousTestCase):
    def test_seven_books_in_a_cache_of_five(self) -> None:
        """Reading the seven books in order leaves the last five, and evicts the first two."""
        cache = filled(keys=BOOKS)
        self.assertEqual(len(cache), CAPACITY)
        self.assertEqual(cache.keys(), [2, 3, 4, 5, 6])
        self.assertNotIn(0, cache)
        self.assertNotIn(1, cache)
        self.assertEqual(cache.stats.evictions, 2)

    def test_the_least_recently_used_is_evicted(self) -> None:
        """A hit protects its entry: the next insert evicts the oldest untouched one instead."""
        cache = filled()
        cache.get(0)  # 0 is now the most recently used, 1 the least
        cache.put(5, "book 5")
        self.assertIn(0, cache)
        self.assertNotIn(1, cache)
        self.assertEqual(cache.keys(), [2, 3, 4, 0, 5])
        cache.put(6, "book 6")
        self.assertNotIn(2, cache)
        self.assertEqual(cache.keys(), [3, 4, 0, 5, 6])

    def test_replacing_does_not_evict(self) -> None:
        """Updating a cached key at capacity evicts nothing."""
        cache = filled()
        cache.put(4, "updated")
        self.assertEqual(cache.keys(), [0, 1, 2, 3, 4])
        self.assertEqual(cache.stats.evictions, 0)

    def test_capacity_one(self) -> None:
        """A cache of one keeps only the latest entry."""
        cache = filled(capacity=1, keys=[1, 2, 3])
        self.assertEqual(cache.keys(), [3])
        self.assertEqual(cache.stats.evictions, 2)

    def test_capacity_zero_keeps_nothing(self) -> None:
        """A cache of size 0 is a disabled cache: every get misses, nothing is stored or evicted."""
        cache = filled(capacity=0, keys=[1, 2, 3])
        self.assertEqual(cache.keys(), [])
        self.assertIsNone(cache.get(1))
        self.assertEqual((cache.stats.misses, cache.stats.evictions), (1, 0))

    def test_negative_capacity_is_rejected(self) -> None:
        """Negative capacities raise ValueError naming the bad value."""
        for capacity in (-1, -5):
            with self.subTest(capacity=capacity):
                error = self.assertRaises(ValueError, LRUCache, capacity)
                self.assertIn(str(capacity), str(error))


class InvalidationTests(SynchronousTestCase):
    def test_invalidate_drops_the_key(self) -> None:
        """invalidate removes a cached key and says so."""
        cache = filled()
        self.assertTrue(cache.invalidate(2))
        self.assertNotIn(2, cache)
        self.assertIsNone(cache.get(2))
        self.assertEqual(cache.keys(), [0, 1, 3, 4])

    def test_invalidate_of_an_absent_key(self) -> None:
        """invalidate of a key that is not cached returns False and counts nothing."""
        cache = filled()
        self.assertFalse(cache.invalidate(42))
        self.assertEqual(cache.stats.invalidations, 0)
        self.assertEqual(len(cache), CAPACITY)

    def test_invalidated_slot_is_reused_without_eviction(self) -> None:
        """After an invalidation at capacity, a new key fits without evicting anything."""
        cache = filled()
        cache.invalidate(0)
        cache.put(5, "book 5")
        self.assertEqual(cache.keys(), [1, 2, 3, 4, 5])
        self.assertEqual(cache.stats.evictions, 0)


class StatsTests(SynchronousTestCase):
    def test_a_new_cache_has_zero_counters(self) -> None:
        """Every counter starts at zero."""
        self.assertEqual(LRUCache(CAPACITY).stats, CacheStats(0, 0, 0, 0))

    def test_counters(self) -> None:
        """hits, misses, evictions and invalidations each count their own events."""
        cache = filled(keys=BOOKS)  # evicts 0 and 1
        cache.get(6)  # hit
        cache.get(5)  # hit
        cache.get(0)  # miss: evicted
        cache.get(9)  # miss: never cached
        cache.get(1)  # miss: evicted
        cache.invalidate(3)  # counted
        cache.invalidate(3)  # already gone: not counted
        self.assertEqual(cache.stats, CacheStats(hits=2, misses=3, evictions=2, invalidations=1))

    def test_put_counts_neither_hit_nor_miss(self) -> None:
        """Only reads count as hits or misses."""
        cache = filled()
        self.assertEqual((cache.stats.hits, cache.stats.misses), (0, 0))


class Paged(str):
    """A key with a prefix, as ``bazar.invalidation.PageKey`` is."""

    prefix: str

    def __new__(cls, prefix: str, n: int) -> Paged:
        key = super().__new__(cls, f"{prefix}?page={n}")
        key.prefix = prefix
        return key


class PrefixTests(SynchronousTestCase):
    def paged(self, capacity: int = 10) -> LRUCache[str, str]:
        cache: LRUCache[str, str] = LRUCache(capacity)
        for n in range(3):
            cache.put(Paged("info/all", n), f"all {n}")
            cache.put(Paged("search/new", n), f"new {n}")
        cache.put("info/1", "book 1")
        return cache

    def test_invalidate_prefix_drops_every_page_of_it_only(self) -> None:
        """Every key with the prefix goes, counted as invalidations; other prefixes and plain keys stay."""
        cache = self.paged()
        self.assertEqual(cache.invalidate_prefix("info/all"), 3)
        self.assertEqual(cache.keys(), [Paged("search/new", n) for n in range(3)] + ["info/1"])
        self.assertEqual(cache.stats.invalidations, 3)
        self.assertEqual(cache.keys_with_prefix("info/all"), set())
        self.assertEqual(cache.invalidate_prefix("info/all"), 0)
        self.assertEqual(cache.invalidate_prefix("info/1"), 0)  # a plain key is no prefix
        self.assertIn("info/1", cache)

    def test_eviction_leaves_the_index(self) -> None:
        """An evicted page leaves its prefix: invalidating the prefix later counts only what is cached."""
        cache = self.paged(capacity=4)  # keeps new 1, all 2, new 2, info/1
        self.assertEqual(cache.keys_with_prefix("info/all"), {Paged("info/all", 2)})
        self.assertEqual(cache.invalidate_prefix("info/all"), 1)
        self.assertEqual(cache.invalidate_prefix("search/new"), 2)
        self.assertEqual(cache.keys(), ["info/1"])
        self.assertEqual(cache._by_prefix, {})  # nothing left behind

    def test_invalidating_one_page_leaves_the_others(self) -> None:
        cache = self.paged()
        self.assertTrue(cache.invalidate(Paged("info/all", 1)))
        self.assertEqual(cache.keys_with_prefix("info/all"), {Paged("info/all", 0), Paged("info/all", 2)})
        self.assertEqual(cache.invalidate_prefix("info/all"), 2)

    def test_replacing_a_page_keeps_one_index_entry(self) -> None:
        cache = self.paged()
        cache.put(Paged("info/all", 0), "again")
        self.assertEqual(len(cache.keys_with_prefix("info/all")), 3)
        self.assertEqual(cache.invalidate_prefix("info/all"), 3)
        self.assertEqual(len(cache), 4)

    def test_a_disabled_cache_indexes_nothing(self) -> None:
        cache: LRUCache[str, str] = LRUCache(0)
        cache.put(Paged("info/all", 0), "page")
        self.assertEqual((len(cache), cache.keys_with_prefix("info/all")), (0, set()))

    def test_invalidate_all_drops_every_entry_and_prefix(self) -> None:
        """Everything goes, counted as invalidations; the cache then fills as a new one would."""
        cache = self.paged()
        self.assertEqual(cache.invalidate_all(), 7)
        self.assertEqual((len(cache), cache.stats.invalidations), (0, 7))
        self.assertEqual(cache.keys_with_prefix("info/all"), set())
        cache.put(Paged("info/all", 0), "all 0")
        self.assertEqual(cache.invalidate_prefix("info/all"), 1)

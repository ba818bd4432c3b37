"""Tests for ``bazar.readthrough``: hits, coalesced misses, and the fill guard against racing writes."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from bazar.errors import Unavailable
from bazar.invalidation import ALL_BOOKS_KEY, PageKey, all_books_page_key, search_key, search_page_key
from bazar.lru import LRUCache
from bazar.paging import Page
from bazar.readthrough import ReadThroughCache


class Backend:
    """Hands out one unfired Deferred per fetch, which the test fires by hand."""

    def __init__(self) -> None:
        self.fetches: list[Deferred[str]] = []

    def fetch(self) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self.fetches.append(d)
        return d


def make_cache(
    capacity: int = 5, cacheable: Callable[[str], bool] | None = None
) -> ReadThroughCache[str, str]:
    lru: LRUCache[str, str] = LRUCache(capacity)
    if cacheable is None:
        return ReadThroughCache(lru)
    return ReadThroughCache(lru, cacheable=cacheable)


class HitMissTests(SynchronousTestCase):
    def test_hit_returns_the_value_without_fetching(self) -> None:
        """A cached key is answered at once as (value, None) and no fetch is made."""
        cache = make_cache()
        cache.lru.put("info/1", "book 1")
        backend = Backend()
        self.assertEqual(cache.get("info/1", backend.fetch), ("book 1", None))
        self.assertEqual(backend.fetches, [])
        self.assertEqual(cache.lru.stats.hits, 1)

    def test_miss_fetches_and_caches(self) -> None:
        """A miss returns (None, deferred), fetches once, and the result is cached for the next get."""
        cache = make_cache()
        backend = Backend()
        value, pending = cache.get("info/1", backend.fetch)
        self.assertIsNone(value)
        assert pending is not None
        self.assertEqual(len(backend.fetches), 1)
        self.assertNoResult(pending)
        self.assertEqual(cache.inflight, 1)

        backend.fetches[0].callback("book 1")
        self.assertEqual(self.successResultOf(pending), "book 1")
        self.assertEqual(cache.inflight, 0)
        self.assertEqual(cache.get("info/1", backend.fetch), ("book 1", None))
        self.assertEqual(len(backend.fetches), 1)

    def test_synchronous_fetch(self) -> None:
        """A fetch that has already fired still answers the request and fills the cache."""
        cache = make_cache()
        value, pending = cache.get("info/1", lambda: succeed("book 1"))
        self.assertIsNone(value)
        assert pending is not None
        self.assertEqual(self.successResultOf(pending), "book 1")
        self.assertEqual(cache.inflight, 0)
        self.assertEqual(cache.lru.get("info/1"), "book 1")

    def test_different_keys_fetch_separately(self) -> None:
        """Misses for different keys do not share a fetch."""
        cache = make_cache()
        backend = Backend()
        _, first = cache.get("info/1", backend.fetch)
        _, second = cache.get("info/2", backend.fetch)
        assert first is not None and second is not None
        self.assertEqual(len(backend.fetches), 2)
        backend.fetches[1].callback("book 2")
        self.assertNoResult(first)
        self.assertEqual(self.successResultOf(second), "book 2")
        backend.fetches[0].callback("book 1")
        self.assertEqual(self.successResultOf(first), "book 1")


class CoalescingTests(SynchronousTestCase):
    def test_concurrent_misses_share_one_fetch(self) -> None:
        """Two misses of one key while its fetch is in flight make one fetch; both get its value."""
        cache = make_cache()
        backend = Backend()
        _, first = cache.get("info/1", backend.fetch)
        _, second = cache.get("info/1", backend.fetch)
        assert first is not None and second is not None
        self.assertEqual(len(backend.fetches), 1)
        self.assertEqual(cache.inflight, 1)
        self.assertNoResult(first)
        self.assertNoResult(second)

        backend.fetches[0].callback("book 1")
        self.assertEqual(self.successResultOf(first), "book 1")
        self.assertEqual(self.successResultOf(second), "book 1")
        self.assertEqual(cache.inflight, 0)

    def test_next_miss_after_completion_fetches_again(self) -> None:
        """Once a fetch completed and its key was evicted, a new miss starts a new fetch."""
        cache = make_cache(capacity=1)
        backend = Backend()
        _, first = cache.get("info/1", backend.fetch)
        backend.fetches[0].callback("book 1")
        assert first is not None
        self.assertEqual(self.successResultOf(first), "book 1")
        cache.lru.put("info/2", "book 2")  # evicts info/1
        _, again = cache.get("info/1", backend.fetch)
        assert again is not None
        self.assertEqual(len(backend.fetches), 2)
        self.assertNoResult(again)


class FillGuardTests(SynchronousTestCase):
    def test_invalidate_drops_a_cached_value(self) -> None:
        """invalidate forgets a cached key, so the next get fetches."""
        cache = make_cache()
        cache.lru.put("info/1", "old")
        cache.invalidate("info/1")
        backend = Backend()
        value, pending = cache.get("info/1", backend.fetch)
        self.assertIsNone(value)
        self.assertIsNotNone(pending)
        self.assertEqual(len(backend.fetches), 1)
        self.assertEqual(cache.lru.stats.invalidations, 1)

    def test_fetch_started_before_invalidation_is_not_stored(self) -> None:
        """A fetch under way when its key is invalidated answers its waiters but is not cached."""
        cache = make_cache()
        backend = Backend()
        _, before = cache.get("info/1", backend.fetch)
        assert before is not None
        cache.invalidate("info/1")
        self.assertEqual(cache.inflight, 0)

        backend.fetches[0].callback("old")
        self.assertEqual(self.successResultOf(before), "old")
        self.assertNotIn("info/1", cache.lru)

    def test_request_after_invalidation_starts_a_new_fetch(self) -> None:
        """A get after the invalidation does not join the stale fetch; the fresh one is cached."""
        cache = make_cache()
        backend = Backend()
        _, before = cache.get("info/1", backend.fetch)
        cache.invalidate("info/1")
        _, after = cache.get("info/1", backend.fetch)
        assert before is not None and after is not None
        self.assertEqual(len(backend.fetches), 2)
        stale, fresh = backend.fetches

        stale.callback("old")
        self.assertEqual(self.successResultOf(before), "old")
        self.assertNoResult(after)  # not answered with the stale value
        self.assertNotIn("info/1", cache.lru)
        self.assertEqual(cache.inflight, 1)  # the fresh fetch is still registered

        fresh.callback("new")
        self.assertEqual(self.successResultOf(after), "new")
        self.assertEqual(cache.lru.get("info/1"), "new")
        self.assertEqual(cache.inflight, 0)

    def test_stale_fetch_completing_last_does_not_overwrite(self) -> None:
        """When the fresh fetch finishes first, the stale one finishing later leaves the fresh value."""
        cache = make_cache()
        backend = Backend()
        _, before = cache.get("info/1", backend.fetch)
        cache.invalidate("info/1")
        _, after = cache.get("info/1", backend.fetch)
        stale, fresh = backend.fetches

        fresh.callback("new")
        stale.callback("old")
        assert before is not None and after is not None
        self.assertEqual(self.successResultOf(after), "new")
        self.assertEqual(self.successResultOf(before), "old")
        self.assertEqual(cache.lru.get("info/1"), "new")
        self.assertEqual(cache.inflight, 0)

    def test_invalidating_another_key_does_not_mark_the_fetch_stale(self) -> None:
        """Only the invalidated key's fetch is guarded; others still fill the cache."""
        cache = make_cache()
        backend = Backend()
        _, pending = cache.get("info/1", backend.fetch)
        cache.invalidate("info/2")
        backend.fetches[0].callback("book 1")
        assert pending is not None
        self.assertEqual(self.successResultOf(pending), "book 1")
        self.assertEqual(cache.lru.get("info/1"), "book 1")


class FailureTests(SynchronousTestCase):
    def test_failure_reaches_every_waiter_and_is_not_cached(self) -> None:
        """A failed fetch errbacks all coalesced waiters, caches nothing, and the next get retries."""
        cache = make_cache()
        backend = Backend()
        _, first = cache.get("info/1", backend.fetch)
        _, second = cache.get("info/1", backend.fetch)
        assert first is not None and second is not None

        backend.fetches[0].errback(Unavailable("catalog-1 is unreachable"))
        for waiter in (first, second):
            failure = self.failureResultOf(waiter, Unavailable)
            self.assertEqual(failure.value.message, "catalog-1 is unreachable")
        self.assertNotIn("info/1", cache.lru)
        self.assertEqual(cache.inflight, 0)

        _, retry = cache.get("info/1", backend.fetch)
        self.assertEqual(len(backend.fetches), 2)
        backend.fetches[1].callback("book 1")
        assert retry is not None
        self.assertEqual(self.successResultOf(retry), "book 1")
        self.assertEqual(cache.lru.get("info/1"), "book 1")

    def test_non_cacheable_values_are_returned_but_not_stored(self) -> None:
        """A value the cacheable predicate refuses reaches every waiter but is not cached."""
        cache = make_cache(cacheable=lambda value: not value.startswith("error"))
        backend = Backend()
        _, first = cache.get("info/99", backend.fetch)
        _, second = cache.get("info/99", backend.fetch)
        backend.fetches[0].callback("error: no book 99")
        assert first is not None and second is not None
        self.assertEqual(self.successResultOf(first), "error: no book 99")
        self.assertEqual(self.successResultOf(second), "error: no book 99")
        self.assertNotIn("info/99", cache.lru)
        self.assertEqual(cache.inflight, 0)

        cache.get("info/99", backend.fetch)
        self.assertEqual(len(backend.fetches), 2)

    def test_cacheable_values_are_stored(self) -> None:
        """The same predicate lets accepted values into the cache."""
        cache = make_cache(cacheable=lambda value: not value.startswith("error"))
        _, pending = cache.get("info/1", lambda: succeed("book 1"))
        assert pending is not None
        self.assertEqual(self.successResultOf(pending), "book 1")
        self.assertEqual(cache.lru.get("info/1"), "book 1")


class PageFillGuardTests(SynchronousTestCase):
    """Invalidating a listing's prefix covers every page of it, cached or being fetched."""

    def page(self, n: int, topic: str | None = None) -> PageKey:
        page = Page(limit=10, offset=10 * n)
        return search_page_key(topic, page) if topic is not None else all_books_page_key(page)

    def test_prefix_drops_every_cached_page(self) -> None:
        cache = make_cache(capacity=10)
        for n in range(3):
            cache.lru.put(self.page(n), f"page {n}")
        cache.lru.put(self.page(0, "new"), "new page 0")
        cache.invalidate(ALL_BOOKS_KEY)
        self.assertEqual(cache.lru.keys(), [self.page(0, "new")])
        cache.invalidate(search_key("new"))
        self.assertEqual(cache.lru.keys(), [])

    def test_page_fill_in_flight_is_not_stored(self) -> None:
        """Fills of two pages under way when the listing is invalidated: both answer their waiters,
        neither is cached, and later requests fetch afresh instead of joining them."""
        cache = make_cache(capacity=10)
        backend = Backend()
        _, first = cache.get(self.page(0), backend.fetch)
        _, second = cache.get(self.page(1), backend.fetch)
        cache.invalidate(ALL_BOOKS_KEY)
        self.assertEqual(cache.inflight, 0)
        _, later = cache.get(self.page(1), backend.fetch)
        assert first is not None and second is not None and later is not None
        self.assertEqual(len(backend.fetches), 3)

        backend.fetches[0].callback("old 0")
        backend.fetches[1].callback("old 1")
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), ("old 0", "old 1"))
        self.assertNoResult(later)
        self.assertEqual(cache.lru.keys(), [])

        backend.fetches[2].callback("new 1")
        self.assertEqual(self.successResultOf(later), "new 1")
        self.assertEqual(cache.lru.keys(), [self.page(1)])
        self.assertEqual(cache.inflight, 0)

    def test_other_listings_fills_are_kept(self) -> None:
        """Invalidating one topic leaves the fills of another topic's pages and of single books."""
        cache = make_cache(capacity=10)
        backend = Backend()
        _, new = cache.get(self.page(0, "new"), backend.fetch)
        _, other = cache.get(self.page(0, "newer"), backend.fetch)
        _, book = cache.get("info/1", backend.fetch)
        cache.invalidate(search_key("new"))
        self.assertEqual(cache.inflight, 2)
        for d, value in zip(backend.fetches, ("a", "b", "c"), strict=True):
            d.callback(value)
        assert new is not None and other is not None and book is not None
        self.assertEqual(sorted(cache.lru.keys()), sorted([self.page(0, "newer"), "info/1"]))

    def test_a_finished_fill_leaves_no_trace(self) -> None:
        """Fills that ended are forgotten under their prefix too (no growth with every page read)."""
        cache = make_cache(capacity=1)
        for n in range(5):
            cache.get(self.page(n), lambda n=n: succeed(f"page {n}"))  # type: ignore[misc]
        self.assertEqual((cache.inflight, cache._inflight_by_prefix), (0, {}))


class VersionFloorTests(SynchronousTestCase):
    """An invalidation raises the floor: no answer older than its write is stored after it."""

    def make(self) -> tuple[ReadThroughCache[str, tuple[int, str]], list[Deferred[tuple[int, str]]]]:
        cache: ReadThroughCache[str, tuple[int, str]] = ReadThroughCache(
            LRUCache(5), version=lambda value: value[0]
        )
        fetches: list[Deferred[tuple[int, str]]] = []

        def fetch() -> Deferred[tuple[int, str]]:
            d: Deferred[tuple[int, str]] = Deferred()
            fetches.append(d)
            return d

        self.fetch = fetch
        return cache, fetches

    def test_answer_older_than_the_floor_is_returned_not_stored(self) -> None:
        """Write 7 was announced while a follower still had 6: its answer reaches the request
        (the write is not acknowledged yet) but is not cached; the next miss asks again."""
        cache, fetches = self.make()
        cache.invalidate("info/1", 7)
        _, pending = cache.get("info/1", self.fetch)
        assert pending is not None
        fetches[0].callback((6, "old"))
        self.assertEqual(self.successResultOf(pending), (6, "old"))
        self.assertNotIn("info/1", cache.lru)
        _, again = cache.get("info/1", self.fetch)
        assert again is not None
        fetches[1].callback((7, "new"))
        self.assertEqual(cache.lru.peek("info/1"), (7, "new"))

    def test_floor_is_taken_when_the_fill_starts(self) -> None:
        """A fill of another key that started before write 9 was announced keeps the floor it
        started with (8): its key was not written, and its answer is as new as it must be."""
        cache, fetches = self.make()
        cache.invalidate("info/1", 8)
        _, pending = cache.get("info/2", self.fetch)
        assert pending is not None
        cache.invalidate("info/1", 9)
        fetches[0].callback((8, "two"))
        self.assertEqual(self.successResultOf(pending), (8, "two"))
        self.assertEqual(cache.lru.peek("info/2"), (8, "two"))
        self.assertEqual(cache.floor, 9)

    def test_floor_never_goes_down(self) -> None:
        cache, _ = self.make()
        cache.invalidate("info/1", 9)
        cache.invalidate("info/2", 4)  # a push that overtook a newer one on the way
        self.assertEqual(cache.floor, 9)


class InvalidateAllTests(SynchronousTestCase):
    """What the front end does when another replica takes over sequencing catalog writes."""

    def test_drops_every_cached_key(self) -> None:
        cache = make_cache()
        cache.lru.put("info/1", "book 1")
        cache.lru.put(all_books_page_key(Page(limit=10)), "page")
        self.assertEqual(cache.invalidate_all(), 2)
        self.assertEqual(cache.lru.keys(), [])

    def test_a_fill_in_flight_is_not_stored(self) -> None:
        """A fetch started before the takeover still answers its waiters, but is not cached,
        and a request after the takeover starts a fetch of its own."""
        cache = make_cache()
        backend = Backend()
        _, before = cache.get("info/1", backend.fetch)
        cache.invalidate_all()
        self.assertEqual(cache.inflight, 0)
        _, after = cache.get("info/1", backend.fetch)
        self.assertEqual(len(backend.fetches), 2)
        backend.fetches[0].callback("from the old sequencer")
        assert before is not None and after is not None
        self.assertEqual(self.successResultOf(before), "from the old sequencer")
        self.assertNotIn("info/1", cache.lru)
        backend.fetches[1].callback("book 1")
        self.assertEqual(self.successResultOf(after), "book 1")
        self.assertEqual(cache.lru.peek("info/1"), "book 1")


class ObservedWriteTests(SynchronousTestCase):
    """An answer can show a write whose invalidation the cache has not had (it is on its way, or
    it was lost and the write failed, though committed): until an invalidation that new arrives,
    no entry older than that answer is served (simulator seed 148)."""

    def cache(self) -> ReadThroughCache[str, tuple[str, int]]:
        return ReadThroughCache(LRUCache(5), version=lambda value: value[1])

    def test_an_older_entry_is_not_served_once_a_newer_write_is_seen(self) -> None:
        cache = self.cache()
        cache.get("info/1", lambda: succeed(("book 1 at 13", 13)))
        self.assertEqual(cache.get("info/1", Backend().fetch), (("book 1 at 13", 13), None))
        cache.get("info/all?page", lambda: succeed(("listing at 14", 14)))  # a write 14 we were not told of
        backend = Backend()
        value, pending = cache.get("info/1", backend.fetch)
        self.assertIsNone(value)  # a miss: the entry may predate write 14
        self.assertEqual(len(backend.fetches), 1)
        backend.fetches[0].callback(("book 1 at 14", 14))
        assert pending is not None
        self.assertEqual(self.successResultOf(pending), ("book 1 at 14", 14))
        self.assertEqual(cache.get("info/1", Backend().fetch), (("book 1 at 14", 14), None))

    def test_served_again_once_told_of_that_write(self) -> None:
        """An invalidation as new as the newest write seen: the entries it did not name are current."""
        cache = self.cache()
        cache.get("info/1", lambda: succeed(("book 1 at 13", 13)))
        cache.get("info/2", lambda: succeed(("book 2 at 14", 14)))
        self.assertFalse(cache.fresh(("book 1 at 13", 13)))
        cache.invalidate("info/3", 14)
        self.assertEqual(cache.get("info/1", Backend().fetch), (("book 1 at 13", 13), None))

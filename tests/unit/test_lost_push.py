"""A catalog write whose invalidation push to the front end is lost (simulator seed 148 of
``--runs 150 --seed 1`` on 986d1e2): the write fails (503), but it is committed on every
catalog replica, so a read of a page the front end did not cache shows it; the front end
must not go on answering reads of that book with the price before it."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.memcluster import MemCluster


class LostPushTests(SynchronousTestCase):
    def test_cached_book_not_older_than_a_listing_after_a_lost_push(self) -> None:
        cluster = MemCluster(self)
        old = cluster.get("/bazar/info/1").json["price"]  # now cached at the front end
        cluster.unreachable("frontend")  # the push of the next write is lost
        reply = cluster.internal("PUT", "catalog-1", "/catalog/books/1/price", {"price": 1006.0})
        cluster.unreachable("frontend", False)
        self.assertEqual(reply.code, 503, reply.json)  # not acknowledged
        self.assertEqual([cluster.book(n, 1)["price"] for n in cluster.catalog_names], [1006.0] * 3)
        listing = {book["id"]: book["price"] for book in cluster.get("/bazar/info/all").json}
        self.assertEqual(listing[1], 1006.0)
        book = cluster.get("/bazar/info/1").json
        self.assertEqual(book["price"], 1006.0, f"read went back in time: {book['price']} (was {old})")

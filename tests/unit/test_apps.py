"""The report's walkthrough, run against the whole cluster in memory (see ``memcluster``)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bazar.catalog.store import SEED_BOOKS
from tests.unit.memcluster import MemCluster

TITLES = {book_id: title for book_id, title, *_ in SEED_BOOKS}
STOCK = {book_id: quantity for book_id, *_, quantity in SEED_BOOKS}


class ClusterTestCase(SynchronousTestCase):
    cache_size = 5

    def setUp(self) -> None:
        self.cluster = MemCluster(self, cache_size=self.cache_size)
        self.addCleanup(self.cluster.close)

    def assertEverywhere(self, book_id: int, **fields: object) -> None:
        """Every catalog replica's own store has ``fields`` for ``book_id``."""
        for name in self.cluster.catalog_names:
            book = self.cluster.book(name, book_id)
            self.assertEqual({k: book[k] for k in fields}, fields, name)


class DispatchTests(ClusterTestCase):
    def test_each_url_reaches_its_own_app(self) -> None:
        """The in-memory transport delivers each request to the app at that URL's host and port."""
        for name in self.cluster.catalog_names + self.cluster.order_names:
            code, headers, status = self.cluster.internal("GET", name, "/internal/status")
            self.assertEqual((code, status["name"], headers["x-bazar-replica"]), (200, name, name))
        self.assertIn("openapi", self.cluster.get("/openapi.json").json)
        self.assertEqual([s.name for s in self.cluster.dispatch.seen][-1], "frontend")


class ReadTests(ClusterTestCase):
    def test_info_all_lists_seven_books_by_id(self) -> None:
        """/bazar/info/all: the seven seeded books, sorted by id, every field present."""
        code, _, books = self.cluster.get("/bazar/info/all")
        self.assertEqual(code, 200)
        self.assertEqual([b["id"] for b in books], list(range(7)))
        for book in books:
            self.assertEqual(set(book), {"id", "title", "topic", "price", "quantity"})
            self.assertEqual(book["title"], TITLES[book["id"]])

    def test_info_miss_then_hit(self) -> None:
        """The first read is a miss fetched from a replica; the second a hit with the same body."""
        code, headers, first = self.cluster.get("/bazar/info/0")
        self.assertEqual((code, headers["x-bazar-cache"]), (200, "miss"))
        self.assertEqual(headers["x-bazar-replica"], "catalog-1")
        self.assertEqual(first["title"], TITLES[0])
        code, headers, second = self.cluster.get("/bazar/info/0")
        self.assertEqual((code, headers["x-bazar-cache"]), (200, "hit"))
        self.assertEqual(second, first)
        catalog_reads = [s for s in self.cluster.dispatch.seen if s.path.startswith("/catalog/")]
        self.assertEqual([(s.path, s.query) for s in catalog_reads], [("/catalog/lookup", "ids=0")])

    def test_misses_rotate_over_catalog_replicas(self) -> None:
        """Consecutive misses are served by catalog-1, -2, -3, then catalog-1 again."""
        served = []
        for book_id in range(4):
            _, headers, book = self.cluster.get(f"/bazar/info/{book_id}")
            self.assertEqual(headers["x-bazar-cache"], "miss")
            self.assertEqual(book["id"], book_id)
            served.append(headers["x-bazar-replica"])
        self.assertEqual(served, ["catalog-1", "catalog-2", "catalog-3", "catalog-1"])

    def test_errors_are_not_cached(self) -> None:
        """A 404 from the catalog is passed on but not cached: the next read asks again."""
        for _ in range(2):
            code, headers, body = self.cluster.get("/bazar/info/99")
            self.assertEqual((code, headers["x-bazar-cache"]), (404, "miss"))
            self.assertEqual(body["error"]["code"], 404)
        self.assertEqual(self.cluster.cached_keys(), [])

    def test_search_by_topic(self) -> None:
        """A URL-encoded topic finds its books; an unknown topic is an empty list, not an error."""
        code, headers, books = self.cluster.get("/bazar/search/distributed%20systems")
        self.assertEqual(code, 200)
        self.assertEqual(headers["x-bazar-cache"], "miss")
        self.assertEqual([b["id"] for b in books], [0, 1])
        self.assertEqual({b["topic"] for b in books}, {"distributed systems"})
        self.assertIn("search/distributed systems?limit=100&offset=0", self.cluster.cached_keys())
        code, _, books = self.cluster.get("/bazar/search/no%20such%20topic")
        self.assertEqual((code, books), (200, []))

    def test_concurrent_misses_share_one_fetch(self) -> None:
        """Two misses for one key while the first fetch is in flight make one backend request."""
        held = self.cluster.hold_next("catalog-1")
        first = self.cluster.send("GET", "/bazar/info/2")
        second = self.cluster.send("GET", "/bazar/info/2")
        self.cluster.flush()
        self.assertTrue(held.arrived)
        held.release()
        self.assertEqual(self.cluster.wait(first).json, self.cluster.wait(second).json)
        self.assertEqual(len([s for s in self.cluster.dispatch.seen if s.path == "/catalog/lookup"]), 1)
        self.assertEqual(self.cluster.get("/bazar/info/2").headers["x-bazar-cache"], "hit")


class LRUTests(ClusterTestCase):
    def test_eviction_order_visible_in_cluster_view(self) -> None:
        """At size 5 the least recently used key goes first; a hit makes a key recent again."""
        for book_id in range(5):
            self.cluster.get(f"/bazar/info/{book_id}")
        self.assertEqual(self.cluster.get("/bazar/info/0").headers["x-bazar-cache"], "hit")
        self.cluster.get("/bazar/info/5")
        code, _, view = self.cluster.get("/bazar/cluster")
        self.assertEqual(code, 200)
        cache = view["cache"]
        self.assertEqual(cache["keys"], ["info/2", "info/3", "info/4", "info/0", "info/5"])
        self.assertEqual((cache["capacity"], cache["size"], cache["evictions"]), (5, 5, 1))
        self.assertEqual((cache["hits"], cache["misses"]), (1, 6))
        self.assertEqual(self.cluster.get("/bazar/info/1").headers["x-bazar-cache"], "miss")
        self.assertEqual(self.cluster.get("/bazar/cluster").json["cache"]["keys"][0], "info/3")


class WriteTests(ClusterTestCase):
    def test_update_price_invalidates_and_replicates(self) -> None:
        """A new price is on every replica, out of the cache, and what every later read shows."""
        for path in ("/bazar/info/1", "/bazar/info/all", "/bazar/search/distributed%20systems"):
            self.cluster.get(path)
        self.cluster.get("/bazar/info/4")  # an unrelated entry, which must stay
        self.assertEqual(self.cluster.get("/bazar/info/1").headers["x-bazar-cache"], "hit")

        code, _, book = self.cluster.put("/bazar/update_price/1", {"price": 33.5})
        self.assertEqual(code, 200)
        self.assertEqual(book["id"], 1)
        self.assertEqual(book["title"], TITLES[1])
        self.assertEqual(book["price"], 33.5)
        self.assertEqual(self.cluster.cached_keys(), ["info/4"])
        self.assertEverywhere(1, price=33.5)

        served = set()
        for _ in range(3):
            _, headers, book = self.cluster.get("/bazar/info/1")
            self.assertEqual(headers["x-bazar-cache"], "miss")
            self.assertEqual(book["price"], 33.5)
            served.add(headers["x-bazar-replica"])
            # Drop it again, as the sequencer would, so that the next replica answers.
            self.cluster.internal("POST", "frontend", "/internal/invalidate", {"keys": ["info/1"]})
        self.assertEqual(served, set(self.cluster.catalog_names))
        for name in self.cluster.catalog_names:
            self.assertEqual(self.cluster.internal("GET", name, "/catalog/books/1").json["price"], 33.5, name)
        _, _, books = self.cluster.get("/bazar/info/all")
        self.assertEqual(books[1]["price"], 33.5)

    def test_purchase(self) -> None:
        """A purchase answers with the order and the key it was made under (one the front end
        gave it: the client sent none), takes the stock everywhere and records the order
        everywhere."""
        self.cluster.get("/bazar/info/1")
        code, headers, order = self.cluster.post("/bazar/purchase/1", {"quantity": 2})
        self.assertEqual(code, 200)
        key = headers["idempotency-key"]
        self.assertRegex(key, "^bazar-[0-9a-f]{32}$")
        self.assertEqual(
            order,
            {
                "order_id": 1,
                "book_id": 1,
                "title": TITLES[1],
                "price": 22.35,
                "quantity": 2,
                "message": f"bought book {TITLES[1]}",
                "idempotency_key": key,
            },
        )
        self.assertEverywhere(1, quantity=STOCK[1] - 2)
        self.assertNotIn("info/1", self.cluster.cached_keys())
        self.assertEqual(self.cluster.get("/bazar/info/1").json["quantity"], STOCK[1] - 2)
        expected = {k: v for k, v in order.items() if k not in ("message", "idempotency_key")}
        for name in self.cluster.order_names:
            self.assertEqual(self.cluster.orders(name), [expected], name)

    def test_purchase_without_body_buys_one(self) -> None:
        """An empty purchase body buys one copy."""
        code, _, order = self.cluster.post("/bazar/purchase/3")
        self.assertEqual((code, order["quantity"]), (200, 1))
        self.assertEverywhere(3, quantity=STOCK[3] - 1)

    def test_purchases_through_followers_are_forwarded(self) -> None:
        """Round robin sends purchases to order-1, -2, -3; followers forward, every store has every order."""
        received = []
        for book_id in (0, 2, 5):
            code, headers, order = self.cluster.post(f"/bazar/purchase/{book_id}")
            self.assertEqual((code, order["book_id"]), (200, book_id))
            received.append(headers["x-bazar-replica"])
        self.assertEqual(received, ["order-1", "order-2", "order-3"])
        purchases = [s.name for s in self.cluster.dispatch.seen if s.path.startswith("/order/purchase/")]
        self.assertEqual(purchases, ["order-1", "order-2", "order-1", "order-3", "order-1"])
        buys = [s.name for s in self.cluster.dispatch.seen if s.path.endswith("/buy")]
        self.assertEqual(buys, ["catalog-1"] * 3)
        for name in self.cluster.order_names:
            orders = self.cluster.orders(name)
            self.assertEqual([(o["order_id"], o["book_id"]) for o in orders], [(1, 0), (2, 2), (3, 5)], name)
        for book_id in (0, 2, 5):
            self.assertEverywhere(book_id, quantity=STOCK[book_id] - 1)

    def test_update_quantity_set(self) -> None:
        """{"quantity": n} sets the stock on every replica."""
        code, _, book = self.cluster.put("/bazar/update_quantity/2", {"quantity": 17})
        self.assertEqual((code, book["id"], book["quantity"]), (200, 2, 17))
        self.assertEverywhere(2, quantity=17)

    def test_update_quantity_delta(self) -> None:
        """{"delta": n} adds to (or takes from) the stock on every replica."""
        code, _, book = self.cluster.put("/bazar/update_quantity/2", {"delta": 5})
        self.assertEqual((code, book["quantity"]), (200, STOCK[2] + 5))
        code, _, book = self.cluster.put("/bazar/update_quantity/2", {"delta": -3})
        self.assertEqual((code, book["quantity"]), (200, STOCK[2] + 2))
        self.assertEverywhere(2, quantity=STOCK[2] + 2)

    def test_update_quantity_below_zero_conflicts(self) -> None:
        """A delta that would take the stock below zero is a 409, and nothing changes anywhere."""
        code, _, body = self.cluster.put("/bazar/update_quantity/2", {"delta": -(STOCK[2] + 1)})
        self.assertEqual(code, 409)
        self.assertEqual(body["error"]["code"], 409)
        self.assertEverywhere(2, quantity=STOCK[2])
        self.assertEqual(self.cluster.internal("GET", "catalog-1", "/internal/status").json["last_seq"], 0)

    def test_orders_list_and_lookup(self) -> None:
        """/bazar/orders lists every order by id; /bazar/orders/<id> finds one; an unknown id is 404."""
        code, _, orders = self.cluster.get("/bazar/orders")
        self.assertEqual((code, orders), (200, []))
        self.cluster.post("/bazar/purchase/4", {"quantity": 3})
        self.cluster.post("/bazar/purchase/6")
        code, _, orders = self.cluster.get("/bazar/orders")
        self.assertEqual(code, 200)
        self.assertEqual(
            [(o["order_id"], o["book_id"], o["quantity"]) for o in orders], [(1, 4, 3), (2, 6, 1)]
        )
        code, _, order = self.cluster.get("/bazar/orders/2")
        self.assertEqual((code, order), (200, orders[1]))
        code, _, body = self.cluster.get("/bazar/orders/99")
        self.assertEqual(code, 404)
        self.assertEqual(body["error"]["code"], 404)

    def test_cache_fill_racing_a_write_is_not_kept(self) -> None:
        """A miss answered before a write but delivered after it must not cache the old value."""
        held = self.cluster.hold_next("catalog-1")
        early = self.cluster.send("GET", "/bazar/info/1")
        self.cluster.flush()
        self.assertTrue(held.arrived)  # catalog-1 has read the old price; its answer waits

        code, _, book = self.cluster.put("/bazar/update_price/1", {"price": 9.5})
        self.assertEqual((code, book["price"]), (200, 9.5))

        held.release()
        code, headers, old = self.cluster.wait(early)
        self.assertEqual((code, headers["x-bazar-replica"]), (200, "catalog-1"))
        self.assertEqual(old["price"], 22.35)  # the request began before the write: fine
        self.assertNotIn("info/1", self.cluster.cached_keys())
        code, headers, now = self.cluster.get("/bazar/info/1")
        self.assertEqual((headers["x-bazar-cache"], now["price"]), ("miss", 9.5))
        self.assertEqual(self.cluster.get("/bazar/info/1").json["price"], 9.5)

    def test_follower_still_applying_a_write_the_front_end_was_told_of(self) -> None:
        """The sequencer tells the front end while the followers apply: a read served in between
        by a follower that has not applied the write yet answers the old price (the write is
        not acknowledged) but is not cached, so once the write is acknowledged no read sees
        the old price."""
        frontend = self.cluster.frontend
        frontend.health.current_epoch("catalog", 1)
        frontend.health.report_sequencer("catalog", 1, "catalog-1")  # as its probe would
        self.cluster.get("/bazar/info/1")
        delayed = self.cluster.delay_next("catalog-2")
        write = self.cluster.send("PUT", "/bazar/update_price/1", {"price": 9.5})
        self.cluster.flush()
        self.assertTrue(delayed.arrived)
        self.assertNotIn("info/1", self.cluster.cached_keys())  # told already
        self.assertEqual(self.cluster.book("catalog-2", 1)["price"], 22.35)  # not applied yet
        for replica in frontend.config.catalog:
            frontend.health.mark(replica, replica.name == "catalog-2")  # read from catalog-2 only
        code, headers, old = self.cluster.get("/bazar/info/1")
        self.assertEqual((code, headers["x-bazar-replica"], old["price"]), (200, "catalog-2", 22.35))
        self.assertNotIn("info/1", self.cluster.cached_keys())

        delayed.deliver()
        code, _, book = self.cluster.wait(write)
        self.assertEqual((code, book["price"]), (200, 9.5))
        for expected_cache in ("miss", "hit"):
            code, headers, now = self.cluster.get("/bazar/info/1")
            self.assertEqual((headers["x-bazar-cache"], now["price"]), (expected_cache, 9.5))

    def test_replica_answers_carry_their_sequence_number(self) -> None:
        """X-Bazar-Seq: what the replica had applied when the request arrived."""
        self.cluster.put("/bazar/update_price/0", {"price": 1.0})
        self.cluster.put("/bazar/update_price/0", {"price": 2.0})
        for name in self.cluster.catalog_names:
            reply = self.cluster.internal("GET", name, "/catalog/books/0")
            self.assertEqual(reply.headers["x-bazar-seq"], "2", name)
        refused = self.cluster.request("GET", "/catalog/books/0", to="catalog-2")  # no secret
        self.assertEqual(refused.code, 401)
        self.assertNotIn("x-bazar-seq", refused.headers)  # nothing about the data without the secret
        self.assertNotIn("x-bazar-sequencer", refused.headers)
        self.assertNotIn("x-bazar-epoch", refused.headers)

    def test_replica_answers_carry_their_epoch(self) -> None:
        """X-Bazar-Epoch, as the front end's client reads it (1: no replica has taken over yet)."""
        for name in (*self.cluster.catalog_names, *self.cluster.order_names):
            self.assertEqual(
                self.cluster.internal("GET", name, "/internal/status").headers["x-bazar-epoch"], "1"
            )
        response = self.successResultOf(
            self.cluster.client().request("GET", self.cluster.config.catalog[1], "/catalog/books/0")
        )
        self.assertEqual((response.code, response.epoch, response.replica), (200, 1, "catalog-2"))

    def test_purchase_runs_to_its_end_when_the_client_leaves(self) -> None:
        """The client gives up while the catalog is taking the stock: the front end, the order
        sequencer and the catalog all finish the purchase anyway (cancelled half-way, the
        stock would be gone with no order), and the front end caches no old stock."""
        self.cluster.get("/bazar/info/1")
        held = self.cluster.hold_next("catalog-1")
        purchase = self.cluster.send("POST", "/bazar/purchase/1")
        self.cluster.flush()
        self.assertTrue(held.arrived)  # stock taken; the answer to order-1 waits
        purchase.cancel()  # the client closes its connection
        self.cluster.flush()
        self.failureResultOf(purchase)
        held.release()
        for name in self.cluster.order_names:
            self.assertEqual([o["book_id"] for o in self.cluster.orders(name)], [1], name)
        for name in self.cluster.catalog_names:
            self.assertEqual(self.cluster.book(name, 1)["quantity"], 59, name)
        self.assertEqual(self.cluster.get("/bazar/info/1").json["quantity"], 59)
        self.assertEqual(self.cluster.stock_problems(), [])

    def test_order_sequencer_buys_at_the_catalog_sequencer_it_was_told_of(self) -> None:
        """Sent to a catalog follower once (which forwards), order-1 learns from the answer
        which replica sequences catalog writes and goes there directly from then on."""
        order = self.cluster.apps["order-1"]
        order.catalogs.heard("catalog-2")
        for _ in range(3):
            self.assertEqual(self.cluster.post("/bazar/purchase/1").code, 200)
        buys = [s.name for s in self.cluster.dispatch.seen if s.path == "/catalog/books/1/buy"]
        self.assertEqual(buys, ["catalog-2", "catalog-1", "catalog-1", "catalog-1"])
        reply = self.cluster.internal("GET", "catalog-3", "/catalog/books/1")
        self.assertEqual(reply.headers["x-bazar-sequencer"], "catalog-1")

    def test_cluster_view_after_writes(self) -> None:
        """After writes, every replica is healthy and each role's replicas have one digest and last_seq."""
        self.cluster.put("/bazar/update_price/0", {"price": 1.0})
        self.cluster.post("/bazar/purchase/1")
        self.cluster.post("/bazar/purchase/1")
        self.cluster.put("/bazar/update_quantity/6", {"delta": 1})
        (probe,) = self.cluster.probe  # healthy: as a probe found it (none has until now)
        probed = probe.probe_all()
        self.cluster.flush()
        self.successResultOf(probed)
        code, _, view = self.cluster.get("/bazar/cluster")
        self.assertEqual(code, 200)
        replicas = view["replicas"]
        self.assertEqual([r["name"] for r in replicas], self.cluster.catalog_names + self.cluster.order_names)
        self.assertTrue(all(r["healthy"] for r in replicas))
        for role, sequencer, last_seq in (("catalog", "catalog-1", 4), ("order", "order-1", 2)):
            mine = [r for r in replicas if r["role"] == role]
            self.assertEqual(len({r["digest"] for r in mine}), 1, role)
            self.assertEqual({(r["last_seq"], r["sequencer"]) for r in mine}, {(last_seq, sequencer)})
        self.assertNotEqual(replicas[0]["digest"], replicas[3]["digest"])
        self.cluster.service.stopService()  # the processes' timers (heartbeats, watchdogs, scans)
        self.assertEqual(self.cluster.clock.getDelayedCalls(), [])  # every deadline was cancelled

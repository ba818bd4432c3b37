"""Takes without orders (``bazar.order.orphans``): every purchase's take at the catalog and its
order are tied by the purchase's key, and an order sequencer that takes over, and every
SCAN_INTERVAL seconds after, records the order of any take that has none.

* ``TakesWithoutOrdersTests``: an order sequencer replaced between the take and the order,
  in the in-memory cluster (``MemCluster``: epochs, as in production); the stock is
  conserved (``tests.invariants``) once the new sequencer has scanned.
* ``ScanTests``: scans at a sequencer that stays, next to purchases on their way.
* ``CatalogTakesTests``: the catalog's list of takes (``/catalog/takes``).
* ``TimerTests``: when the scans run.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bazar.catalog.store import CatalogStore, take_of
from bazar.order.orphans import CHECK_INTERVAL, MAX_TAKES_PAGE, SCAN_INTERVAL
from bazar.order.store import OrderStore
from bazar.protocol import TAKES_PATH
from bazar.runners import InlineRunner
from tests.unit.memcluster import MemCluster, Reply
from tests.unit.test_idempotency import KEY, in_doubt_advice


class TakesWithoutOrdersTests(SynchronousTestCase):
    """A purchase without a key whose order sequencer is replaced between taking the stock and
    recording the order: the client is told the key it was given, and the new sequencer
    records the order (``bazar.order.orphans``), so the stock is conserved."""

    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def stock(self, book: int) -> list[int]:
        return [self.cluster.book(name, book)["quantity"] for name in self.cluster.catalog_names]

    def orders(self, name: str) -> list[tuple[int, int]]:
        return [(o["book_id"], o["quantity"]) for o in self.cluster.orders(name)]

    def assertInDoubt(self, reply: Reply) -> str:
        """A 503 that gives the purchase's key (header, body, message) and says how to find out
        whether it went through; the key."""
        self.assertEqual(reply.code, 503, reply.json)
        key = reply.headers["idempotency-key"]
        self.assertEqual(reply.json["idempotency_key"], key)
        message = reply.json["error"]["message"]
        self.assertTrue(message.endswith(in_doubt_advice(key)), message)
        self.assertEqual(message.count(key), 1, message)
        self.assertEqual(reply.headers["retry-after"], "1")
        return key

    def replaced_after_the_take(self, told: bool) -> Reply:
        """An unkeyed purchase of book 3 at order-1: the catalog takes the stock, then order-2
        takes over before order-1 records the order. ``told``: order-1 hears of it before the
        catalog answers (it records nothing); else it was hung, and tries to."""
        held = self.cluster.hold_next("catalog-1")
        purchase = self.cluster.send("POST", "/bazar/purchase/3", {"quantity": 1})
        self.cluster.flush()
        self.assertTrue(held.arrived)
        self.assertEqual(self.stock(3), [64, 64, 64])  # taken, replicated, not answered yet
        if told:
            self.cluster.take_over("order-2", "order-3", "order-1")
        else:
            self.cluster.unreachable("order-1")  # it hears nothing of the election
            self.cluster.take_over("order-2", "order-3")
            self.cluster.unreachable("order-1", False)
        held.release()
        return self.cluster.wait(purchase)

    def assertResolved(self, key: str) -> dict[str, Any]:
        """The take has its order on every order replica (after the new sequencer's scan)."""
        self.assertEqual(self.stock(3), [64, 64, 64])
        for name in ("order-2", "order-3"):
            self.assertEqual([o for o in self.orders(name) if o[0] == 3], [(3, 1)], name)
        self.assertEqual(self.cluster.stock_problems(orders=("order-2", "order-3")), [])
        again = self.cluster.post("/bazar/purchase/3", {"quantity": 1}, headers={"Idempotency-Key": key})
        self.assertEqual((again.code, again.json["idempotency_key"]), (200, key), again.json)
        self.assertEqual(self.stock(3), [64, 64, 64])
        self.assertEqual(self.cluster.stock_problems(), [])
        return dict(again.json)

    def test_replaced_sequencer_that_knows_it(self) -> None:
        """order-1 learns of epoch 2 while the catalog answers: 503 with the key, and order-2
        records the order at its first scan; the key, asked again, returns that order."""
        reply = self.replaced_after_the_take(told=True)
        key = self.assertInDoubt(reply)
        self.assertTrue(key.startswith("bazar-"), key)
        self.assertIn("order-1 no longer sequences orders", reply.json["error"]["message"])
        self.assertEqual([self.orders(name) for name in self.cluster.order_names], [[], [], []])
        self.assertNotEqual(self.cluster.stock_problems(), [])  # the take has no order yet

        self.cluster.scan_orders()  # order-2's first scan, as its timer runs it

        order = self.assertResolved(key)
        self.assertEqual(order["order_id"], 1)

    def test_replaced_sequencer_that_does_not_know_it(self) -> None:
        """order-1 (hung through the election) records the order, which its followers refuse:
        503 with the key, order-1 steps down; order-2 records the order at its first scan."""
        reply = self.replaced_after_the_take(told=False)
        key = self.assertInDoubt(reply)
        self.assertIn("not acknowledged", reply.json["error"]["message"])
        self.assertIsNone(self.cluster.roles["order-1"].writer)
        self.assertEqual([self.orders(name) for name in ("order-2", "order-3")], [[], []])

        self.cluster.scan_orders()

        self.assertResolved(key)

    def test_the_new_sequencer_resolves_before_it_serves_a_purchase(self) -> None:
        """The next purchase reaches order-2 before its timer does: the orphan's order is
        recorded first (the scan of the catalog's takes comes before the new take)."""
        key = self.assertInDoubt(self.replaced_after_the_take(told=True))
        self.cluster.dispatch.seen.clear()

        bought = self.cluster.post("/bazar/purchase/4", {"quantity": 2})

        self.assertEqual(bought.code, 200, bought.json)
        self.assertEqual(self.orders("order-2"), [(3, 1), (4, 2)])
        catalog = [s.path for s in self.cluster.served("catalog-1")]
        self.assertEqual(catalog[:2], ["/catalog/takes", "/catalog/books/4/buy"], catalog)
        self.assertEqual(self.assertResolved(key)["order_id"], 1)

    def test_a_take_that_lands_after_the_first_scan_is_found_by_the_next(self) -> None:
        """order-1's buy reaches the catalog only after order-2's first scan (it was on its
        way while order-1 hung): the scan after it records the order."""
        delayed = self.cluster.delay_next("catalog-1")
        purchase = self.cluster.send("POST", "/bazar/purchase/3", {"quantity": 1})
        self.cluster.flush()
        self.assertTrue(delayed.arrived)
        self.cluster.unreachable("order-1")
        self.cluster.take_over("order-2", "order-3")
        self.cluster.scan_orders()  # finds nothing: the take has not happened
        self.cluster.unreachable("order-1", False)
        delayed.deliver()
        key = self.assertInDoubt(self.cluster.wait(purchase))
        self.assertEqual(self.orders("order-2"), [])

        self.cluster.scan_orders(SCAN_INTERVAL - 0.5)
        self.assertEqual(self.orders("order-2"), [])  # not yet time
        self.cluster.scan_orders(0.5)

        self.assertResolved(key)

    def test_a_new_sequencer_starts_from_its_logs_watermark(self) -> None:
        """Every order entry carries how far the takes were resolved; a sequencer that takes
        over reads the catalog's log from there, not from its start."""
        for book in (1, 2):
            self.assertEqual(self.cluster.post(f"/bazar/purchase/{book}").code, 200)
        self.cluster.scan_orders(SCAN_INTERVAL)  # every take so far has its order: 2
        self.assertEqual(self.cluster.apps["order-1"].orphans.watermark, 2)
        self.assertEqual(self.cluster.post("/bazar/purchase/5").code, 200)  # its entry carries 2
        self.cluster.take_over("order-2", "order-3", "order-1")
        self.cluster.dispatch.seen.clear()

        self.cluster.scan_orders()

        scans = [s.query for s in self.cluster.dispatch.seen if s.path == "/catalog/takes"]
        self.assertEqual(scans, ["after=2&limit=1000"])
        self.assertEqual(self.cluster.apps["order-2"].orphans.watermark, 3)
        self.assertEqual(self.cluster.stock_problems(), [])


class ScanTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def served(self, path: str) -> int:
        return sum(1 for seen in self.cluster.dispatch.seen if seen.path == path)

    def test_a_scan_leaves_a_purchase_on_its_way_to_it(self) -> None:
        """The stock is taken and the purchase still on its way when a scan runs: the scan
        records nothing for it and keeps its watermark below it; the purchase records its
        order, once."""
        self.cluster.clock.advance(SCAN_INTERVAL - 1)  # the scan is due before the buy's deadline
        held = self.cluster.hold_next("catalog-1")
        purchase = self.cluster.send("POST", "/bazar/purchase/3", headers=KEY)
        self.cluster.flush()
        self.assertTrue(held.arrived)
        self.cluster.scan_orders(1)
        self.assertEqual(self.served("/catalog/takes"), 1)
        self.assertEqual(self.cluster.orders("order-1"), [])
        self.assertEqual(self.cluster.apps["order-1"].orphans.watermark, 0)

        held.release()

        self.assertEqual(self.cluster.wait(purchase).code, 200)
        self.assertEqual(len(self.cluster.orders("order-1")), 1)
        self.assertEqual(self.served("/catalog/books/3/buy"), 1)  # no retry at another catalog
        self.cluster.scan_orders(SCAN_INTERVAL)
        self.assertEqual(self.cluster.apps["order-1"].orphans.watermark, 1)
        self.assertEqual(self.cluster.stock_problems(), [])

    def test_a_take_bought_at_the_catalog_with_a_key_gets_its_order(self) -> None:
        """A keyed take whose order sequencer died before recording it (the client never
        retried) gets its order at the next scan."""
        taken = self.cluster.internal(
            "POST", "catalog-2", "/catalog/books/3/buy", {"quantity": 2, "idempotency_key": "k-1"}
        )
        self.assertEqual(taken.code, 200)
        self.cluster.scan_orders(SCAN_INTERVAL)
        for name in self.cluster.order_names:
            self.assertEqual([(o["book_id"], o["quantity"]) for o in self.cluster.orders(name)], [(3, 2)])
        self.assertEqual(self.cluster.stock_problems(), [])

    def test_a_take_confirmed_after_its_purchase_failed_gets_its_order(self) -> None:
        """The catalog sequencer, cut off from its followers, takes the stock but cannot get it
        confirmed: the purchase is answered 503 (it may yet go through), and no scan lists the
        take meanwhile. Once the followers have it, the next scan records its order, and the
        key, asked again, returns it."""
        self.cluster.sequencers["catalog"].quorum = 2
        for name in ("catalog-2", "catalog-3"):
            self.cluster.unreachable(name)
        body = {"quantity": 1, "idempotency_key": "k-doubt"}
        reply = self.cluster.internal("POST", "order-1", "/order/purchase/3", body)
        self.assertEqual(reply.code, 503, reply.json)
        self.assertTrue(reply.json["error"]["message"].endswith(in_doubt_advice("k-doubt")))
        self.cluster.scan_orders(SCAN_INTERVAL)
        self.assertEqual(self.cluster.orders("order-1"), [])

        for name in ("catalog-2", "catalog-3"):
            self.cluster.unreachable(name, False)
        self.cluster.sequencers["catalog"].heartbeat()
        self.cluster.flush()
        self.cluster.scan_orders(SCAN_INTERVAL)

        [order] = self.cluster.orders("order-1")
        self.assertEqual((order["book_id"], order["quantity"]), (3, 1))
        self.assertEqual(self.cluster.stock_problems(), [])
        again = self.cluster.post("/bazar/purchase/3", body, headers={"Idempotency-Key": "k-doubt"})
        self.assertEqual((again.code, again.json["order_id"]), (200, order["order_id"]))


class CatalogTakesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def takes(self, to: str, query: str = "") -> Reply:
        return self.cluster.internal("GET", to, f"{TAKES_PATH}{query}")

    def test_keyed_takes_only(self) -> None:
        """Keyed buys are takes (with the book's title and price after them); unkeyed buys and
        other writes are not, but count as looked at."""
        self.cluster.post("/bazar/purchase/3", {"quantity": 2}, headers=KEY)  # seq 1
        self.cluster.put("/bazar/update_price/3", {"price": 9.5})  # seq 2
        self.cluster.internal("POST", "catalog-1", "/catalog/books/2/buy", {"quantity": 1})  # seq 3
        bought = self.cluster.post("/bazar/purchase/2")  # seq 4
        expected = [
            {"seq": 1, "key": KEY["Idempotency-Key"], "book_id": 3, "quantity": 2},
            {"seq": 4, "key": bought.headers["idempotency-key"], "book_id": 2, "quantity": 1},
        ]
        for name in self.cluster.catalog_names:
            reply = self.takes(name)
            self.assertEqual(reply.code, 200, reply.json)
            self.assertEqual(reply.json["last_seq"], 4)
            takes = reply.json["takes"]
            self.assertEqual([{k: t[k] for k in expected[0]} for t in takes], expected)
            title = self.cluster.book(name, 3)["title"]
            self.assertEqual((takes[0]["title"], takes[0]["price"]), (title, 89.33))
        page = self.takes("catalog-2", "?after=1&limit=2")
        self.assertEqual((page.json["takes"], page.json["last_seq"]), ([], 3))
        self.assertEqual(self.takes("catalog-2", "?after=4").json, {"takes": [], "last_seq": 4})

    def test_bad_queries(self) -> None:
        for query in ("?after=-1", "?limit=x", "?limit=0"):
            with self.subTest(query=query):
                self.assertEqual(self.takes("catalog-1", query).code, 400)
        self.assertEqual(self.cluster.request("GET", TAKES_PATH, to="catalog-1").code, 401)

    def test_only_takes_a_majority_has(self) -> None:
        """A sequencer holding a take no majority has confirmed answers 503 (as for any read):
        a take that a failover may lose must get no order."""
        self.cluster.sequencers["catalog"].quorum = 2
        self.cluster.unreachable("catalog-2")
        self.cluster.unreachable("catalog-3")
        buy = {"quantity": 1, "idempotency_key": "k-lost"}
        self.assertEqual(self.cluster.internal("POST", "catalog-1", "/catalog/books/3/buy", buy).code, 503)
        self.assertEqual(self.takes("catalog-1").code, 503)

    def test_entries_from_before_buys_were_marked(self) -> None:
        """A keyed take logged without ``bought`` is known by what it asked for."""
        entry = {
            "book": {"id": 3, "title": "t", "price": 1.0},
            "idempotency": {"key": "k", "request": "buy 3 x4"},
        }
        self.assertEqual(
            take_of(9, entry),
            {"seq": 9, "key": "k", "book_id": 3, "quantity": 4, "title": "t", "price": 1.0},
        )
        self.assertIsNone(take_of(9, {"book": entry["book"]}))

    def test_a_page_is_bounded(self) -> None:
        store = CatalogStore(InlineRunner())
        self.successResultOf(store.setup())
        self.addCleanup(store.close)
        for n in range(20):
            self.successResultOf(store.buy(n % 2, 1, key=f"k{n}"))
        for n in range(MAX_TAKES_PAGE - 17):
            self.successResultOf(store.set_price(0, n))
        takes, last = self.successResultOf(store.takes_after(0, MAX_TAKES_PAGE))
        self.assertEqual((len(takes), last), (20, MAX_TAKES_PAGE))
        rest = self.successResultOf(store.takes_after(MAX_TAKES_PAGE, MAX_TAKES_PAGE))
        self.assertEqual(rest, ([], MAX_TAKES_PAGE + 3))


class OrderStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = OrderStore(InlineRunner())
        self.successResultOf(self.store.setup())
        self.addCleanup(self.store.close)

    def test_recorded_keys(self) -> None:
        keys = [f"k{n}" for n in range(1200)]  # more than one statement's worth
        for key in keys[::7]:
            self.successResultOf(self.store.record(1, "t", 1.0, 1, key))
        self.successResultOf(self.store.record(1, "t", 1.0, 1))
        self.assertEqual(self.successResultOf(self.store.recorded_keys([*keys, "other"])), set(keys[::7]))

    def test_takes_resolved(self) -> None:
        """The newest entry's; 0 with no entry, or one from before entries carried it."""
        self.assertEqual(self.successResultOf(self.store.takes_resolved()), 0)
        self.successResultOf(self.store.record(1, "t", 1.0, 1, "a", 5))
        self.successResultOf(self.store.record(1, "t", 1.0, 1, "b", 9))
        self.assertEqual(self.successResultOf(self.store.takes_resolved()), 9)
        old = {"order_id": 3, "book_id": 1, "title": "t", "price": 1.0, "quantity": 1}
        self.successResultOf(self.store.apply([(3, {"order": old})]))
        self.assertEqual(self.successResultOf(self.store.takes_resolved()), 0)


class TimerTests(SynchronousTestCase):
    """The order replica's timer (``OrderApp.services``): it looks every CHECK_INTERVAL seconds,
    scans at once under a new sequencer, then every SCAN_INTERVAL seconds; never on a follower."""

    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)
        apps = [self.cluster.apps[name] for name in self.cluster.order_names]
        self.timers = [timer for app in apps for timer in app.services(self.cluster.clock)]
        for timer in self.timers:
            timer.startService()
            self.addCleanup(timer.stopService)
        self.cluster.flush()

    def scans(self) -> list[str]:
        return [s.query for s in self.cluster.dispatch.seen if s.path == TAKES_PATH]

    def run_for(self, seconds: float) -> None:
        for _ in range(round(seconds / CHECK_INTERVAL)):
            self.cluster.clock.advance(CHECK_INTERVAL)
            self.cluster.flush()

    def test_every_scan_interval(self) -> None:
        self.cluster.dispatch.seen.clear()
        self.run_for(SCAN_INTERVAL - CHECK_INTERVAL)
        self.assertEqual(self.scans(), [])
        self.run_for(CHECK_INTERVAL)
        self.assertEqual(self.scans(), ["after=0&limit=1000"])
        self.run_for(SCAN_INTERVAL)
        self.assertEqual(len(self.scans()), 2)

    def test_at_once_under_a_new_sequencer(self) -> None:
        """order-3 takes over: it scans at its next look, and purchases need not wait then."""
        self.cluster.take_over("order-3", "order-2", "order-1")
        self.cluster.dispatch.seen.clear()
        self.run_for(CHECK_INTERVAL)
        self.assertEqual(self.scans(), ["after=0&limit=1000"])
        writer = self.cluster.roles["order-3"].writer
        assert writer is not None
        self.successResultOf(self.cluster.apps["order-3"].orphans.ready(writer))
        self.assertEqual(len(self.scans()), 1)

    def test_a_failed_scan_stops_nothing(self) -> None:
        """No catalog answers: the scan fails (logged), the timer goes on, the next scan works."""
        for name in self.cluster.catalog_names:
            self.cluster.unreachable(name)
        self.run_for(SCAN_INTERVAL)
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.assertTrue(all(timer.running for timer in self.timers))
        for name in self.cluster.catalog_names:
            self.cluster.unreachable(name, False)
        self.cluster.dispatch.seen.clear()
        self.run_for(SCAN_INTERVAL)
        self.assertEqual(len(self.scans()), 1)

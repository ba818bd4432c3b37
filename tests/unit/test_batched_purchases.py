"""Purchases in batches, in the whole in-memory cluster with queued stores
(``MemCluster(queued=True)``: transactions run at the end of the turn, as on adbapi's thread).

Purchases that arrive together: the first goes alone, at once; the rest take their stock in
one call to the catalog (``bazar.order.takes``), in one catalog transaction, replicated in
one request per follower and invalidated in one push, then record their orders in one order
transaction. Each buyer gets its own answer, exactly the stock is sold, and a sequencer that
dies mid-batch loses no acknowledged order and leaves the stock conserved
(``tests.invariants``).
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bazar.protocol import BUYS_PATH, INVALIDATE_PATH, REPLICATE_PATH, SECRET_HEADER
from tests.unit.memcluster import MemCluster, Reply

BOOK = 2  # 8 copies


class BatchedPurchaseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self, queued=True)
        self.addCleanup(self.cluster.close)

    def purchases(self, count: int, book: int = BOOK, keys: str = "") -> list[Reply]:
        """``count`` purchases of one copy sent at once (each with key ``<keys><n>`` if
        ``keys``), and their replies."""
        path = f"/bazar/purchase/{book}"
        sent = [
            self.cluster.send("POST", path, {}, headers={"Idempotency-Key": f"{keys}{n}"} if keys else {})
            for n in range(count)
        ]
        return [self.cluster.wait(d) for d in sent]

    def served(self, name: str, path: str) -> int:
        return sum(1 for seen in self.cluster.served(name) if seen.path == path)

    def test_the_last_copies_sold_once_each(self) -> None:
        """Twelve buyers, eight copies: eight orders with distinct ids, four 409s, each with
        its own answer; every replica ends with no copy left and the stock conserved."""
        replies = self.purchases(12)
        self.assertEqual(self.served("catalog-1", BUYS_PATH), 1)  # all but the first, together
        sold = [r for r in replies if r.code == 200]
        refused = [r for r in replies if r.code == 409]
        self.assertEqual((len(sold), len(refused)), (8, 4), [r.json for r in replies])
        self.assertEqual(len({r.json["order_id"] for r in sold}), 8)
        self.assertEqual(len({r.json["idempotency_key"] for r in replies}), 12)
        for r in refused:
            self.assertIn("not enough stock", r.json["error"]["message"])
        for name in self.cluster.catalog_names:
            self.assertEqual(self.cluster.book(name, BOOK)["quantity"], 0)
        for name in self.cluster.order_names:
            self.assertEqual(len(self.cluster.orders(name)), 8)
        self.assertEqual(self.cluster.stock_problems(), [])

    def test_a_batch_is_one_call_one_transaction_one_message(self) -> None:
        """Six purchases at once: the first goes alone, the other five in one call to the
        catalog, which commits them in one transaction, replicates them in one request per
        follower and tells the front end in one push; their orders share one transaction."""
        # One purchase first: the order sequencer's first write also tells the front end its
        # epoch (a push of its own), which is not what this test counts.
        self.assertEqual(self.purchases(1)[0].code, 200)
        catalog, order = self.cluster.runners["catalog-1"], self.cluster.runners["order-1"]
        catalog.written = order.written = 0
        takes = self.cluster.apps["order-1"].takes
        calls = takes.calls
        self.cluster.dispatch.seen.clear()
        replies = self.purchases(6)
        self.assertEqual([r.code for r in replies], [200] * 6)
        self.assertEqual(self.served("catalog-1", BUYS_PATH), 1)  # the five
        self.assertEqual(takes.calls - calls, 2)
        self.assertEqual(catalog.written, 2)  # the first take, then the five
        self.assertEqual(order.written, 2)  # the first order, then the five
        for follower in ("catalog-2", "catalog-3", "order-2", "order-3"):
            self.assertEqual(self.served(follower, REPLICATE_PATH), 2, follower)
        self.assertEqual(self.served("frontend", INVALIDATE_PATH), 2)

    def test_a_lone_purchase_is_not_delayed(self) -> None:
        """A purchase alone goes at once, on the single take's route, in the turns it took
        before batching."""
        reply = self.purchases(1)[0]
        self.assertEqual(reply.code, 200)
        self.assertEqual(self.served("catalog-1", BUYS_PATH), 0)
        self.assertEqual(self.served("catalog-1", f"/catalog/books/{BOOK}/buy"), 1)

    def test_a_retry_in_the_same_batch_gets_the_same_order(self) -> None:
        """Two purchases with one key in one batch: one take, one order, one answer for both."""
        first = self.purchases(1, book=3)[0]  # keeps the next ones together
        sent = [
            self.cluster.send("POST", "/bazar/purchase/4", {}, headers={"Idempotency-Key": "same"})
            for _ in range(3)
        ]
        replies = [self.cluster.wait(d) for d in sent]
        self.assertEqual(first.code, 200)
        self.assertEqual({r.code for r in replies}, {200})
        self.assertEqual(len({r.json["order_id"] for r in replies}), 1)
        self.assertEqual(self.cluster.book("catalog-1", 4)["quantity"], 39)
        self.assertEqual(self.cluster.stock_problems(), [])


class SequencerDiesMidBatchTests(SynchronousTestCase):
    """The order sequencer dies with a batch of orders under way; another takes over."""

    def setUp(self) -> None:
        self.cluster = MemCluster(self, queued=True)
        self.addCleanup(self.cluster.close)

    def send(self, book: int, key: str, to: str = "order-1") -> Any:
        """A purchase as the front end sends it to the order sequencer (straight there, so
        that only replication reaches the followers)."""
        return self.cluster.send(
            "POST",
            f"/order/purchase/{book}",
            {"quantity": 1, "idempotency_key": key},
            to=to,
            headers={SECRET_HEADER: self.cluster.config.secret},
        )

    def acknowledged_once_everywhere(self, acknowledged: dict[str, Reply], names: tuple[str, ...]) -> None:
        for name in names:
            orders = {o["order_id"]: o for o in self.cluster.orders(name)}
            for key, reply in acknowledged.items():
                self.assertIn(reply.json["order_id"], orders, (name, key))
            keys = [entry["idempotency"]["key"] for _, entry in self.cluster.log(name)]
            self.assertEqual(len(keys), len(set(keys)), name)

    def test_killed_before_the_batch_commits(self) -> None:
        """The takes of a batch are done, its orders are not committed when the sequencer
        dies: the acknowledged order stays, the new sequencer records the batch's orders
        from the takes' keys, a retry gets each, and the stock is conserved."""
        acknowledged = {"k0": self.cluster.wait(self.send(3, "k0"))}
        self.assertEqual(acknowledged["k0"].code, 200)
        # The orders wait for order-1's database when it dies, every take done.
        order1 = self.cluster.runners["order-1"]
        order1.paused = True
        rest = [self.send(book, f"k{book}") for book in (1, 2, 4, 5)]
        for _ in range(10):
            self.cluster.flush()
        self.assertEqual(self.cluster.apps["order-1"].takes.calls, 3)  # k0; k1 alone; the other three
        self.assertEqual(len(order1.waiting), 1)  # k1's order; the three queue behind it
        self.assertEqual(self.cluster.book("catalog-1", 5)["quantity"], 79)
        self.cluster.unreachable("order-1")
        self.cluster.take_over("order-2", "order-3")
        self.cluster.scan_orders()
        for d in rest:
            self.assertNoResult(d)  # order-1 never answers them
        for book in (1, 2, 4, 5):
            retry = self.cluster.wait(self.send(book, f"k{book}", to="order-2"))
            self.assertEqual(retry.code, 200, retry.json)
            acknowledged[f"k{book}"] = retry
        self.acknowledged_once_everywhere(acknowledged, ("order-2", "order-3"))
        self.assertEqual(self.cluster.stock_problems(orders=("order-2", "order-3")), [])

    def test_killed_after_the_batch_reached_one_follower(self) -> None:
        """The batch's orders are committed and reached order-2 but not order-3, nothing of it
        acknowledged, when the sequencer dies: order-2 takes over with them, order-3 catches
        up, each is there exactly once, and the retries get them."""
        first = self.send(3, "k0")
        acknowledged = {"k0": self.cluster.wait(first)}
        delayed = self.cluster.delay_next("order-3")  # order-3 never gets the batch
        rest = [self.send(book, f"k{book}") for book in (1, 2, 4, 5)]
        for _ in range(10):
            self.cluster.flush()
            if delayed.arrived and len(self.cluster.orders("order-2")) == 5:
                break
        self.assertEqual(len(self.cluster.orders("order-2")), 5)
        for d in rest:
            self.assertNoResult(d)  # order-3 has not confirmed: none is acknowledged
        self.cluster.unreachable("order-1")
        delayed.drop()
        self.cluster.take_over("order-2", "order-3")
        self.cluster.scan_orders()
        for book in (1, 2, 4, 5):
            retry = self.cluster.wait(self.send(book, f"k{book}", to="order-2"))
            self.assertEqual(retry.code, 200, retry.json)
            acknowledged[f"k{book}"] = retry
        self.cluster.flush()
        self.assertEqual(len(self.cluster.orders("order-3")), 5)
        self.acknowledged_once_everywhere(acknowledged, ("order-2", "order-3"))
        self.assertEqual(self.cluster.stock_problems(orders=("order-2", "order-3")), [])


class CutOffCatalogSequencerTests(SynchronousTestCase):
    """The catalog sequencer loses its followers but not the order sequencer, and the
    followers elect another: the order sequencer's takes must not keep going to it."""

    def setUp(self) -> None:
        self.cluster = MemCluster(self, queued=True)
        self.addCleanup(self.cluster.close)

    def test_takes_go_on_at_the_new_sequencer(self) -> None:
        """catalog-1 (heard of last as the sequencer) refuses every take: its followers are out
        of sync and it does not know of the new epoch (the cut keeps that from it). A batch of
        purchases is taken at catalog-2 instead: each answered 200, each order once, the stock
        conserved. (Before, every purchase was asked of catalog-1 first and answered 503 for as
        long as the cut lasted: test_netns's test_sequencers_cut_off_mid_batch.)"""
        self.assertEqual(self.cluster.post(f"/bazar/purchase/{BOOK}").code, 200)  # heard: catalog-1
        for link in self.cluster.sequencers["catalog"].links:
            link._fall_behind("cut off")  # what the cut does at catalog-1
        self.cluster.unreachable("catalog-1")  # the new sequencer's first calls do not reach it
        self.cluster.take_over("catalog-2", "catalog-3")
        self.cluster.flush()
        self.cluster.unreachable("catalog-1", down=False)  # the order sequencer reaches it again
        self.assertEqual(self.cluster.roles["catalog-1"].epoch, 1)
        sent = [
            self.cluster.send("POST", f"/bazar/purchase/{BOOK}", {}, headers={"Idempotency-Key": f"cut-{n}"})
            for n in range(4)
        ]
        replies = [self.cluster.wait(d) for d in sent]
        self.assertEqual([r.code for r in replies], [200] * 4, [r.json for r in replies])
        self.assertGreaterEqual(self.cluster.apps["order-1"].takes.sizes.total, 5)
        for name in ("catalog-2", "catalog-3"):
            self.assertEqual(self.cluster.book(name, BOOK)["quantity"], 8 - 5)
        for name in self.cluster.order_names:
            self.assertEqual(len(self.cluster.orders(name)), 5)
        self.assertEqual(self.cluster.stock_problems(catalogs=("catalog-2", "catalog-3")), [])


class CatalogBuysTests(SynchronousTestCase):
    """The catalog's batch of takes (``BUYS_PATH``): each take answered on its own."""

    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def test_each_take_its_own_answer(self) -> None:
        """A batch with a take that finds no book and one that finds too few copies: those
        two get the errors their own calls would, the others their books; at a follower, the
        same (forwarded to the sequencer)."""
        for to in ("catalog-1", "catalog-2"):
            buys = [
                {"book_id": 1, "quantity": 1},
                {"book_id": 99, "quantity": 1},
                {"book_id": 2, "quantity": 50},
                {"book_id": 1, "quantity": 2, "idempotency_key": f"at-{to}"},
            ]
            reply = self.cluster.internal("POST", to, BUYS_PATH, {"buys": buys})
            self.assertEqual(reply.code, 200, reply.json)
            results = reply.json["results"]
            self.assertEqual([sorted(r) for r in results], [["book"], ["error"], ["error"], ["book"]])
            self.assertEqual([r["error"]["code"] for r in results if "error" in r], [404, 409])
        for name in self.cluster.catalog_names:
            self.assertEqual(self.cluster.book(name, 1)["quantity"], 60 - 6)
            self.assertEqual(self.cluster.book(name, 2)["quantity"], 8)

    def test_bad_batches(self) -> None:
        for body in (
            {},
            {"buys": []},
            {"buys": [{"book_id": 1}] * 65},
            {"buys": [3]},
            {"buys": [{"quantity": 1}]},
            {"buys": [{"book_id": True}]},
            {"buys": [{"book_id": 1, "quantity": 0}]},
        ):
            with self.subTest(body=body):
                self.assertEqual(self.cluster.internal("POST", "catalog-1", BUYS_PATH, body).code, 400)

"""Purchases with an Idempotency-Key are safe to retry: one order, one stock decrement."""

from __future__ import annotations

from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from bazar.errors import Conflict
from bazar.order.store import OrderStore
from bazar.runners import InlineRunner
from bazar.storage import Replayed
from tests.unit.memcluster import MemCluster, Reply

KEY = {"Idempotency-Key": "client-7f3a-0001"}


class ThroughTheFrontEndTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def stock(self, book: int) -> list[int]:
        return [self.cluster.book(name, book)["quantity"] for name in self.cluster.catalog_names]

    def test_a_retry_returns_the_original_order(self) -> None:
        """The same key twice (reaching different order replicas): the same answer, one order,
        one decrement, on every replica."""
        first = self.cluster.post("/bazar/purchase/3", {"quantity": 2}, headers=KEY)
        again = self.cluster.post("/bazar/purchase/3", {"quantity": 2}, headers=KEY)
        self.assertEqual((first.code, again.code), (200, 200))
        self.assertEqual(again.json, first.json)
        self.assertNotEqual(first.headers["x-bazar-replica"], again.headers["x-bazar-replica"])
        self.assertEqual(self.stock(3), [63, 63, 63])
        for name in self.cluster.order_names:
            self.assertEqual([o["order_id"] for o in self.cluster.orders(name)], [first.json["order_id"]])
        self.assertEqual(self.cluster.stock_problems(), [])

    def test_without_a_key_every_request_buys(self) -> None:
        self.cluster.post("/bazar/purchase/3")
        self.cluster.post("/bazar/purchase/3")
        self.assertEqual(self.stock(3), [63, 63, 63])

    def test_the_same_key_for_another_purchase_is_refused(self) -> None:
        self.cluster.post("/bazar/purchase/3", {"quantity": 2}, headers=KEY)
        other = self.cluster.post("/bazar/purchase/3", {"quantity": 1}, headers=KEY)
        self.assertEqual(other.code, 409)
        self.assertIn("already used for another request", other.json["error"]["message"])
        self.assertEqual(self.stock(3), [63, 63, 63])

    def test_retry_after_a_crash_between_stock_and_order(self) -> None:
        """The order sequencer took the stock, then died before recording the order. The
        client's retry with the same key records the order and takes no more stock."""
        taken = self.cluster.internal(
            "POST",
            "catalog-2",
            "/catalog/books/3/buy",
            {"quantity": 2, "idempotency_key": KEY["Idempotency-Key"]},
        )
        self.assertEqual(taken.code, 200)
        self.assertEqual(self.stock(3), [63, 63, 63])
        retry = self.cluster.post("/bazar/purchase/3", {"quantity": 2}, headers=KEY)
        self.assertEqual(retry.code, 200)
        self.assertEqual(self.stock(3), [63, 63, 63])
        for name in self.cluster.order_names:
            self.assertEqual(len(self.cluster.orders(name)), 1)
        self.assertEqual(self.cluster.stock_problems(), [])

    def test_no_catalog_replica_answers(self) -> None:
        """A keyed purchase tries every catalog replica; when none answers, the client is told
        in its words (and may retry with its key), the replica-by-replica detail is logged."""
        before = self.stock(3)
        for name in self.cluster.catalog_names:
            self.cluster.unreachable(name)
        with capturedLogs() as events:
            answer = self.cluster.post("/bazar/purchase/3", headers=KEY)
        self.assertEqual(answer.code, 503)
        self.assertEqual(
            answer.json["error"]["message"],
            "no catalog replica can answer right now; try again shortly; the purchase may have gone "
            f"through: ask again with Idempotency-Key {KEY['Idempotency-Key']} to find out",
        )
        logged = [formatEvent(e) for e in events]
        self.assertTrue(
            any(line.startswith("no catalog replica could take the stock: ") for line in logged), logged
        )
        for name in self.cluster.catalog_names:
            self.cluster.unreachable(name, down=False)
        self.assertEqual(self.cluster.post("/bazar/purchase/3", headers=KEY).code, 200)
        self.assertEqual(self.stock(3), [q - 1 for q in before])  # the retry took it, once

    def test_bad_keys(self) -> None:
        for key in ("", "x" * 201, "caf\u00e9", "tab\there", b"\xd7\xff"):
            with self.subTest(key=key):
                answer = self.cluster.post("/bazar/purchase/3", headers={"Idempotency-Key": key})
                self.assertEqual(answer.code, 400)
                self.assertIn("Idempotency-Key", answer.json["error"]["message"])
        self.assertEqual(self.stock(3), [65, 65, 65])


class BatchedRetryTests(SynchronousTestCase):
    """Keyed purchases and their retries, sent together so that their takes batch
    (``bazar.order.takes``): each behaves as it would alone."""

    def setUp(self) -> None:
        self.cluster = MemCluster(self, queued=True)
        self.addCleanup(self.cluster.close)

    def together(self, purchases: list[tuple[str, int]]) -> list[Reply]:
        """``(key, quantity)`` purchases of book 3 sent at once, and their replies."""
        sent = [
            self.cluster.send("POST", "/bazar/purchase/3", {"quantity": q}, headers={"Idempotency-Key": k})
            for k, q in purchases
        ]
        return [self.cluster.wait(d) for d in sent]

    def test_retries_in_a_batch(self) -> None:
        """Six purchases; then, all at once, their six retries, two keys whose takes were done
        by an order sequencer that died before recording them, two new keys and a key reused
        for another quantity. The retries get their original orders, the two taken get their
        orders without more stock, the new ones new orders, the reused key a 409; every order
        is on every order replica once and the stock is conserved."""
        takes = self.cluster.apps["order-1"].takes.sizes
        first = self.together([(f"k{n}", 1) for n in range(6)])
        self.assertEqual([r.code for r in first], [200] * 6)
        for key in ("taken-0", "taken-1"):
            body = {"quantity": 1, "idempotency_key": key}
            self.assertEqual(
                self.cluster.internal("POST", "catalog-2", "/catalog/books/3/buy", body).code, 200
            )
        batches = takes.count
        keys = [f"k{n}" for n in range(6)] + ["taken-0", "taken-1", "new-0", "new-1"]
        again = self.together([(k, 1) for k in keys] + [("k0", 2)])
        self.assertGreater(takes.total - 6, takes.count - batches)  # the takes went in batches
        self.assertEqual([r.code for r in again], [200] * 10 + [409])
        self.assertEqual([r.json for r in again[:6]], [r.json for r in first])
        self.assertIn("already used for another request", again[10].json["error"]["message"])
        self.assertEqual(
            {self.cluster.book(name, 3)["quantity"] for name in self.cluster.catalog_names}, {55}
        )
        ids = {r.json["order_id"] for r in again[:10]}
        for name in self.cluster.order_names:
            self.assertEqual(sorted(o["order_id"] for o in self.cluster.orders(name)), sorted(ids))
        self.assertEqual(self.cluster.stock_problems(), [])


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.leader = OrderStore(InlineRunner())
        self.follower = OrderStore(InlineRunner())
        for store in (self.leader, self.follower):
            self.successResultOf(store.setup())
            self.addCleanup(store.close)

    def test_replay_carries_the_original(self) -> None:
        seq, entry = self.successResultOf(self.leader.record(1, "t", 2.0, 1, "k"))
        replay = self.failureResultOf(self.leader.record(1, "t", 2.0, 1, "k"), Replayed).value
        self.assertEqual((replay.seq, replay.entry), (seq, entry))
        self.failureResultOf(self.leader.record(2, "t", 2.0, 1, "k"), Conflict)
        self.assertEqual(self.successResultOf(self.leader.last_seq()), 1)

    def test_followers_remember_keys(self) -> None:
        """A follower that applied a keyed entry answers a retry the same way (after a failover)."""
        self.successResultOf(self.leader.record(1, "t", 2.0, 1, "k"))
        self.successResultOf(self.follower.apply(self.successResultOf(self.leader.entries_after(0))))
        replay = self.failureResultOf(self.follower.record(1, "t", 2.0, 1, "k"), Replayed).value
        self.assertEqual(replay.seq, 1)


def in_doubt_advice(key: str) -> str:
    return f"the purchase may have gone through: ask again with Idempotency-Key {key} to find out"


class PurchaseKeyTests(SynchronousTestCase):
    """Every purchase answer gives the purchase's key back; a scan leaves a purchase on its
    way to its own recording."""

    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def served(self, path: str) -> int:
        return sum(1 for seen in self.cluster.dispatch.seen if seen.path == path)

    def test_the_clients_key_is_echoed(self) -> None:
        for body, code in (({"quantity": 1}, 200), ({"quantity": 999}, 409), ({"quantity": 0}, 400)):
            with self.subTest(code=code):
                reply = self.cluster.post("/bazar/purchase/3", body, headers=KEY)
                self.assertEqual(reply.code, code, reply.json)
                self.assertEqual(reply.headers["idempotency-key"], KEY["Idempotency-Key"])
                self.assertEqual(reply.json["idempotency_key"], KEY["Idempotency-Key"])

    def test_each_unkeyed_purchase_gets_its_own_key(self) -> None:
        keys = {self.cluster.post("/bazar/purchase/3").headers["idempotency-key"] for _ in range(3)}
        self.assertEqual(len(keys), 3)
        self.assertEqual(self.cluster.stock_problems(), [])

    def test_an_order_replica_that_does_not_answer(self) -> None:
        """The front end's own 503 (the order sequencer dropped the connection: the purchase
        may have arrived) says how to find out, with the key."""
        self.cluster.unreachable("order-1")
        reply = self.cluster.post("/bazar/purchase/3", headers=KEY)
        self.assertEqual(reply.code, 503, reply.json)
        self.assertEqual(reply.json["idempotency_key"], KEY["Idempotency-Key"])
        self.assertTrue(reply.json["error"]["message"].endswith(in_doubt_advice(KEY["Idempotency-Key"])))
        self.assertEqual(reply.headers["retry-after"], "1")

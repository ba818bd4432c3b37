"""Several front ends, each with its own cache, and the cache leases that keep them from a
stale read (``bazar.leases``): in memory, on a Clock, with three front ends."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bazar.invalidation import LeaseRenewal
from bazar.leases import HOLDER_TERM, LEASE_TERM, RENEW_INTERVAL, Grant, LeaseHolder, Lessor
from bazar.protocol import IDEMPOTENCY_HEADER, INVALIDATE_PATH
from tests.unit.memcluster import MemCluster, Reply

FRONTENDS = ("frontend-1", "frontend-2", "frontend-3")
PRICE = 22.35  # book 1's seeded price


class LessorTests(SynchronousTestCase):
    """Both sides' counts of a lease, on one clock: the front end's always ends first."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.lessor = Lessor(["fe"], self.clock)
        self.holder = LeaseHolder(self.clock.seconds)

    def exchange(self, delay: float = 0.0) -> Grant:
        """One grant, received ``delay`` seconds after it was sent, answered at once."""
        grant = self.lessor.grant("fe")
        assert grant is not None
        self.clock.advance(delay)
        self.holder.received(grant, 1, "seq")
        self.lessor.answered("fe", grant, True)
        return grant

    def test_the_first_grant_gives_no_lease(self) -> None:
        """A grant counts from the receipt of an earlier one, answered: the first has none."""
        self.exchange()
        self.assertFalse(self.holder.valid())
        self.exchange()
        self.assertTrue(self.holder.valid())
        self.assertEqual(self.holder.expires, HOLDER_TERM)

    def test_a_grant_read_late_is_not_trusted_from_when_it_was_read(self) -> None:
        """A grant that sat 5 s in a stopped process's socket gives it nothing: it counts from
        the receipt of the grant before, long ago."""
        self.exchange()
        self.exchange()
        grant = self.lessor.grant("fe")
        assert grant is not None
        self.clock.advance(5)
        self.holder.received(grant, 1, "seq")
        self.assertFalse(self.holder.valid())
        self.assertLessEqual(self.holder.expires, self.lessor._leases["fe"].expiry)

    def test_the_holder_count_ends_before_the_lessors(self) -> None:
        for delay in (0.0, 0.3, 1.5, 0.01):
            self.exchange(delay)
            self.assertLess(self.holder.expires, self.lessor._leases["fe"].expiry)

    def test_unanswered_grants_extend_nothing(self) -> None:
        self.exchange()
        self.exchange()
        expiry = self.lessor._leases["fe"].expiry
        for _ in range(10):
            grant = self.lessor.grant("fe")
            assert grant is not None
            self.clock.advance(RENEW_INTERVAL)
            self.lessor.answered("fe", grant, False)
        self.assertEqual(self.lessor._leases["fe"].expiry, expiry)
        self.assertTrue(self.lessor.revoked("fe"))  # the next grant flushes

    def test_waiting_out_a_lease(self) -> None:
        self.exchange()
        self.exchange()
        waiting = self.lessor.run_out("fe")
        self.clock.advance(LEASE_TERM - 0.01)
        self.assertNoResult(waiting)
        self.clock.advance(0.01)
        self.successResultOf(waiting)
        self.assertTrue(self.lessor.revoked("fe"))

    def test_an_answered_flush_ends_the_wait(self) -> None:
        self.exchange()
        self.exchange()
        waiting = self.lessor.run_out("fe")
        self.lessor.revoke("fe")
        grant = self.exchange()
        self.assertTrue(grant.flush)
        self.successResultOf(waiting)
        self.assertFalse(self.lessor.revoked("fe"))


class ThreeFrontendsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self, frontends=3)
        self.addCleanup(self.cluster.close)
        self.cluster.run(RENEW_INTERVAL)  # every front end holds a lease

    def read(self, frontend: str, book: int = 1) -> Reply:
        return self.cluster.get(f"/bazar/info/{book}", to=frontend)

    def cache_everywhere(self, book: int = 1) -> None:
        for frontend in FRONTENDS:
            self.read(frontend, book)
            reply = self.read(frontend, book)
            self.assertEqual(reply.headers["x-bazar-cache"], "hit", frontend)

    def pending(self, d: Deferred[Any]) -> None:
        self.cluster.flush()
        self.assertNoResult(d)

    def test_every_answer_names_its_frontend(self) -> None:
        for frontend in FRONTENDS:
            for path in ("/bazar/info/1", "/bazar/info/1", "/bazar/nothing", "/bazar/cluster"):
                self.assertEqual(self.cluster.get(path, to=frontend).headers["x-bazar-frontend"], frontend)

    def test_a_write_invalidates_every_frontend_before_the_ack(self) -> None:
        self.cache_everywhere()
        reply = self.cluster.put("/bazar/update_price/1", {"price": 9.5}, to="frontend-2")
        self.assertEqual(reply.code, 200)
        for frontend in FRONTENDS:  # nothing has run since the answer came
            self.assertNotIn("info/1", self.cluster.cached_keys(frontend), frontend)
        for frontend in FRONTENDS:
            reply = self.read(frontend)
            self.assertEqual((reply.headers["x-bazar-cache"], reply.json["price"]), ("miss", 9.5))

    def test_an_unreachable_frontend_delays_the_ack_at_most_until_its_lease_runs_out(self) -> None:
        self.cache_everywhere()
        self.cluster.unreachable("frontend-3")
        left = self.cluster.roles["catalog-1"].notice.leases()["frontend-3"]["left"]  # type: ignore[union-attr]
        self.assertGreater(left, 1)
        self.assertLessEqual(left, LEASE_TERM)
        write = self.cluster.send("PUT", "/bazar/update_price/1", {"price": 9.5}, to="frontend-1")
        self.pending(write)
        self.cluster.run(left - 0.1)
        self.assertNoResult(write)  # frontend-3 may still trust its cache
        self.cluster.run(0.1)
        self.assertEqual(self.cluster.wait(write).code, 200)
        self.assertFalse(self.cluster.frontends["frontend-3"].leases.valid("catalog"))  # by its own count
        for frontend in ("frontend-1", "frontend-2"):
            self.assertNotIn("info/1", self.cluster.cached_keys(frontend))

        # Back: it missed the write, and its lease lapsed: a miss, read at any replica (each
        # answers only under a read lease: with every acknowledged write).
        self.cluster.unreachable("frontend-3", down=False)
        reply = self.read("frontend-3")
        self.assertEqual((reply.headers["x-bazar-cache"], reply.json["price"]), ("miss", 9.5))
        # Its next grant flushes what it cached before; then it serves hits again.
        self.cluster.run(2 * RENEW_INTERVAL)
        self.assertTrue(self.cluster.frontends["frontend-3"].leases.valid("catalog"))
        self.read("frontend-3")
        reply = self.read("frontend-3")
        self.assertEqual((reply.headers["x-bazar-cache"], reply.json["price"]), ("hit", 9.5))

    def test_a_paused_frontend_resumed_serves_no_stale_hit(self) -> None:
        """Stopped (its pushes and grants wait unread), then resumed: no stale hit, whatever
        it reads first."""
        self.cache_everywhere()
        self.cluster.pause("frontend-2")
        write = self.cluster.send("PUT", "/bazar/update_price/1", {"price": 9.5}, to="frontend-3")
        self.pending(write)
        self.cluster.run(LEASE_TERM)
        self.assertEqual(self.cluster.wait(write).code, 200)
        self.cluster.run(3)  # it stays stopped a while longer; grants to it pile up, unread
        self.cluster.resume("frontend-2")
        for _ in range(3):
            reply = self.read("frontend-2")
            self.assertEqual(reply.json["price"], 9.5, reply.headers)
            self.cluster.run(RENEW_INTERVAL / 2)

    def test_a_lapsed_frontend_answers_misses_not_errors(self) -> None:
        """The sequencer stops renewing (as if it hung): every front end's lease lapses, and
        reads are misses, from any replica; ``/bazar/cluster`` shows it from any front end."""
        self.cache_everywhere()
        renewal = next(s for s in self.cluster.processes["catalog-1"].services if isinstance(s, LeaseRenewal))
        renewal.stopService()
        self.cluster.run(LEASE_TERM)
        reply = self.read("frontend-1")
        self.assertEqual((reply.code, reply.headers["x-bazar-cache"]), (200, "miss"))
        status = self.cluster.get("/bazar/cluster", to="frontend-2").json["frontends"]
        self.assertEqual([f["name"] for f in status], ["frontend-2", "frontend-1", "frontend-3"])
        self.assertEqual([f["leases"]["catalog"]["valid"] for f in status], [False] * 3)
        self.assertEqual([f["healthy"] for f in status], [True] * 3)
        self.assertEqual((status[1]["cache"]["hits"], status[1]["cache"]["misses"]), (1, 2))
        renewal.startService()
        self.cluster.run(RENEW_INTERVAL)
        status = self.cluster.get("/bazar/cluster", to="frontend-3").json["frontends"]
        self.assertEqual([f["leases"]["catalog"]["valid"] for f in status], [True] * 3)

    def test_the_fill_guard_holds_per_frontend(self) -> None:
        """A fill at frontend-2 answered before a write through frontend-1 but delivered after
        it is not kept there."""
        held = self.cluster.hold_next("catalog-1")
        early = self.cluster.send("GET", "/bazar/info/1", to="frontend-2")
        self.cluster.flush()
        self.assertTrue(held.arrived)
        self.assertEqual(self.cluster.put("/bazar/update_price/1", {"price": 9.5}, to="frontend-1").code, 200)
        held.release()
        self.assertEqual(self.cluster.wait(early).json["price"], PRICE)  # begun before the write
        self.assertNotIn("info/1", self.cluster.cached_keys("frontend-2"))
        for frontend in FRONTENDS:
            self.assertEqual(self.read(frontend).json["price"], 9.5)

    def test_a_purchase_retried_through_another_frontend_buys_once(self) -> None:
        """The first answer is lost (the client gave up); the retry, with the key, reaches
        another front end and gets the same order."""
        key = {IDEMPOTENCY_HEADER: "retry-through-2"}
        first = self.cluster.post("/bazar/purchase/1", to="frontend-1", headers=key)
        again = self.cluster.post("/bazar/purchase/1", to="frontend-2", headers=key)
        self.assertEqual((first.code, again.code), (200, 200))
        self.assertEqual(again.json["order_id"], first.json["order_id"])
        self.assertEqual(again.headers["x-bazar-frontend"], "frontend-2")
        self.assertEqual(len(self.cluster.orders("order-1")), 1)
        self.assertEqual(self.cluster.stock_problems(), [])
        quantities = {self.read(frontend).json["quantity"] for frontend in FRONTENDS}
        self.assertEqual(len(quantities), 1)


class GrantMessageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def test_a_malformed_grant_is_refused_and_changes_nothing(self) -> None:
        before = self.cluster.frontend.leases.state()
        body = {"keys": [], "seq": 1, "role": "catalog", "epoch": 1, "lease": {"lessor": "x", "grant": "2"}}
        reply = self.cluster.internal("POST", "frontend", INVALIDATE_PATH, body)
        self.assertEqual(reply.code, 400)
        self.assertIn("'lease'", reply.json["error"]["message"])
        self.assertEqual(self.cluster.frontend.leases.state(), before)

    def test_a_grant_from_an_old_epoch_is_not_trusted(self) -> None:
        self.cluster.frontend.health.current_epoch("catalog", 5)
        lease = {"lessor": "old", "grant": 2, "based_on": 1, "flush": False, "sequencer": "catalog-1"}
        for grant in (1, 2):
            body = {"keys": [], "seq": 1, "role": "catalog", "epoch": 4, "lease": {**lease, "grant": grant}}
            reply = self.cluster.internal("POST", "frontend", INVALIDATE_PATH, body)
            self.assertEqual((reply.code, reply.json["lease"]), (200, False))
        self.assertFalse(self.cluster.frontend.leases.valid("catalog"))

    def test_the_lease_is_in_the_metrics(self) -> None:
        self.cluster.run(RENEW_INTERVAL)
        metrics = self.cluster.internal("GET", "frontend", "/metrics").json
        self.assertIn('bazar_cache_lease_valid{role="catalog"} 1.0', metrics)

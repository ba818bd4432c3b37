"""Cache leases with failures of the sequencer and its followers (docs/frontends.md).

Three catalog replicas and a front end (``Trio``): each test cuts the front end off from a
sequencer's pushes and grants, so that it can count only on leases, and checks that its
reads go on (no 503) and never show a price older than an acknowledged write.

* A dead sequencer: reads go on from the followers, through the election and after.
* A follower cut off from the sequencer, which the front end still reaches: a write
  acknowledged without it is never read back older from it.
* A replaced sequencer cut off from its followers but not from the front end: it must not
  keep the front end's cache trusted past a write the new sequencer acknowledged.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bazar.leases import LEADER_TERM, LEASE_TERM, VOTE_GUARD, FollowerLease, leader_lease
from bazar.protocol import ELECT_PATH, INVALIDATE_PATH
from bazar.protocol.messages import Elect
from tests.unit.test_failover import C1, C2, C3, STEP, Trio

BOOK = 3


class ReadLeaseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.trio = Trio(self)
        self.trio.start()
        self.assertEqual(self.trio.write_price(C1, BOOK, 10.0).code, 200)
        self.assertEqual(self.trio.read_price(BOOK), 10.0)  # cached, under C1's lease
        self.assertEqual(self.trio.read_price(BOOK), 10.0)

    def reads_for(self, seconds: float, expected: float) -> None:
        """A read through the front end every STEP for ``seconds``: each answered (200),
        none older than ``expected``."""
        for _ in range(round(seconds / STEP)):
            self.assertEqual(self.trio.read_price(BOOK), expected)

    def write(self, to: str, price: float) -> None:
        """A price written at ``to``, acknowledged (within a lease term and a bit)."""
        trio = self.trio
        answered = trio.outside.request(
            "PUT", trio.replica(to), f"/catalog/books/{BOOK}/price", {"price": price}
        )
        trio.run(LEASE_TERM + 1)
        self.assertEqual(self.successResultOf(answered).code, 200)

    def test_reads_go_on_from_followers_while_the_sequencer_is_dead(self) -> None:
        """catalog-1 dies; the front end hears nothing from catalog-2, elected after it, so its
        lease lapses: it reads from the followers (not from the dead lessor alone), and shows
        the price catalog-2 then acknowledged."""
        trio = self.trio
        trio.block(C2, "frontend", INVALIDATE_PATH)
        trio.block(C3, "frontend", INVALIDATE_PATH)
        trio.isolate(C1)
        self.reads_for(LEASE_TERM + 1, 10.0)
        self.assertIn(C2, trio.leaders())  # catalog-1, dead, does not count
        self.write(C2, 20.0)
        self.reads_for(1, 20.0)

    def test_a_follower_cut_off_from_the_sequencer_shows_no_older_write(self) -> None:
        """catalog-3 hears nothing from catalog-1 (the front end reaches both), and the front
        end hears nothing from catalog-1 either: the write is acknowledged without both, once
        their leases ran out, and no read through the front end shows the price before it."""
        trio = self.trio
        trio.cut(C1, C3)
        trio.block(C1, "frontend", INVALIDATE_PATH)
        self.write(C1, 20.0)
        self.assertEqual(trio.price(C3, BOOK), 10.0)  # it lacks the write
        self.reads_for(2, 20.0)

    def test_a_replaced_sequencer_keeps_no_cache_trusted(self) -> None:
        """catalog-1 is cut off from its followers, who elect catalog-2; catalog-1 still reaches
        the front end, which catalog-2 does not. catalog-2's write is acknowledged once the
        front end's lease ran out; catalog-1, which does not know it was replaced, must not
        have renewed it meanwhile: no read shows the cached price before the write."""
        trio = self.trio
        trio.cut(C1, C2)
        trio.cut(C1, C3)
        trio.block(C2, "frontend", INVALIDATE_PATH)
        trio.block(C3, "frontend", INVALIDATE_PATH)
        for _ in range(round(2 / STEP)):
            trio.run(STEP)
            if trio.leaders() == [C1, C2]:
                break
        self.assertEqual(trio.leaders(), [C1, C2])  # catalog-1 does not know yet
        self.write(C2, 20.0)
        self.reads_for(2, 20.0)


class FollowerLeaseTests(SynchronousTestCase):
    """The sequencer's count of one follower's read lease."""

    def setUp(self) -> None:
        self.now = 100.0
        self.lease = FollowerLease("t", lambda: self.now)

    def test_a_call_grants_on_the_newest_answered_one_unless_revoked(self) -> None:
        self.assertEqual(self.lease.call(True, "catalog-1")["based_on"], 0)
        self.lease.heard(1)
        self.assertEqual(self.lease.call(True, "catalog-1")["based_on"], 1)
        self.assertEqual(self.lease.call(False, "catalog-1")["based_on"], 0)  # not in sync
        self.lease.revoke()
        self.assertEqual(self.lease.call(True, "catalog-1")["based_on"], 0)

    def test_a_revoked_lease_runs_out_a_term_after_the_last_answer_before_it(self) -> None:
        self.lease.call(True, "catalog-1")
        self.now += 1
        self.lease.heard(1)  # received by then: a grant based on it ends a term from now at most
        self.lease.revoke()
        self.now += 0.5
        self.lease.call(True, "catalog-1")
        self.lease.heard(2)  # answers after the revocation extend nothing it may count on
        self.assertAlmostEqual(self.lease.left(), LEASE_TERM - 0.5)
        self.now += LEASE_TERM
        self.assertEqual(self.lease.left(), 0)


class LeaderLeaseTests(SynchronousTestCase):
    def test_a_majority_with_the_followers_heard_last(self) -> None:
        """Of three, one follower heard from suffices (a majority needs it or us); of five, two."""
        self.assertEqual(leader_lease([5.0, 7.0], 3, 2), 7.0 + LEADER_TERM)
        self.assertEqual(leader_lease([5.0, 7.0, 1.0, 6.0], 5, 3), 6.0 + LEADER_TERM)
        self.assertEqual(leader_lease([], 3, 2), float("-inf"))
        self.assertEqual(leader_lease([], 1, 1), float("inf"))  # alone, nobody can replace it

    def test_no_vote_within_the_guard_of_hearing_from_the_sequencer(self) -> None:
        """catalog-2 just heard catalog-1's heartbeat: it refuses catalog-3's candidacy (so
        that catalog-1 may count on not being replaced meanwhile); once catalog-1 has been
        silent for VOTE_GUARD, it votes."""
        trio = Trio(self)
        trio.start()
        trio.isolate(C1)
        ask = Elect(2, C3, 100).body()
        refused = trio.call("POST", C2, ELECT_PATH, ask)
        self.assertEqual(refused.code, 409, refused.body)
        self.assertIn("heard from", refused.json()["error"]["message"])
        trio.clock.advance(VOTE_GUARD)
        self.assertEqual(trio.call("POST", C2, ELECT_PATH, ask).code, 200)

"""Tests for ``bazar.replication``: FollowerLink and Sequencer, over a fake ReplicaClient.

The leader is a real in-memory ``CatalogStore`` (so its log can be resent). Followers are
either scripted (``ScriptedClient``: the test answers each request by hand) or real stores
behind ``FollowerClient``, which answers like the /internal/replicate endpoint does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bazar import replication
from bazar.catalog.store import CatalogStore
from bazar.client import ReplicaResponse
from bazar.config import Replica
from bazar.errors import Conflict, Unavailable
from bazar.replication import REPLICATE_PATH, FollowerLink, Sequencer
from bazar.storage import Entry, InlineRunner, ReplicatedStore, SequenceGap


def replica(name: str) -> Replica:
    return Replica(name=name, role="catalog", listen="tcp:0", url=f"http://{name}.invalid")


LEADER = replica("catalog-1")
FOLLOWER = replica("catalog-2")
OTHER = replica("catalog-3")


def response(code: int, body: Any, name: str = "catalog-2") -> ReplicaResponse:
    return ReplicaResponse(code, json.dumps(body).encode(), name)


def seqs(entries: list[Any]) -> list[int]:
    return [seq for seq, _ in entries]


@dataclass
class Call:
    method: str
    replica: Replica
    path: str
    body: Any
    deferred: Deferred[ReplicaResponse] = field(default_factory=Deferred)

    @property
    def seqs(self) -> list[int]:
        return seqs(self.body["entries"])

    def confirm(self, last_seq: int) -> None:
        self.deferred.callback(response(200, {"last_seq": last_seq}, self.replica.name))

    def gap(self, last_seq: int) -> None:
        body = {"last_seq": last_seq, "error": {"code": 409, "message": "expected another seq"}}
        self.deferred.callback(response(409, body, self.replica.name))


class ScriptedClient:
    """Records every request; the test answers each one through its ``Call``."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def request(
        self, method: str, replica: Replica, path: str, body: Any = None
    ) -> Deferred[ReplicaResponse]:
        call = Call(method, replica, path, body)
        self.calls.append(call)
        return call.deferred

    def to(self, replica: Replica) -> list[Call]:
        return [c for c in self.calls if c.replica == replica]


class FollowerClient:
    """Delivers requests to real follower stores, answering as /internal/replicate does.

    With ``hold`` set, requests wait in ``pending`` until ``deliver()``; a follower in
    ``down`` is unreachable (Unavailable, as ReplicaClient raises for transport errors).
    """

    def __init__(self, followers: Mapping[str, ReplicatedStore], hold: bool = False) -> None:
        self.followers = dict(followers)
        self.hold = hold
        self.down: set[str] = set()
        self.pending: list[tuple[Replica, Any, Deferred[ReplicaResponse]]] = []
        self.sent: list[tuple[str, list[int]]] = []

    def request(
        self, method: str, replica: Replica, path: str, body: Any = None
    ) -> Deferred[ReplicaResponse]:
        assert (method, path) == ("POST", REPLICATE_PATH)
        d: Deferred[ReplicaResponse] = Deferred()
        self.pending.append((replica, json.loads(json.dumps(body)), d))  # as it travels: JSON
        if not self.hold:
            self.deliver()
        return d

    def deliver(self) -> None:
        while self.pending:
            replica, body, d = self.pending.pop(0)
            self.sent.append((replica.name, seqs(body["entries"])))
            if replica.name in self.down:
                d.errback(Unavailable(f"{replica.name} is unreachable: ConnectError"))
                continue
            applied: Deferred[Any] = self.followers[replica.name].apply([(s, e) for s, e in body["entries"]])
            applied.addCallbacks(
                lambda last_seq, name=replica.name: response(200, {"last_seq": last_seq}, name),
                self._gap,
                errbackArgs=(replica.name,),
            )
            applied.chainDeferred(d)

    @staticmethod
    def _gap(failure: Failure, name: str) -> ReplicaResponse:
        failure.trap(SequenceGap)
        gap = failure.value
        assert isinstance(gap, SequenceGap)
        return response(409, {"last_seq": gap.last_seq, "error": {"code": 409, "message": gap.message}}, name)


class ReplicationTestCase(SynchronousTestCase):
    def catalog(self) -> CatalogStore:
        store = CatalogStore(InlineRunner())
        self.addCleanup(store.close)
        self.successResultOf(store.setup())
        return store

    def setUp(self) -> None:
        self.leader = self.catalog()

    def write(self, book_id: int = 6) -> tuple[int, Entry]:
        """One sequenced write at the leader (a purchase of one copy)."""
        return self.successResultOf(self.leader.buy(book_id, 1))

    def ship(self, link: FollowerLink, book_id: int = 6) -> Deferred[None]:
        seq, entry = self.write(book_id)
        return link.ship(seq, entry)

    def assertInSync(self, follower: ReplicatedStore) -> None:
        self.assertEqual(self.successResultOf(follower.status()), self.successResultOf(self.leader.status()))


class ShippingTests(ReplicationTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.client = ScriptedClient()
        self.link = FollowerLink(FOLLOWER, self.client, self.leader)  # type: ignore[arg-type]

    def test_ship_posts_the_entry(self) -> None:
        """A shipped entry is POSTed to the follower's replicate endpoint as [seq, entry] pairs."""
        seq, entry = self.write()
        self.link.ship(seq, entry)
        [call] = self.client.calls
        self.assertEqual((call.method, call.replica, call.path), ("POST", FOLLOWER, REPLICATE_PATH))
        self.assertEqual([list(e) for e in call.body["entries"]], [[1, entry]])

    def test_fires_only_after_the_follower_confirms(self) -> None:
        """ship()'s Deferred waits for the follower's answer, then fires with None."""
        shipped = self.ship(self.link)
        self.assertNoResult(shipped)
        self.client.calls[0].confirm(1)
        self.assertIsNone(self.successResultOf(shipped))
        self.assertEqual(self.link.confirmed, 1)

    def test_one_request_at_a_time_in_seq_order(self) -> None:
        """Entries shipped while a request is in flight wait, then go out in one batch, in order."""
        first = self.ship(self.link)
        second = self.ship(self.link)
        third = self.ship(self.link)
        self.assertEqual([c.seqs for c in self.client.calls], [[1]])

        self.client.calls[0].confirm(1)
        self.successResultOf(first)
        self.assertNoResult(second)
        self.assertNoResult(third)
        self.assertEqual([c.seqs for c in self.client.calls], [[1], [2, 3]])

        self.client.calls[1].confirm(3)
        self.successResultOf(second)
        self.successResultOf(third)
        self.assertEqual(len(self.client.calls), 2)
        self.assertEqual(self.link.confirmed, 3)

    def test_batched_entries_are_the_leaders(self) -> None:
        """The batch carries each write's own entry, unchanged."""
        self.ship(self.link, 0)
        written = [self.write(3), self.write(5)]
        for seq, entry in written:
            self.link.ship(seq, entry)
        self.client.calls[0].confirm(1)
        self.assertEqual([tuple(e) for e in self.client.calls[1].body["entries"]], written)

    def test_large_backlog_is_split(self) -> None:
        """No request carries more than MAX_BATCH entries; the rest follow in order."""
        self.patch(replication, "MAX_BATCH", 2)
        waiting = [self.ship(self.link) for _ in range(6)]
        self.client.calls[0].confirm(1)
        self.client.calls[1].confirm(3)
        self.client.calls[2].confirm(5)
        self.assertEqual([c.seqs for c in self.client.calls], [[1], [2, 3], [4, 5], [6]])
        self.assertNoResult(waiting[5])
        self.client.calls[3].confirm(6)
        for d in waiting:
            self.successResultOf(d)

    def test_gap_answer_resends_from_the_log(self) -> None:
        """A 409 with last_seq makes the link resend the missing entries from the log, then the new ones."""
        for n in (1, 2):
            d = self.ship(self.link)
            self.client.calls[-1].confirm(n)
            self.successResultOf(d)
        third = self.ship(self.link)  # the follower lost entry 2 meanwhile (say, restored a backup)
        self.client.calls[-1].gap(1)
        self.assertNoResult(third)
        self.assertEqual(self.link.confirmed, 1)
        resend = self.client.calls[-1]
        self.assertEqual(resend.seqs, [2, 3])
        self.assertEqual(
            [tuple(e) for e in resend.body["entries"]], self.successResultOf(self.leader.entries_after(1))
        )
        resend.confirm(3)
        self.successResultOf(third)

    def test_gap_answer_confirms_what_the_follower_has(self) -> None:
        """Writes at or below the last_seq of a 409 are confirmed; later ones are resent."""
        first = self.ship(self.link)
        second = self.ship(self.link)
        self.client.calls[0].confirm(1)
        self.assertEqual(self.client.calls[1].seqs, [2])
        third = self.ship(self.link)
        self.client.calls[1].gap(2)  # it had 2 already (an earlier, lost answer) but not more
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertNoResult(third)
        self.assertEqual(self.client.calls[2].seqs, [3])

    def test_transport_failure_fails_the_waiting_writes(self) -> None:
        """When the request fails, the write in flight and those queued behind it fail with Unavailable."""
        in_flight = self.ship(self.link)
        queued = self.ship(self.link)
        self.client.calls[0].deferred.errback(Unavailable("catalog-2 is unreachable: ConnectError"))
        for d in (in_flight, queued):
            failure = self.failureResultOf(d, Unavailable)
            self.assertIn("catalog-2 did not confirm the write", failure.value.message)
            self.assertIn("unreachable", failure.value.message)
        self.assertEqual(len(self.client.calls), 1)  # the queued entry was not sent
        self.assertEqual(self.link.confirmed, 0)

    def test_next_write_catches_up_after_a_failure(self) -> None:
        """The batch after a failure starts with the missed entries, read from the leader's log."""
        confirmed = self.ship(self.link)
        self.client.calls[0].confirm(1)
        self.successResultOf(confirmed)
        lost = [self.ship(self.link), self.ship(self.link)]
        self.client.calls[1].deferred.errback(Unavailable("catalog-2 is unreachable: ConnectError"))
        for d in lost:
            self.failureResultOf(d, Unavailable)

        after = self.ship(self.link)
        catch_up = self.client.calls[2]
        self.assertEqual(catch_up.seqs, [2, 3, 4])
        self.assertEqual(
            [tuple(e) for e in catch_up.body["entries"]], self.successResultOf(self.leader.entries_after(1))
        )
        catch_up.confirm(4)
        self.successResultOf(after)
        self.assertEqual(self.link.confirmed, 4)

    def test_error_answer_fails_the_write(self) -> None:
        """A non-2xx answer without last_seq (here a 401) fails the write with the replica's message."""
        shipped = self.ship(self.link)
        body = {"error": {"code": 401, "message": "wrong cluster secret"}}
        self.client.calls[0].deferred.callback(response(401, body))
        failure = self.failureResultOf(shipped, Unavailable)
        self.assertIn("wrong cluster secret", failure.value.message)
        self.assertEqual(self.link.confirmed, 0)

    def test_conflict_without_last_seq_fails_the_write(self) -> None:
        """A 409 that is not a gap answer (no last_seq) is an error, not a confirmation."""
        shipped = self.ship(self.link)
        body = {"error": {"code": 409, "message": "something else"}}
        self.client.calls[0].deferred.callback(response(409, body))
        self.failureResultOf(shipped, Unavailable)
        self.assertEqual(self.link.confirmed, 0)

    def test_unexpected_exception_fails_the_write(self) -> None:
        """Any failure of the request (not only BazarError) becomes Unavailable for the waiting writes."""
        shipped = self.ship(self.link)
        self.client.calls[0].deferred.errback(RuntimeError("boom"))
        failure = self.failureResultOf(shipped, Unavailable)
        self.assertIn("boom", failure.value.message)

    def test_link_keeps_working_after_a_failure(self) -> None:
        """A failure does not leave the link stuck 'sending': the next ship sends at once."""
        failed = self.ship(self.link)
        self.client.calls[0].deferred.errback(Unavailable("down"))
        self.failureResultOf(failed, Unavailable)
        later = self.ship(self.link)
        self.assertEqual(len(self.client.calls), 2)
        self.client.calls[1].confirm(2)
        self.successResultOf(later)


class RealFollowerTests(ReplicationTestCase):
    """The link against real follower stores: the follower always ends equal to the leader."""

    def setUp(self) -> None:
        super().setUp()
        self.follower = self.catalog()
        self.client = FollowerClient({FOLLOWER.name: self.follower})
        self.link = FollowerLink(FOLLOWER, self.client, self.leader)  # type: ignore[arg-type]

    def test_writes_reach_the_follower(self) -> None:
        """Every shipped write is applied by the follower, which ends with the leader's digest."""
        for book in (0, 6, 6, 2):
            self.successResultOf(self.ship(self.link, book))
        self.assertInSync(self.follower)
        self.assertEqual(self.link.confirmed, 4)

    def test_batched_while_in_flight(self) -> None:
        """Writes shipped while one request is held go out as one batch and all get confirmed."""
        self.client.hold = True
        waiting = [self.ship(self.link, book) for book in (0, 1, 2, 3)]
        self.client.deliver()
        for d in waiting:
            self.successResultOf(d)
        self.assertEqual(self.client.sent, [("catalog-2", [1]), ("catalog-2", [2, 3, 4])])
        self.assertInSync(self.follower)

    def test_catches_up_after_being_down(self) -> None:
        """Writes missed while the follower was down reach it with the next write."""
        self.successResultOf(self.ship(self.link))
        self.client.down.add(FOLLOWER.name)
        for book in (1, 2):
            self.failureResultOf(self.ship(self.link, book), Unavailable)
        self.client.down.clear()
        self.successResultOf(self.ship(self.link, 3))
        self.assertInSync(self.follower)
        self.assertEqual(self.client.sent[-1], ("catalog-2", [2, 3, 4]))

    def test_follower_restored_from_an_old_copy(self) -> None:
        """A follower that lost entries answers 409 with its last_seq; the link refills it from the log."""
        for _ in range(3):
            self.successResultOf(self.ship(self.link))
        restored = self.catalog()  # as of seq 1
        self.successResultOf(restored.apply(self.successResultOf(self.leader.entries_after(0, 1))))
        self.client.followers[FOLLOWER.name] = restored
        self.successResultOf(self.ship(self.link))
        self.assertEqual(self.client.sent[-2:], [("catalog-2", [4]), ("catalog-2", [2, 3, 4])])
        self.assertInSync(restored)

    def test_long_outage_catches_up_in_several_batches(self) -> None:
        """A backlog longer than MAX_BATCH is resent in batches; the follower ends equal."""
        self.patch(replication, "MAX_BATCH", 2)
        self.successResultOf(self.ship(self.link))
        self.client.down.add(FOLLOWER.name)
        for _ in range(5):
            self.failureResultOf(self.ship(self.link), Unavailable)
        self.client.down.clear()
        last = self.ship(self.link)  # seq 7; the follower is at 1
        self.successResultOf(last)
        self.assertInSync(self.follower)
        self.assertEqual(self.link.confirmed, 7)
        self.assertTrue(all(sent == sorted(sent) for _, sent in self.client.sent))


class SequencerTests(ReplicationTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.client = ScriptedClient()
        self.links = [
            FollowerLink(follower, self.client, self.leader)  # type: ignore[arg-type]
            for follower in (FOLLOWER, OTHER)
        ]
        self.after_calls: list[Entry] = []
        self.after_result: Deferred[None] = Deferred()
        self.sequencer = Sequencer(self.leader, self.links, self.after)

    def after(self, entry: Entry) -> Deferred[None]:
        self.after_calls.append(entry)
        return self.after_result

    def test_write_waits_for_every_follower_then_runs_after(self) -> None:
        """after(entry) runs once all followers confirmed, and the write fires only after it."""
        written = self.sequencer.write(self.leader.buy(6, 2))
        self.assertEqual([c.replica for c in self.client.calls], [FOLLOWER, OTHER])
        self.assertEqual([c.seqs for c in self.client.calls], [[1], [1]])

        self.client.to(FOLLOWER)[0].confirm(1)
        self.assertEqual(self.after_calls, [])
        self.assertNoResult(written)

        self.client.to(OTHER)[0].confirm(1)
        entry = self.successResultOf(self.leader.entries_after(0))[0][1]
        self.assertEqual(self.after_calls, [entry])
        self.assertNoResult(written)  # the invalidation is not done yet

        self.after_result.callback(None)
        self.assertEqual(self.successResultOf(written), entry)
        self.assertEqual(entry["book"]["quantity"], 88)

    def test_follower_failure_still_runs_after_then_fails(self) -> None:
        """When a follower fails, after(entry) still runs, and the write then fails with Unavailable."""
        written = self.sequencer.write(self.leader.buy(6, 1))
        self.client.to(FOLLOWER)[0].deferred.errback(Unavailable("catalog-2 is unreachable: ConnectError"))
        self.client.to(OTHER)[0].confirm(1)
        self.assertEqual(len(self.after_calls), 1)
        self.assertEqual(self.after_calls[0]["book"]["id"], 6)
        self.assertNoResult(written)
        self.after_result.callback(None)
        failure = self.failureResultOf(written, Unavailable)
        self.assertIn("catalog-2", failure.value.message)

    def test_after_waits_for_the_slower_follower_even_when_one_failed(self) -> None:
        """after(entry) (the cache invalidation) does not run while a follower may still be applying.

        Otherwise a read served by that follower in between could put the old value back in the
        front end's cache, where it would stay.
        """
        written = self.sequencer.write(self.leader.buy(6, 1))
        self.client.to(FOLLOWER)[0].deferred.errback(Unavailable("catalog-2 is unreachable: ConnectError"))
        self.assertEqual(self.after_calls, [])
        self.assertNoResult(written)
        self.client.to(OTHER)[0].confirm(1)
        self.assertEqual(len(self.after_calls), 1)
        self.after_result.callback(None)
        self.failureResultOf(written, Unavailable)

    def test_failed_store_write_is_not_replicated(self) -> None:
        """A write the store refuses (Conflict) is neither shipped nor followed by after()."""
        written = self.sequencer.write(self.leader.buy(2, 9))
        self.failureResultOf(written, Conflict)
        self.assertEqual(self.client.calls, [])
        self.assertEqual(self.after_calls, [])

    def test_after_failure_fails_the_write(self) -> None:
        """If after() fails (the front end could not be told), the write fails with its error."""
        written = self.sequencer.write(self.leader.buy(6, 1))
        for call in self.client.calls:
            call.confirm(1)
        self.after_result.errback(Unavailable("frontend is unreachable"))
        failure = self.failureResultOf(written, Unavailable)
        self.assertEqual(failure.value.message, "frontend is unreachable")

    def test_without_after_or_followers(self) -> None:
        """A sequencer with no followers and no after() returns the entry at once."""
        sequencer = Sequencer(self.leader, [])
        entry = self.successResultOf(sequencer.write(self.leader.set_price(1, 5.0)))
        self.assertEqual(entry["book"]["price"], 5.0)

    def test_writes_replicate_to_real_followers(self) -> None:
        """Through real followers, several writes leave every replica with the leader's data."""
        followers = {FOLLOWER.name: self.catalog(), OTHER.name: self.catalog()}
        client = FollowerClient(followers)
        links = [FollowerLink(f, client, self.leader) for f in (FOLLOWER, OTHER)]  # type: ignore[arg-type]
        invalidated: list[int] = []

        def after(entry: Entry) -> Deferred[None]:
            invalidated.append(entry["book"]["id"])
            return Deferred.fromCoroutine(_done())

        sequencer = Sequencer(self.leader, links, after)
        for write in (self.leader.buy(6, 1), self.leader.set_price(3, 1.0), self.leader.add_quantity(0, 5)):
            self.successResultOf(sequencer.write(write))
        self.assertEqual(invalidated, [6, 3, 0])
        for follower in followers.values():
            self.assertInSync(follower)


async def _done() -> None:
    return None

"""Tests for ``bazar.replication``: FollowerLink, Sequencer and Heartbeats, over fake clients.

The leader is a real in-memory ``CatalogStore`` (so its log can be resent). Followers are
either scripted (``ScriptedClient``: the test answers each request by hand) or real stores
behind ``FollowerClient``, which answers like the /internal/replicate endpoint does.

The semantics under test: ``ship`` fires True once the follower confirmed, False (never a
failure) as soon as the request fails or at once for a follower out of sync; a heartbeat
brings an out-of-sync follower back from the leader's log; the Sequencer tells the front
end which followers lag before it acknowledges a write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bazar import follower_link
from bazar.catalog.store import CatalogStore
from bazar.client import ReplicaClient, ReplicaResponse
from bazar.config import Replica
from bazar.errors import Conflict, Unavailable
from bazar.follower_link import REPLICATION_TIMEOUT, FollowerLink
from bazar.jsonio import MAX_BODY
from bazar.protocol import REPLICATE_PATH
from bazar.replication import HEARTBEAT_INTERVAL, Heartbeats, Sequencer
from bazar.runners import InlineRunner
from bazar.storage import Entry, ReplicatedStore, SequenceGap


def replica(name: str) -> Replica:
    return Replica(name=name, role="catalog", listen="tcp:0", url=f"http://{name}.invalid")


LEADER = replica("catalog-1")
FOLLOWER = replica("catalog-2")
OTHER = replica("catalog-3")


def response(code: int, body: Any, name: str = "catalog-2") -> ReplicaResponse:
    return ReplicaResponse(code, json.dumps(body).encode(), name)


def seqs(entries: list[Any]) -> list[int]:
    return [seq for seq, _ in entries]


def pairs(entries: list[Any]) -> list[tuple[int, Entry]]:
    return [(seq, entry) for seq, entry in entries]


@dataclass
class Call:
    method: str
    replica: Replica
    path: str
    body: Any
    timeout: float | None
    deferred: Deferred[ReplicaResponse] = field(default_factory=Deferred)

    @property
    def seqs(self) -> list[int]:
        return seqs(self.body["entries"])

    def confirm(self, last_seq: int) -> None:
        self.deferred.callback(response(200, {"last_seq": last_seq}, self.replica.name))

    def gap(self, last_seq: int) -> None:
        body = {"last_seq": last_seq, "error": {"code": 409, "message": "expected another seq"}}
        self.deferred.callback(response(409, body, self.replica.name))

    def unreachable(self) -> None:
        """What ReplicaClient raises for a transport error or a timeout."""
        self.deferred.errback(Unavailable(f"{self.replica.name} is unreachable: ConnectError"))


class ScriptedClient:
    """Records every request; the test answers each one through its ``Call``."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def request(
        self, method: str, replica: Replica, path: str, body: Any = None, timeout: float | None = None
    ) -> Deferred[ReplicaResponse]:
        call = Call(method, replica, path, body, timeout)
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
        self, method: str, replica: Replica, path: str, body: Any = None, timeout: float | None = None
    ) -> Deferred[ReplicaResponse]:
        assert (method, path, timeout) == ("POST", REPLICATE_PATH, REPLICATION_TIMEOUT)
        d: Deferred[ReplicaResponse] = Deferred()
        self.pending.append((replica, json.loads(json.dumps(body)), d))  # as it travels: JSON
        if not self.hold:
            self.deliver()
        return d

    def deliver(self) -> None:
        while self.pending:
            self.deliver_one()

    def deliver_one(self) -> None:
        """Deliver the oldest pending request (what it makes the link send next stays pending
        if ``hold`` is set)."""
        replica, body, d = self.pending.pop(0)
        self.sent.append((replica.name, seqs(body["entries"])))
        if replica.name in self.down:
            d.errback(Unavailable(f"{replica.name} is unreachable: ConnectError"))
            return
        applied: Deferred[Any] = self.followers[replica.name].apply(pairs(body["entries"]))
        applied.addCallbacks(
            lambda last_seq, name=replica.name: response(200, {"last_seq": last_seq}, name),
            self._gap,
            errbackArgs=(replica.name,),
        )
        applied.chainDeferred(d)

    def to(self, name: str) -> list[list[int]]:
        return [sent for to, sent in self.sent if to == name]

    @staticmethod
    def _gap(failure: Failure, name: str) -> ReplicaResponse:
        failure.trap(SequenceGap)
        gap = failure.value
        assert isinstance(gap, SequenceGap)
        return response(409, {"last_seq": gap.last_seq, "error": {"code": 409, "message": gap.message}}, name)


class RecordingNotice:
    """A FrontendNotice that records what it is told; each call answers with the next Deferred
    in ``answers`` (or at once when there is none)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.answers: list[Deferred[Any]] = []

    def _answer(self) -> Deferred[Any]:
        return self.answers.pop(0) if self.answers else succeed(None)

    def written(self, seq: int, entry: Entry, lagging: list[str]) -> Deferred[Any]:
        self.calls.append(("written", seq, entry, list(lagging)))
        return self._answer()

    def written_many(self, writes: list[tuple[int, Entry]]) -> Deferred[Any]:
        self.calls.append(("written_many", list(writes)))
        return self._answer()

    def caught_up(self, follower: str, seq: int) -> Deferred[Any]:
        self.calls.append(("caught_up", follower, seq))
        return self._answer()

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == kind]


class ReplicationTestCase(SynchronousTestCase):
    def catalog(self) -> CatalogStore:
        store = CatalogStore(InlineRunner())
        self.addCleanup(store.close)
        self.successResultOf(store.setup())
        return store

    def setUp(self) -> None:
        self.leader = self.catalog()
        self.clock = Clock()  # the links' deadlines

    def write(self, book_id: int = 6) -> tuple[int, Entry]:
        """One sequenced write at the leader (a purchase of one copy)."""
        return self.successResultOf(self.leader.buy(book_id, 1))

    def ship(self, link: FollowerLink, book_id: int = 6) -> Deferred[bool]:
        seq, entry = self.write(book_id)
        return link.ship(seq, entry)

    def caught_up_calls(self, link: FollowerLink) -> list[tuple[str, int]]:
        """Record every ``on_caught_up`` of ``link``."""
        calls: list[tuple[str, int]] = []
        link.on_caught_up = lambda name, seq: calls.append((name, seq))
        return calls

    def log(self, after: int = 0) -> list[tuple[int, Entry]]:
        return self.successResultOf(self.leader.entries_after(after))

    def assertInSync(self, follower: ReplicatedStore) -> None:
        """Same last_seq and digest (so same data) as the leader."""
        self.assertEqual(self.successResultOf(follower.status()), self.successResultOf(self.leader.status()))


class ShippingTests(ReplicationTestCase):
    """A follower in sync: ordering, batching, gap answers."""

    def setUp(self) -> None:
        super().setUp()
        self.client = ScriptedClient()
        self.link = FollowerLink(FOLLOWER, self.client, self.leader, self.clock)  # type: ignore[arg-type]

    def test_ship_posts_the_entry(self) -> None:
        """A shipped entry is POSTed to the follower's replicate endpoint as [seq, entry] pairs,
        with the leader's last_seq and the replication deadline."""
        seq, entry = self.write()
        self.link.ship(seq, entry)
        [call] = self.client.calls
        self.assertEqual((call.method, call.replica, call.path), ("POST", FOLLOWER, REPLICATE_PATH))
        self.assertEqual(call.body, {"entries": [(1, entry)], "last_seq": 1})
        self.assertEqual(call.timeout, REPLICATION_TIMEOUT)

    def test_fires_true_only_after_the_follower_confirms(self) -> None:
        """ship()'s Deferred waits for the follower's answer, then fires with True."""
        shipped = self.ship(self.link)
        self.assertNoResult(shipped)
        self.client.calls[0].confirm(1)
        self.assertIs(self.successResultOf(shipped), True)
        self.assertEqual((self.link.confirmed, self.link.in_sync), (1, True))

    def test_one_request_at_a_time_in_seq_order(self) -> None:
        """Entries shipped while a request is in flight wait, then go out in one batch, in order."""
        first = self.ship(self.link)
        second = self.ship(self.link)
        third = self.ship(self.link)
        self.assertEqual([c.seqs for c in self.client.calls], [[1]])

        self.client.calls[0].confirm(1)
        self.assertIs(self.successResultOf(first), True)
        self.assertNoResult(second)
        self.assertNoResult(third)
        self.assertEqual([c.seqs for c in self.client.calls], [[1], [2, 3]])
        self.assertEqual(self.client.calls[1].body["last_seq"], 3)

        self.client.calls[1].confirm(3)
        self.assertIs(self.successResultOf(second), True)
        self.assertIs(self.successResultOf(third), True)
        self.assertEqual(len(self.client.calls), 2)
        self.assertEqual(self.link.confirmed, 3)

    def test_batched_entries_are_the_leaders(self) -> None:
        """The batch carries each write's own entry, unchanged."""
        self.ship(self.link, 0)
        written = [self.write(3), self.write(5)]
        for seq, entry in written:
            self.link.ship(seq, entry)
        self.client.calls[0].confirm(1)
        self.assertEqual(pairs(self.client.calls[1].body["entries"]), written)

    def test_large_backlog_is_split(self) -> None:
        """No request carries more than MAX_BATCH entries; the rest follow in order."""
        self.patch(follower_link, "MAX_BATCH", 2)
        waiting = [self.ship(self.link) for _ in range(6)]
        self.client.calls[0].confirm(1)
        self.client.calls[1].confirm(3)
        self.client.calls[2].confirm(5)
        self.assertEqual([c.seqs for c in self.client.calls], [[1], [2, 3], [4, 5], [6]])
        self.assertEqual([self.successResultOf(d) for d in waiting[:5]], [True] * 5)
        self.assertNoResult(waiting[5])
        self.client.calls[3].confirm(6)
        self.assertIs(self.successResultOf(waiting[5]), True)

    def test_gap_answer_resends_from_the_log(self) -> None:
        """A 409 with last_seq makes the link resend the missing entries from the log, then the new ones."""
        for n in (1, 2):
            d = self.ship(self.link)
            self.client.calls[-1].confirm(n)
            self.assertIs(self.successResultOf(d), True)
        third = self.ship(self.link)  # the follower lost entry 2 meanwhile (say, restored a backup)
        self.client.calls[-1].gap(1)
        self.assertNoResult(third)
        self.assertEqual(self.link.confirmed, 1)
        self.assertTrue(self.link.in_sync)  # a gap answer is an answer: the follower is reachable
        resend = self.client.calls[-1]
        self.assertEqual(resend.seqs, [2, 3])
        self.assertEqual(pairs(resend.body["entries"]), self.log(1))
        resend.confirm(3)
        self.assertIs(self.successResultOf(third), True)

    def test_gap_answer_confirms_what_the_follower_has(self) -> None:
        """Writes at or below the last_seq of a 409 are confirmed; later ones are resent."""
        first = self.ship(self.link)
        second = self.ship(self.link)
        self.client.calls[0].confirm(1)
        self.assertEqual(self.client.calls[1].seqs, [2])
        third = self.ship(self.link)
        self.client.calls[1].gap(2)  # it had 2 already (an earlier, lost answer) but not more
        self.assertIs(self.successResultOf(first), True)
        self.assertIs(self.successResultOf(second), True)
        self.assertNoResult(third)
        self.assertEqual(self.client.calls[2].seqs, [3])


class FailureTests(ReplicationTestCase):
    """A request that fails: the waiting writes get False, never a failure, and the link is out of sync."""

    def setUp(self) -> None:
        super().setUp()
        self.client = ScriptedClient()
        self.link = FollowerLink(FOLLOWER, self.client, self.leader, self.clock)  # type: ignore[arg-type]

    def assertOutOfSync(self, *shipped: Deferred[bool], confirmed: int = 0) -> None:
        self.assertEqual([self.successResultOf(d) for d in shipped], [False] * len(shipped))
        self.assertEqual((self.link.in_sync, self.link.confirmed), (False, confirmed))

    def test_transport_failure_releases_every_waiter_with_false(self) -> None:
        """The write in flight and those queued behind it all get False; the queued one is never sent."""
        in_flight = self.ship(self.link)
        queued = self.ship(self.link)
        self.client.calls[0].unreachable()
        self.assertOutOfSync(in_flight, queued)
        self.assertEqual([c.seqs for c in self.client.calls], [[1]])

    def test_error_answer_is_false(self) -> None:
        """A non-2xx answer without last_seq (here a 401) is no confirmation: False."""
        shipped = self.ship(self.link)
        body = {"error": {"code": 401, "message": "wrong cluster secret"}}
        self.client.calls[0].deferred.callback(response(401, body))
        self.assertOutOfSync(shipped)

    def test_conflict_without_last_seq_is_false(self) -> None:
        """A 409 that is not a gap answer (no last_seq) is an error, not a confirmation."""
        shipped = self.ship(self.link)
        self.client.calls[0].deferred.callback(response(409, {"error": {"code": 409, "message": "other"}}))
        self.assertOutOfSync(shipped)

    def test_garbage_answer_is_false(self) -> None:
        """A 200 whose body is not JSON is no confirmation either."""
        shipped = self.ship(self.link)
        self.client.calls[0].deferred.callback(ReplicaResponse(200, b"<html>proxy</html>", "catalog-2"))
        self.assertOutOfSync(shipped)

    def test_unexpected_exception_is_false(self) -> None:
        """Any failure of the request (not only a BazarError) gives False, not a failure."""
        shipped = self.ship(self.link)
        self.client.calls[0].deferred.errback(RuntimeError("boom"))
        self.assertOutOfSync(shipped)

    def test_timeout_is_false(self) -> None:
        """Through a real ReplicaClient: a follower that does not answer within
        REPLICATION_TIMEOUT is out of sync, and its request is cancelled."""
        clock = Clock()
        requests: list[Deferred[Any]] = []

        class Silent:
            def request(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
                requests.append(Deferred())
                return requests[-1]

        client = ReplicaClient(Silent(), "secret", clock)  # type: ignore[arg-type]
        link = FollowerLink(FOLLOWER, client, self.leader, clock)
        shipped = self.ship(link)
        clock.advance(REPLICATION_TIMEOUT - 0.01)
        self.assertNoResult(shipped)
        clock.advance(0.01)
        self.assertIs(self.successResultOf(shipped), False)
        self.assertFalse(link.in_sync)
        self.assertTrue(requests[0].called)  # cancelled by the deadline
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_ships_while_out_of_sync_are_false_at_once_and_not_sent(self) -> None:
        """Once out of sync, a ship neither waits nor sends nor queues anything."""
        failed = self.ship(self.link)
        self.client.calls[0].unreachable()
        self.assertOutOfSync(failed)
        later = [self.ship(self.link) for _ in range(3)]
        self.assertOutOfSync(*later)
        self.assertEqual(len(self.client.calls), 1)
        self.assertEqual(self.link._queue, [])
        self.assertEqual(self.link._waiters, [])

    def test_failure_after_partial_confirmation(self) -> None:
        """Writes confirmed before the failure got True; only the later ones get False."""
        first = self.ship(self.link)
        self.client.calls[0].confirm(1)
        second, third = self.ship(self.link), self.ship(self.link)
        self.client.calls[1].unreachable()
        self.assertIs(self.successResultOf(first), True)
        self.assertOutOfSync(second, third, confirmed=1)

    def test_failure_does_not_leave_the_link_sending(self) -> None:
        """After a failure the next heartbeat goes out at once."""
        self.ship(self.link)
        self.client.calls[0].unreachable()
        self.link.heartbeat()
        self.assertEqual(len(self.client.calls), 2)


class LivenessTests(ReplicationTestCase):
    """A write never waits on a follower longer than REPLICATION_TIMEOUT, whatever it answers."""

    def setUp(self) -> None:
        super().setUp()
        self.client = ScriptedClient()
        self.link = FollowerLink(FOLLOWER, self.client, self.leader, self.clock)  # type: ignore[arg-type]
        self.caught_up = self.caught_up_calls(self.link)

    def unanswered(self) -> list[Call]:
        return [c for c in self.client.calls if not c.deferred.called]

    def test_refusals_that_move_nothing_drop_it_out_of_sync(self) -> None:
        """A follower that answers every request 409 at the same position is out of sync
        REPLICATION_TIMEOUT after the write was shipped, and the write gets False then; the
        link does not resend in a loop meanwhile (a refusal that moved nothing waits for the
        next heartbeat)."""
        shipped = self.ship(self.link)
        step = REPLICATION_TIMEOUT / 20
        for _ in range(19):
            for call in self.unanswered():
                call.gap(0)
            self.clock.advance(step)
        self.assertNoResult(shipped)
        self.clock.advance(step)
        self.assertIs(self.successResultOf(shipped), False)
        self.assertFalse(self.link.in_sync)
        self.assertEqual(len(self.client.calls), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_silent_follower_is_given_up_on_at_the_deadline(self) -> None:
        """With no answer at all (and a client with no deadline of its own), the write waits
        REPLICATION_TIMEOUT and no longer; the late answer then brings the follower back."""
        shipped = self.ship(self.link)
        self.clock.advance(REPLICATION_TIMEOUT - 0.01)
        self.assertNoResult(shipped)
        self.clock.advance(0.01)
        self.assertIs(self.successResultOf(shipped), False)
        self.assertFalse(self.link.in_sync)
        self.client.calls[0].confirm(1)
        self.assertTrue(self.link.in_sync)
        self.assertEqual(self.caught_up, [("catalog-2", 1)])

    def test_each_write_waits_from_its_own_shipping(self) -> None:
        """A write shipped later gets its own full deadline once the earlier ones are confirmed."""
        first = self.ship(self.link)
        self.clock.advance(REPLICATION_TIMEOUT / 2)
        second = self.ship(self.link)
        self.client.calls[0].confirm(1)
        self.assertIs(self.successResultOf(first), True)
        self.clock.advance(REPLICATION_TIMEOUT / 2 + 0.01)
        self.assertNoResult(second)  # shipped half a deadline ago
        self.assertTrue(self.link.in_sync)
        self.clock.advance(REPLICATION_TIMEOUT / 2)
        self.assertIs(self.successResultOf(second), False)
        self.assertFalse(self.link.in_sync)

    def test_slow_progress_does_not_hold_a_write_past_its_deadline(self) -> None:
        """A follower that confirms earlier writes, one at a time, but not this one within the
        deadline: the write stops waiting all the same."""
        shipped = [self.ship(self.link) for _ in range(4)]
        for n in range(1, 4):
            self.clock.advance(REPLICATION_TIMEOUT / 4)
            self.unanswered()[0].confirm(n)
        self.assertEqual([self.successResultOf(d) for d in shipped[:3]], [True] * 3)
        self.clock.advance(REPLICATION_TIMEOUT / 4)
        self.assertIs(self.successResultOf(shipped[3]), False)

    def test_a_write_the_follower_already_has_is_confirmed_at_once(self) -> None:
        """A write that a catch-up read from the log (and the follower confirmed) before it was
        shipped is confirmed at once, with nothing sent."""
        first = self.ship(self.link)
        seq, entry = self.write()  # committed, not shipped yet
        self.client.calls[0].confirm(seq)  # the follower has it already (sent with a catch-up)
        self.assertIs(self.successResultOf(first), True)
        self.assertIs(self.successResultOf(self.link.ship(seq, entry)), True)
        self.assertEqual(len(self.client.calls), 1)

    def test_confirmed_writes_leave_no_deadline_behind(self) -> None:
        """Once every waiting write is confirmed, no timer is left on the clock."""
        shipped = self.ship(self.link)
        self.client.calls[0].confirm(1)
        self.assertIs(self.successResultOf(shipped), True)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class HeartbeatTests(ReplicationTestCase):
    """Heartbeats bring an out-of-sync follower back, from the log."""

    def setUp(self) -> None:
        super().setUp()
        self.client = ScriptedClient()
        self.link = FollowerLink(FOLLOWER, self.client, self.leader, self.clock)  # type: ignore[arg-type]
        self.caught_up = self.caught_up_calls(self.link)

    def drop_out_of_sync(self, confirmed: int, lost: int) -> None:
        """``confirmed`` writes confirmed, then ``lost`` more while the follower was unreachable."""
        for n in range(1, confirmed + 1):
            d = self.ship(self.link)
            self.client.calls[-1].confirm(n)
            self.assertIs(self.successResultOf(d), True)
        if lost:
            d = self.ship(self.link)
            self.client.calls[-1].unreachable()
            self.assertIs(self.successResultOf(d), False)
            for _ in range(lost - 1):
                self.assertIs(self.successResultOf(self.ship(self.link)), False)
        self.assertEqual(self.link.in_sync, not lost)
        self.client.calls.clear()

    def test_heartbeat_of_a_follower_in_sync(self) -> None:
        """No entries, the leader's last_seq; fires True; nothing to catch up, so no on_caught_up."""
        self.drop_out_of_sync(confirmed=2, lost=0)
        beat = self.link.heartbeat()
        [call] = self.client.calls
        self.assertEqual(
            (call.method, call.path, call.timeout), ("POST", REPLICATE_PATH, REPLICATION_TIMEOUT)
        )
        self.assertEqual(call.body, {"entries": [], "last_seq": 2})
        self.assertNoResult(beat)
        call.confirm(2)
        self.assertIs(self.successResultOf(beat), True)
        self.assertEqual(self.caught_up, [])
        self.assertEqual(len(self.client.calls), 1)

    def test_heartbeat_before_any_write(self) -> None:
        """With an empty log a heartbeat carries last_seq 0."""
        beat = self.link.heartbeat()
        self.assertEqual(self.client.calls[0].body, {"entries": [], "last_seq": 0})
        self.client.calls[0].confirm(0)
        self.assertIs(self.successResultOf(beat), True)

    def test_heartbeat_brings_an_out_of_sync_follower_back(self) -> None:
        """The heartbeat carries what the follower missed, from the log; once confirmed, the
        follower is in sync again and on_caught_up fires once with the confirmed seq."""
        self.drop_out_of_sync(confirmed=1, lost=3)
        beat = self.link.heartbeat()
        [call] = self.client.calls
        self.assertEqual(call.seqs, [2, 3, 4])
        self.assertEqual(pairs(call.body["entries"]), self.log(1))
        self.assertEqual(call.body["last_seq"], 4)
        self.assertEqual(self.caught_up, [])
        call.confirm(4)
        self.assertIs(self.successResultOf(beat), True)
        self.assertEqual((self.link.in_sync, self.link.confirmed), (True, 4))
        self.assertEqual(self.caught_up, [("catalog-2", 4)])

        # In sync again: writes wait for it, and later heartbeats do not report it again.
        shipped = self.ship(self.link)
        self.assertNoResult(shipped)
        self.client.calls[-1].confirm(5)
        self.assertIs(self.successResultOf(shipped), True)
        self.link.heartbeat()
        self.client.calls[-1].confirm(5)
        self.assertEqual(self.caught_up, [("catalog-2", 4)])

    def test_heartbeat_that_fails_again_keeps_it_out_of_sync(self) -> None:
        """A follower still unreachable stays out of sync; no on_caught_up; the next heartbeat retries."""
        self.drop_out_of_sync(confirmed=1, lost=1)
        beat = self.link.heartbeat()
        self.client.calls[0].unreachable()
        self.assertIs(self.successResultOf(beat), False)
        self.assertFalse(self.link.in_sync)
        self.assertEqual(self.caught_up, [])
        self.link.heartbeat()
        self.assertEqual([c.seqs for c in self.client.calls], [[2], [2]])

    def test_heartbeat_failure_drops_a_follower_in_sync(self) -> None:
        """A follower in sync that does not answer a heartbeat is out of sync: the next write
        does not wait for it."""
        self.drop_out_of_sync(confirmed=1, lost=0)
        beat = self.link.heartbeat()
        self.client.calls[0].unreachable()
        self.assertIs(self.successResultOf(beat), False)
        self.assertFalse(self.link.in_sync)
        self.assertIs(self.successResultOf(self.ship(self.link)), False)
        self.assertEqual(len(self.client.calls), 1)

    def test_long_outage_is_resent_in_several_batches(self) -> None:
        """A backlog longer than MAX_BATCH comes back in batches, in order; writes made during
        the catch-up are included; on_caught_up fires once, with the last seq."""
        self.patch(follower_link, "MAX_BATCH", 2)
        self.drop_out_of_sync(confirmed=1, lost=5)  # the follower is at 1, the leader at 6
        beat = self.link.heartbeat()
        self.assertEqual(self.client.calls[0].seqs, [2, 3])
        self.client.calls[0].confirm(3)
        self.assertIs(self.successResultOf(beat), False)  # still catching up
        self.assertEqual(self.client.calls[1].seqs, [4, 5])
        self.assertIs(self.successResultOf(self.ship(self.link)), False)  # seq 7, during the catch-up
        self.link.heartbeat()  # a request is in flight: nothing more
        self.assertEqual(len(self.client.calls), 2)
        self.client.calls[1].confirm(5)
        self.assertEqual(self.client.calls[2].seqs, [6, 7])
        self.assertEqual(self.caught_up, [])
        self.client.calls[2].confirm(7)
        self.assertEqual(len(self.client.calls), 3)
        self.assertEqual((self.link.in_sync, self.link.confirmed), (True, 7))
        self.assertEqual(self.caught_up, [("catalog-2", 7)])

    def test_heartbeat_while_a_request_is_in_flight_does_nothing(self) -> None:
        """One request per follower at a time: a heartbeat during a write's request sends nothing
        and fires at once with the link's state."""
        shipped = self.ship(self.link)
        beat = self.link.heartbeat()
        self.assertIs(self.successResultOf(beat), True)
        self.assertEqual(len(self.client.calls), 1)
        self.client.calls[0].confirm(1)
        self.assertIs(self.successResultOf(shipped), True)

    def test_heartbeat_while_a_heartbeat_is_in_flight_does_nothing(self) -> None:
        self.drop_out_of_sync(confirmed=0, lost=2)
        first = self.link.heartbeat()
        second = self.link.heartbeat()
        self.assertIs(self.successResultOf(second), False)
        self.assertEqual(len(self.client.calls), 1)
        self.client.calls[0].confirm(2)
        self.assertIs(self.successResultOf(first), True)
        self.assertEqual(self.caught_up, [("catalog-2", 2)])

    def test_ship_during_a_heartbeat_waits_for_it(self) -> None:
        """A write shipped while a heartbeat of an in-sync follower is in flight goes out next."""
        beat = self.link.heartbeat()
        shipped = self.ship(self.link)
        self.assertEqual([c.seqs for c in self.client.calls], [[]])
        self.client.calls[0].confirm(0)
        self.assertIs(self.successResultOf(beat), True)
        self.assertEqual(self.client.calls[1].seqs, [1])
        self.client.calls[1].confirm(1)
        self.assertIs(self.successResultOf(shipped), True)

    def test_heartbeat_answered_with_a_gap(self) -> None:
        """A follower behind what the link believed (restored from a backup) answers 409 with its
        last_seq; the link refills it from the log and brings it back."""
        self.drop_out_of_sync(confirmed=2, lost=1)  # the link believes 2, the leader has 3
        self.link.heartbeat()
        self.assertEqual(self.client.calls[0].seqs, [3])
        self.client.calls[0].gap(0)  # it really has nothing
        self.assertEqual(self.link.confirmed, 0)
        self.assertEqual(self.client.calls[1].seqs, [1, 2, 3])
        self.assertEqual(self.caught_up, [])
        self.client.calls[1].confirm(3)
        self.assertEqual(self.caught_up, [("catalog-2", 3)])


class RealFollowerTests(ReplicationTestCase):
    """The link against real follower stores: the follower always ends equal to the leader."""

    def setUp(self) -> None:
        super().setUp()
        self.follower = self.catalog()
        self.client = FollowerClient({FOLLOWER.name: self.follower})
        self.link = FollowerLink(FOLLOWER, self.client, self.leader, self.clock)  # type: ignore[arg-type]
        self.caught_up = self.caught_up_calls(self.link)

    def test_writes_reach_the_follower(self) -> None:
        """Every shipped write is applied by the follower, which ends with the leader's digest."""
        for book in (0, 6, 6, 2):
            self.assertIs(self.successResultOf(self.ship(self.link, book)), True)
        self.assertInSync(self.follower)
        self.assertEqual(self.link.confirmed, 4)

    def test_batched_while_in_flight(self) -> None:
        """Writes shipped while one request is held go out as one batch and all get confirmed."""
        self.client.hold = True
        waiting = [self.ship(self.link, book) for book in (0, 1, 2, 3)]
        self.client.deliver()
        self.assertEqual([self.successResultOf(d) for d in waiting], [True] * 4)
        self.assertEqual(self.client.sent, [("catalog-2", [1]), ("catalog-2", [2, 3, 4])])
        self.assertInSync(self.follower)

    def test_catches_up_after_being_down(self) -> None:
        """Writes missed while the follower was down reach it with the next heartbeat."""
        self.assertIs(self.successResultOf(self.ship(self.link)), True)
        self.client.down.add(FOLLOWER.name)
        for book in (1, 2, 3):
            self.assertIs(self.successResultOf(self.ship(self.link, book)), False)
        self.assertEqual(self.client.to("catalog-2"), [[1], [2]])  # 3 and 4 were never sent
        self.client.down.clear()
        self.assertIs(self.successResultOf(self.link.heartbeat()), True)
        self.assertEqual(self.client.sent[-1], ("catalog-2", [2, 3, 4]))
        self.assertInSync(self.follower)
        self.assertEqual(self.caught_up, [("catalog-2", 4)])

    def test_follower_restored_from_an_old_copy(self) -> None:
        """A follower that lost entries answers 409 with its last_seq; the link refills it from the log."""
        for _ in range(3):
            self.successResultOf(self.ship(self.link))
        restored = self.catalog()  # as of seq 1
        self.successResultOf(restored.apply(self.successResultOf(self.leader.entries_after(0, 1))))
        self.client.followers[FOLLOWER.name] = restored
        self.assertIs(self.successResultOf(self.ship(self.link)), True)
        self.assertEqual(self.client.sent[-2:], [("catalog-2", [4]), ("catalog-2", [2, 3, 4])])
        self.assertInSync(restored)

    def test_follower_restored_from_a_copy_older_than_a_batch(self) -> None:
        """A write waits while a follower that lost more than MAX_BATCH entries is refilled in
        batches, and is then confirmed; the follower ends equal."""
        self.patch(follower_link, "MAX_BATCH", 2)
        for _ in range(5):
            self.successResultOf(self.ship(self.link))
        self.client.followers[FOLLOWER.name] = restored = self.catalog()  # empty
        self.assertIs(self.successResultOf(self.ship(self.link)), True)
        self.assertInSync(restored)
        self.assertTrue(self.link.in_sync)
        self.assertEqual(self.caught_up, [])  # it never dropped out of sync

    def test_long_outage_catches_up_in_several_batches(self) -> None:
        """A backlog longer than MAX_BATCH is resent in batches of at most MAX_BATCH, in order."""
        self.patch(follower_link, "MAX_BATCH", 2)
        self.successResultOf(self.ship(self.link))
        self.client.down.add(FOLLOWER.name)
        for _ in range(6):
            self.assertIs(self.successResultOf(self.ship(self.link)), False)
        self.client.down.clear()
        self.successResultOf(self.link.heartbeat())
        self.assertInSync(self.follower)
        self.assertEqual((self.link.in_sync, self.link.confirmed), (True, 7))
        catch_up = self.client.to("catalog-2")[2:]
        self.assertEqual(catch_up, [[2, 3], [4, 5], [6, 7]])
        self.assertEqual(self.caught_up, [("catalog-2", 7)])

    def test_far_behind_while_writes_go_on(self) -> None:
        """A follower the link believes in sync that holds nothing (a replaced sequencer that
        forgot its writes) while writes go on, with a backlog longer than a batch: every
        request is a gap-free run from what the follower has, so it catches up in a few
        requests and every write waiting for it is confirmed. (Before: a batch of the backlog's
        first entries and the newest write, with a gap between them, refused and resent forever.)"""
        self.patch(follower_link, "MAX_BATCH", 3)
        for _ in range(10):
            self.write()  # in the log; the follower never got them
        self.client.hold = True
        waiting = [self.ship(self.link)]
        for _ in range(4):  # writes keep coming while the first requests are answered
            self.client.deliver_one()
            waiting.append(self.ship(self.link))
        for _ in range(20):
            if not self.client.pending:
                break
            self.client.deliver_one()
        self.assertEqual(self.client.pending, [])
        self.assertEqual([self.successResultOf(d) for d in waiting], [True] * 5)
        self.assertInSync(self.follower)
        for sent in self.client.to("catalog-2"):
            self.assertEqual(sent, list(range(sent[0], sent[0] + len(sent))), "a batch with a gap")
        self.assertLessEqual(len(self.client.sent), 7)  # 15 entries in batches of 3, and 2 spare

    def test_far_behind_with_entries_over_the_byte_budget(self) -> None:
        """The same with entries cut by MAX_BATCH_BYTES rather than MAX_BATCH: no batch has a gap."""
        self.patch(follower_link, "MAX_BATCH_BYTES", 400)
        for _ in range(12):
            self.write()
        self.client.hold = True
        waiting = [self.ship(self.link)]
        for _ in range(3):
            self.client.deliver_one()
            waiting.append(self.ship(self.link))
        for _ in range(30):
            if not self.client.pending:
                break
            self.client.deliver_one()
        self.assertEqual([self.successResultOf(d) for d in waiting], [True] * 4)
        self.assertInSync(self.follower)
        for sent in self.client.to("catalog-2"):
            self.assertEqual(sent, list(range(sent[0], sent[0] + len(sent))), "a batch with a gap")

    def test_no_request_exceeds_the_body_limit(self) -> None:
        """A backlog of big entries (a real one: 600 keyed purchases) is resent in requests
        that each fit in what a replica accepts, in order, until the follower has it all."""
        seq, entry = self.successResultOf(self.leader.set_quantity(0, 1000))
        self.assertIs(self.successResultOf(self.link.ship(seq, entry)), True)
        self.client.down.add(FOLLOWER.name)
        bodies: list[int] = []
        request = self.client.request

        def measured(*args: Any, **kwargs: Any) -> Deferred[ReplicaResponse]:
            bodies.append(len(json.dumps(args[3])))
            return request(*args, **kwargs)

        for n in range(600):
            self.successResultOf(self.leader.buy(0, 1, key=f"client-purchase-{n:06d}-" + "k" * 120))
        self.client.down.clear()
        self.client.request = measured  # type: ignore[method-assign]
        self.successResultOf(self.link.heartbeat())
        self.assertInSync(self.follower)
        self.assertEqual((self.link.in_sync, self.link.confirmed), (True, 601))
        self.assertGreater(len(bodies), 2)
        self.assertLess(max(bodies), MAX_BODY)
        catch_up = [seq for sent in self.client.to("catalog-2")[1:] for seq in sent]
        self.assertEqual(catch_up, list(range(2, 602)))

    def test_down_and_back_repeatedly(self) -> None:
        """Outages and heartbeats in any order: the follower always ends equal to the leader."""
        for round_ in range(4):
            self.client.down.add(FOLLOWER.name)
            for book in range(round_ + 1):
                self.successResultOf(self.ship(self.link, book))
            self.successResultOf(self.link.heartbeat())
            self.client.down.clear()
            self.assertIs(self.successResultOf(self.link.heartbeat()), True)
            self.assertInSync(self.follower)
            self.assertIs(self.successResultOf(self.ship(self.link)), True)
        self.assertInSync(self.follower)
        self.assertEqual([seq for _, seq in self.caught_up], [1, 4, 8, 13])


class SequencerTests(ReplicationTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.client = ScriptedClient()
        self.links = [
            FollowerLink(follower, self.client, self.leader, self.clock)  # type: ignore[arg-type]
            for follower in (FOLLOWER, OTHER)
        ]
        self.notice = RecordingNotice()
        self.sequencer = Sequencer(self.leader, self.links, self.notice)

    def written_answer(self) -> Deferred[Any]:
        """Make the next notice answer wait for the test."""
        d: Deferred[Any] = Deferred()
        self.notice.answers.append(d)
        return d

    def test_running_waits_for_the_writes_under_way_only(self) -> None:
        """What a read at the sequencer waits for: every write under way when it arrived,
        acknowledged or refused, and none that starts later."""
        self.assertIsNone(self.sequencer.running())
        self.notice.answers[:] = [succeed(None), succeed(None)]
        first = self.sequencer.write(self.leader.buy(6, 1))
        second = self.sequencer.write(self.leader.buy(6, 1))
        running = self.sequencer.running()
        assert running is not None
        third_told = self.written_answer()  # the front end has not answered the third yet
        third = self.sequencer.write(self.leader.buy(6, 1))
        self.client.to(FOLLOWER)[0].confirm(1)
        self.client.to(OTHER)[0].confirm(1)
        self.successResultOf(first)
        self.assertNoResult(running)
        self.client.to(FOLLOWER)[1].confirm(3)  # the second and third, batched
        self.client.to(OTHER)[1].unreachable()  # ... and lost: the writes go on without it
        self.successResultOf(second)
        self.assertIsNone(self.successResultOf(running))  # the third is still under way
        self.assertNoResult(third)
        self.assertIsNotNone(self.sequencer.running())
        third_told.callback(None)
        self.successResultOf(third)
        self.assertIsNone(self.sequencer.running())

    def test_write_tells_the_front_end_while_shipping_and_waits_for_both(self) -> None:
        """written(seq, entry, []) goes out with the shipments (the front end stores no older
        answer from then on); the write fires only once every follower confirmed and the front
        end answered, whichever comes last."""
        told = self.written_answer()
        written = self.sequencer.write(self.leader.buy(6, 2))
        self.assertEqual([c.replica for c in self.client.calls], [FOLLOWER, OTHER])
        self.assertEqual([c.seqs for c in self.client.calls], [[1], [1]])
        [(_, entry)] = self.log()
        self.assertEqual(self.notice.calls, [("written", 1, entry, [])])

        told.callback(None)
        self.client.to(FOLLOWER)[0].confirm(1)
        self.assertNoResult(written)  # catalog-3 may still serve the old value

        self.client.to(OTHER)[0].confirm(1)
        self.assertEqual(self.successResultOf(written), entry)
        self.assertEqual(entry["book"]["quantity"], 88)
        self.assertEqual(len(self.notice.calls), 1)  # nobody lagged: one message

    def test_write_waits_for_the_front_end_after_the_followers(self) -> None:
        """Followers that confirm first do not release the write while the front end may
        still hold the old value."""
        told = self.written_answer()
        written = self.sequencer.write(self.leader.buy(6, 2))
        for call in self.client.calls:
            call.confirm(1)
        self.assertNoResult(written)
        told.callback(None)
        self.successResultOf(written)

    def test_failed_follower_is_named_lagging_before_the_ack(self) -> None:
        """A follower that fails does not fail the write: a second written() names it lagging,
        and the write fires (with the entry) only once that one's Deferred has."""
        self.written_answer().callback(None)
        lagging_told = self.written_answer()
        written = self.sequencer.write(self.leader.buy(6, 1))
        [(_, entry)] = self.log()
        self.client.to(FOLLOWER)[0].unreachable()
        self.assertEqual(self.notice.calls, [("written", 1, entry, [])])  # catalog-3 may still be applying
        self.client.to(OTHER)[0].confirm(1)
        self.assertEqual(self.notice.calls[1:], [("written", 1, entry, ["catalog-2"])])
        self.assertNoResult(written)
        lagging_told.callback(None)
        self.assertEqual(self.successResultOf(written), entry)

    def test_lagging_notice_waits_for_the_slower_follower_even_when_one_failed(self) -> None:
        """Which followers lag is told once every follower answered (catalog-2 may still fail),
        and the write waits for it."""
        written = self.sequencer.write(self.leader.buy(6, 1))
        self.client.to(OTHER)[0].unreachable()
        self.assertEqual([c[3] for c in self.notice.calls], [[]])
        self.assertNoResult(written)
        self.client.to(FOLLOWER)[0].confirm(1)
        self.assertEqual([c[3] for c in self.notice.calls], [[], ["catalog-3"]])
        self.successResultOf(written)

    def test_out_of_sync_follower_is_not_waited_for(self) -> None:
        """A follower already out of sync is not sent the write; it is named lagging at once."""
        self.sequencer.write(self.leader.buy(6, 1))
        self.client.to(FOLLOWER)[0].unreachable()
        self.client.to(OTHER)[0].confirm(1)
        self.client.calls.clear()

        written = self.sequencer.write(self.leader.buy(6, 1))
        self.assertEqual([c.replica for c in self.client.calls], [OTHER])
        self.client.calls[0].confirm(2)
        self.assertEqual(self.notice.calls[-1][1], 2)
        self.assertEqual(self.notice.calls[-1][3], ["catalog-2"])
        self.assertEqual(self.successResultOf(written)["book"]["quantity"], 88)

    def test_a_retry_waits_for_a_call_in_flight_rather_than_naming_its_follower_lagging(self) -> None:
        """A keyed retry at a new sequencer (its links know nothing of their followers yet)
        while a heartbeat is on its way: the retry waits for that heartbeat's answer. Named
        lagging, an in-sync follower would stay unread: nothing would later say it caught up."""
        self.successResultOf(self.leader.buy(6, 1, key="k"))  # the original, logged before
        self.sequencer.heartbeat()
        [beat, other_beat] = self.client.calls
        written = self.sequencer.write(self.leader.buy(6, 1, key="k"))
        other_beat.confirm(1)
        self.assertNoResult(written)
        beat.confirm(1)
        self.assertEqual(self.successResultOf(written)["book"]["quantity"], 89)
        self.assertEqual([c[3] for c in self.notice.calls], [[]])
        self.assertEqual(len(self.client.calls), 2)  # the answers in flight were enough

    def test_a_retry_names_lagging_a_follower_that_fails_to_confirm(self) -> None:
        """A keyed retry whose original a follower lacks: that follower is sent it; if that
        fails, it is named lagging before the answer, as for a new write."""
        self.successResultOf(self.leader.buy(6, 1, key="k"))
        written = self.sequencer.write(self.leader.buy(6, 1, key="k"))
        self.assertEqual([c.seqs for c in self.client.calls], [[1], [1]])  # resent from the log
        self.client.to(FOLLOWER)[0].confirm(1)
        self.client.to(OTHER)[0].unreachable()
        self.successResultOf(written)
        self.assertEqual([c[3] for c in self.notice.calls], [[], ["catalog-3"]])

    def test_every_follower_lagging(self) -> None:
        """With no follower reachable the write still succeeds at the sequencer, naming both."""
        written = self.sequencer.write(self.leader.set_price(1, 3.0))
        for call in self.client.calls:
            call.unreachable()
        self.assertEqual([c[3] for c in self.notice.calls], [[], ["catalog-2", "catalog-3"]])
        self.assertEqual(self.successResultOf(written)["book"]["price"], 3.0)

    def test_notice_failure_fails_the_write(self) -> None:
        """If written() fails (the front end could not be told), the write fails with its error."""
        told = self.written_answer()
        written = self.sequencer.write(self.leader.buy(6, 1))
        for call in self.client.calls:
            call.confirm(1)
        told.errback(Unavailable("frontend is unreachable"))
        failure = self.failureResultOf(written, Unavailable)
        self.assertEqual(failure.value.message, "frontend is unreachable")

    def test_failed_store_write_is_not_replicated(self) -> None:
        """A write the store refuses (Conflict) is neither shipped nor told to the front end."""
        written = self.sequencer.write(self.leader.buy(2, 9))
        self.failureResultOf(written, Conflict)
        self.assertEqual(self.client.calls, [])
        self.assertEqual(self.notice.calls, [])

    def test_without_notice_or_followers(self) -> None:
        """A sequencer with no followers and no notice returns the entry at once."""
        sequencer = Sequencer(self.leader, [])
        entry = self.successResultOf(sequencer.write(self.leader.set_price(1, 5.0)))
        self.assertEqual(entry["book"]["price"], 5.0)
        self.assertEqual(self.successResultOf(sequencer.heartbeat()), [])
        self.assertEqual(sequencer.followers(), {})

    def test_followers_reports_confirmed_and_in_sync(self) -> None:
        self.assertEqual(
            self.sequencer.followers(),
            {
                "catalog-2": {"confirmed": 0, "in_sync": True, "readable": True},
                "catalog-3": {"confirmed": 0, "in_sync": True, "readable": True},
            },
        )
        self.sequencer.write(self.leader.buy(6, 1))
        self.client.to(FOLLOWER)[0].confirm(1)
        self.client.to(OTHER)[0].unreachable()
        self.sequencer.write(self.leader.buy(6, 1))
        self.assertEqual(
            self.sequencer.followers(),
            {
                "catalog-2": {"confirmed": 1, "in_sync": True, "readable": True},
                "catalog-3": {"confirmed": 0, "in_sync": False, "readable": False},
            },
        )

    def test_a_follower_out_of_sync_is_readable_while_no_write_passed_it_by(self) -> None:
        """Out of sync, but every write since then missed its majority (this sequencer is cut
        off): the follower has every acknowledged write, so the front end may read from it.
        Once a write is acknowledged without it, it may not."""
        self.sequencer.quorum = 3
        missed = self.sequencer.write(self.leader.buy(6, 1))
        self.client.to(FOLLOWER)[0].confirm(1)
        self.client.to(OTHER)[0].unreachable()
        self.failureResultOf(missed, Unavailable)
        self.assertEqual(self.sequencer.committed, 0)  # write 1 missed its majority of 3
        self.assertEqual(
            {name: f["readable"] for name, f in self.sequencer.followers().items()},
            {"catalog-2": True, "catalog-3": True},
        )
        self.sequencer.quorum = 2
        acknowledged = self.sequencer.write(self.leader.buy(6, 1))
        self.client.to(FOLLOWER)[1].confirm(2)
        self.successResultOf(acknowledged)
        self.assertEqual(self.sequencer.committed, 2)
        self.assertEqual(
            {name: f["readable"] for name, f in self.sequencer.followers().items()},
            {"catalog-2": True, "catalog-3": False},
        )

    def test_heartbeat_beats_every_link_and_reports_caught_up(self) -> None:
        """heartbeat() reaches every follower; one coming back is told to the front end once."""
        self.sequencer.write(self.leader.buy(6, 1))
        self.client.to(FOLLOWER)[0].confirm(1)
        self.client.to(OTHER)[0].unreachable()
        self.client.calls.clear()

        beat = self.sequencer.heartbeat()
        self.assertEqual([(c.replica, c.seqs) for c in self.client.calls], [(FOLLOWER, []), (OTHER, [1])])
        self.assertNoResult(beat)
        self.client.to(FOLLOWER)[0].confirm(1)
        self.client.to(OTHER)[0].confirm(1)
        self.assertEqual(self.successResultOf(beat), [True, True])
        self.assertEqual(self.notice.of("caught_up"), [("catalog-3", 1)])

        self.sequencer.heartbeat()
        for call in self.client.calls[2:]:
            call.confirm(1)
        self.assertEqual(self.notice.of("caught_up"), [("catalog-3", 1)])

    def test_caught_up_can_be_told_before_the_lagging_write_of_the_same_seq(self) -> None:
        """catalog-2 fails write 1; while catalog-3 is still applying it, a heartbeat brings
        catalog-2 up to 1. The front end hears caught_up at 1 before written(1, lagging=[catalog-2])
        (and over HTTP either may arrive first): ``Health.report_lagging`` must let the
        caught-up one win, or catalog-2 would not be read from until the next write."""
        written = self.sequencer.write(self.leader.buy(6, 1))
        self.client.to(FOLLOWER)[0].unreachable()
        self.sequencer.heartbeat()  # catalog-3's request is in flight: only catalog-2 is sent one
        self.client.to(FOLLOWER)[1].confirm(1)
        self.client.to(OTHER)[0].confirm(1)
        [(_, entry)] = self.log()
        self.assertEqual(
            self.notice.calls,
            [("written", 1, entry, []), ("caught_up", "catalog-2", 1), ("written", 1, entry, ["catalog-2"])],
        )
        self.successResultOf(written)

    def test_caught_up_notice_failure_is_only_logged(self) -> None:
        """A front end that cannot be told of a recovery does not break the link (its probe
        will read the follower's state from the sequencer's status)."""
        written = self.sequencer.write(self.leader.buy(6, 1))
        self.client.to(FOLLOWER)[0].unreachable()
        self.client.to(OTHER)[0].confirm(1)
        self.successResultOf(written)
        self.notice.answers.append(fail(Unavailable("frontend is unreachable")))
        beat = self.sequencer.heartbeat()
        self.client.to(FOLLOWER)[-1].confirm(1)
        self.client.to(OTHER)[-1].confirm(1)
        self.assertEqual(self.successResultOf(beat), [True, True])
        self.assertEqual(self.notice.of("caught_up"), [("catalog-2", 1)])
        self.assertTrue(self.links[0].in_sync)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_writes_replicate_to_real_followers(self) -> None:
        """Through real followers, several writes leave every replica with the leader's data."""
        followers = {FOLLOWER.name: self.catalog(), OTHER.name: self.catalog()}
        client = FollowerClient(followers)
        links = [FollowerLink(f, client, self.leader, self.clock) for f in (FOLLOWER, OTHER)]  # type: ignore[arg-type]
        notice = RecordingNotice()
        sequencer = Sequencer(self.leader, links, notice)
        for write in (self.leader.buy(6, 1), self.leader.set_price(3, 1.0), self.leader.add_quantity(0, 5)):
            self.successResultOf(sequencer.write(write))
        self.assertEqual(
            [(c[1], c[2]["book"]["id"], c[3]) for c in notice.calls], [(1, 6, []), (2, 3, []), (3, 0, [])]
        )
        for follower in followers.values():
            self.assertInSync(follower)

    def test_outage_and_recovery_with_real_followers(self) -> None:
        """One follower down for some writes: they succeed naming it lagging; a heartbeat brings
        it back (caught_up with the last seq) and it ends equal to the leader."""
        followers = {FOLLOWER.name: self.catalog(), OTHER.name: self.catalog()}
        client = FollowerClient(followers)
        links = [FollowerLink(f, client, self.leader, self.clock) for f in (FOLLOWER, OTHER)]  # type: ignore[arg-type]
        notice = RecordingNotice()
        sequencer = Sequencer(self.leader, links, notice)
        self.successResultOf(sequencer.write(self.leader.buy(6, 1)))
        client.down.add(OTHER.name)
        for book in (1, 2, 3):
            self.successResultOf(sequencer.write(self.leader.buy(book, 1)))
        self.assertEqual(
            [c[2] for c in notice.of("written")],
            [[], [], ["catalog-3"], [], ["catalog-3"], [], ["catalog-3"]],
        )
        self.successResultOf(sequencer.heartbeat())
        self.assertEqual(notice.of("caught_up"), [])
        client.down.clear()
        self.successResultOf(sequencer.heartbeat())
        self.assertEqual(notice.of("caught_up"), [("catalog-3", 4)])
        for follower in followers.values():
            self.assertInSync(follower)
        self.successResultOf(sequencer.write(self.leader.buy(0, 1)))
        self.assertEqual(notice.of("written")[-1][2], [])


class FakeSequencer:
    """Counts heartbeats; each answers with the next of ``answers`` (a fired one if none is left)."""

    def __init__(self) -> None:
        self.beats = 0
        self.answers: list[Deferred[Any]] = []

    def heartbeat(self) -> Deferred[Any]:
        self.beats += 1
        return self.answers.pop(0) if self.answers else succeed([])


class HeartbeatsServiceTests(ReplicationTestCase):
    def service(self, sequencer: Any, interval: float = HEARTBEAT_INTERVAL) -> tuple[Heartbeats, Clock]:
        clock = Clock()
        service = Heartbeats(sequencer, clock, interval)

        def stop() -> None:
            if service.running:
                service.stopService()

        self.addCleanup(stop)
        return service, clock

    def test_beats_at_start_then_every_interval_until_stopped(self) -> None:
        sequencer = FakeSequencer()
        service, clock = self.service(sequencer)
        self.assertEqual(service.interval, HEARTBEAT_INTERVAL)
        self.assertEqual(sequencer.beats, 0)
        service.startService()
        self.assertEqual(sequencer.beats, 1)  # at once
        clock.advance(HEARTBEAT_INTERVAL - 0.01)
        self.assertEqual(sequencer.beats, 1)
        clock.advance(0.01)
        self.assertEqual(sequencer.beats, 2)
        clock.pump([HEARTBEAT_INTERVAL] * 4)
        self.assertEqual(sequencer.beats, 6)
        service.stopService()
        self.assertFalse(service.running)
        clock.advance(10 * HEARTBEAT_INTERVAL)
        self.assertEqual(sequencer.beats, 6)
        self.assertEqual(clock.getDelayedCalls(), [])
        service.stopService()  # stopping twice is harmless

    def test_a_failed_heartbeat_is_logged_and_the_beat_goes_on(self) -> None:
        sequencer = FakeSequencer()
        sequencer.answers.append(fail(RuntimeError("boom")))
        service, clock = self.service(sequencer, interval=1.0)
        service.startService()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        clock.advance(1.0)
        self.assertEqual(sequencer.beats, 2)

    def test_a_slow_follower_does_not_hold_back_the_others(self) -> None:
        """While one follower's heartbeat waits for its deadline, the others still get one every
        interval, so a follower that fell behind is found and caught up without waiting on another."""
        client = ScriptedClient()
        links = [FollowerLink(f, client, self.leader, self.clock) for f in (FOLLOWER, OTHER)]  # type: ignore[arg-type]
        service, clock = self.service(Sequencer(self.leader, links))
        service.startService()
        self.assertEqual([c.replica for c in client.calls], [FOLLOWER, OTHER])
        client.to(OTHER)[0].confirm(0)  # catalog-2 hangs
        for beat in range(1, 4):
            clock.advance(HEARTBEAT_INTERVAL)
            self.assertEqual(len(client.to(OTHER)), 1 + beat)
            client.to(OTHER)[-1].confirm(0)
        self.assertEqual(len(client.to(FOLLOWER)), 1)  # still the one in flight
        client.to(FOLLOWER)[0].unreachable()
        clock.advance(HEARTBEAT_INTERVAL)
        self.assertEqual(len(client.to(FOLLOWER)), 2)

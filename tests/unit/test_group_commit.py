"""Group commit (``bazar.group_commit``): the writes that queue while one transaction commits
share the next one, each with its own result, and the sequencer replicates and invalidates a
batch in one message per follower and one push, acknowledging no write before a majority
has it and the front end dropped its keys.

The stores run on a ``QueuedRunner``: each transaction waits until the test runs it
(``step``), as one does on adbapi's pool thread, so writes can arrive while one commits.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bazar.catalog.store import CatalogStore
from bazar.errors import Conflict, Unavailable
from bazar.follower_link import FollowerLink
from bazar.group_commit import Burst, GroupCommit
from bazar.protocol import REPLICATE_PATH
from bazar.replication import Sequencer
from bazar.storage import Replayed
from tests.unit.queuedrunner import QueuedRunner
from tests.unit.test_replication import FOLLOWER, OTHER, RecordingNotice, ScriptedClient

BOOK = 2  # "Xen and the Art of Surviving Undergraduate School": 8 copies


def outcome(d: Deferred[Any]) -> Any:
    """What ``d`` fired with (a Failure included); AssertionError if it has not."""
    results: list[Any] = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError(f"{d!r} has not fired")
    return results[0]


class StoreTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.runner = QueuedRunner()
        self.store = CatalogStore(self.runner)
        self.addCleanup(self.store.close)
        setup = self.store.setup()
        self.runner.run_all()
        self.successResultOf(setup)
        self.runner.written = 0

    def stock(self) -> int:
        return self.store.book(BOOK)["quantity"]

    def check_digest(self) -> None:
        """The digest kept write by write matches the one summed from the rows: a write rolled
        back alone left nothing of itself behind."""
        checked = self.store.runner.runInteraction(CatalogStore.check_digest)
        self.runner.run_all()
        kept, summed = self.successResultOf(checked)
        self.assertEqual(kept, summed)


class GroupCommitTests(StoreTestCase):
    def test_a_lone_write_goes_at_once(self) -> None:
        """No transaction under way: the write's transaction is submitted there and then,
        not when more writes come."""
        bought = self.store.buy(BOOK, 1)
        self.assertEqual(len(self.runner.waiting), 1)
        self.runner.step()
        seq, entry = self.successResultOf(bought)
        self.assertEqual((seq, entry["book"]["quantity"]), (1, 7))
        self.assertEqual(self.store.commits.batches, 1)

    def test_writes_that_arrive_during_a_commit_share_the_next_transaction(self) -> None:
        """Five writes arrive while one commits: two transactions in all (two commits, two
        fsyncs), every write with its own sequence number, in order."""
        first = self.store.buy(BOOK, 1)
        rest = [self.store.buy(BOOK, 1) for _ in range(5)]
        self.assertEqual(len(self.runner.waiting), 1)  # the rest wait for the first to commit
        self.runner.step()
        self.successResultOf(first)
        for d in rest:
            self.assertNoResult(d)  # their transaction has not committed yet
        self.assertEqual(len(self.runner.waiting), 1)  # the five, in one transaction
        self.runner.step()
        self.assertEqual([self.successResultOf(d)[0] for d in rest], [2, 3, 4, 5, 6])
        self.assertEqual((self.store.commits.batches, self.runner.written), (2, 2))
        self.assertEqual(self.stock(), 2)
        self.assertEqual(self.store.applied_seq, 6)

    def test_each_write_keeps_its_own_result(self) -> None:
        """The last copies bought in one batch: exactly the stock is sold; each buyer that
        found none gets its own 409, rolled back alone, and the others commit."""
        blocker = self.store.set_price(0, 1.0)
        buys = [self.store.buy(BOOK, 3) for _ in range(4)]  # 12 asked for, 8 there
        self.runner.step()
        self.successResultOf(blocker)
        self.runner.step()
        outcomes = [outcome(d) for d in buys]
        sold = [o for o in outcomes if not isinstance(o, Failure)]
        refused = [o for o in outcomes if isinstance(o, Failure)]
        self.assertEqual([entry["book"]["quantity"] for _, entry in sold], [5, 2])
        self.assertEqual(len(refused), 2)
        for failure in refused:
            failure.trap(Conflict)
        self.assertEqual(self.stock(), 2)
        self.assertEqual([seq for seq, _ in sold], [2, 3])  # no sequence number for a refusal
        self.assertEqual(self.store.commits.batches, 2)
        self.check_digest()

    def test_a_key_twice_in_one_batch(self) -> None:
        """A retry that lands in the same batch as its original gets the original (Replayed),
        and takes nothing twice."""
        blocker = self.store.set_price(0, 1.0)
        original = self.store.buy(BOOK, 1, key="k")
        retry = self.store.buy(BOOK, 1, key="k")
        self.runner.run_all()
        self.successResultOf(blocker)
        seq, entry = self.successResultOf(original)
        replay = self.failureResultOf(retry, Replayed).value
        self.assertEqual((replay.seq, replay.entry), (seq, entry))
        self.assertEqual(self.stock(), 7)

    def test_a_batch_is_bounded_in_writes_and_bytes(self) -> None:
        """At most ``max_writes`` writes, and no write past ``max_bytes`` of entries, go in one
        transaction; the rest go first in the next."""
        self.store.commits.max_writes = 3
        self.store.commits.max_bytes = 1  # every entry is more: one write per transaction
        blocker = self.store.set_price(0, 1.0)
        writes = [self.store.set_price(1, float(n)) for n in range(4)]
        self.runner.step()
        self.runner.step()
        self.assertEqual([self.successResultOf(d)[0] for d in writes[:1]], [2])
        self.assertNoResult(writes[1])
        self.store.commits.max_bytes = 10**6
        self.runner.run_all()
        self.successResultOf(blocker)
        self.assertEqual([self.successResultOf(d)[0] for d in writes[1:]], [3, 4, 5])
        # 1 (the blocker), 1 (cut by bytes), 3 (cut by count: the two left over and one more)
        self.assertEqual(self.store.commits.batches, 3)

    def test_a_write_that_fails_half_way_leaves_nothing_behind(self) -> None:
        """A write that changed a row and then failed is rolled back to its savepoint: its
        change is gone, the writes before and after it in the batch are kept."""
        commits = GroupCommit(self.runner)

        def put(txn: Any, key: str, fail: bool = False) -> None:
            txn.execute("INSERT INTO meta (key, value) VALUES (?, 1)", (key,))
            if fail:
                raise Conflict("changed my mind")

        with commits.together():  # one batch, the first not alone
            writes = [commits.submit(put, "before"), commits.submit(put, "failed", True)]
            writes.append(commits.submit(put, "after"))
        self.assertEqual(len(self.runner.waiting), 1)
        self.runner.run_all()
        self.failureResultOf(writes[1], Conflict)
        keys = self.runner.runInteraction(
            lambda txn: [row[0] for row in txn.execute("SELECT key FROM meta WHERE value = 1 ORDER BY key")]
        )
        self.runner.run_all()
        self.assertEqual(self.successResultOf(keys), ["after", "before"])
        self.assertEqual((commits.batches, self.runner.written), (1, 1))

    def test_one_commit_per_batch(self) -> None:
        """The batch's writes commit together, at its end: while the second runs, another
        connection does not see the first (a savepoint that opened the transaction would
        have committed it on its release: one fsync per write)."""
        path = self.mktemp()
        runner = QueuedRunner(path=path)
        self.addCleanup(runner.close)
        commits = GroupCommit(runner)
        seen: list[Any] = []

        def put(txn: Any, key: str) -> None:
            txn.execute("INSERT INTO t (key) VALUES (?)", (key,))

        def look(txn: Any) -> None:
            with closing(sqlite3.connect(path)) as other:
                seen.append(other.execute("SELECT key FROM t").fetchall())

        created = runner.runInteraction(lambda txn: txn.execute("CREATE TABLE t (key TEXT)"))
        runner.run_all()
        self.successResultOf(created)
        with commits.together():
            writes = [commits.submit(put, "first"), commits.submit(look), commits.submit(put, "second")]
        runner.run_all()
        for d in writes:
            self.successResultOf(d)
        self.assertEqual(seen, [[]])
        with closing(sqlite3.connect(path)) as other:
            self.assertEqual(other.execute("SELECT key FROM t").fetchall(), [("first",), ("second",)])

    def test_a_failed_transaction_fails_every_write_in_it(self) -> None:
        """When the transaction itself fails, none of its writes happened, and each says so."""
        commits = GroupCommit(self.runner)
        writes = [commits.submit(lambda txn: txn.execute("INSERT INTO nowhere VALUES (1)"))]
        writes.append(commits.submit(lambda txn: None))
        original = commits._transaction

        def broken(txn: Any, batch: Any) -> Any:
            original(txn, batch)
            raise OSError("disk full")

        commits._transaction = broken  # type: ignore[method-assign]
        self.runner.run_all()
        self.failureResultOf(writes[0])  # no such table: its own failure
        self.failureResultOf(writes[1], OSError)
        self.assertEqual(commits.batches, 1)


class BurstTests(SynchronousTestCase):
    def test_sends_once_at_the_end_of_a_hand_out(self) -> None:
        burst = Burst()
        sent: list[str] = []

        def send() -> None:
            sent.append("sent")

        burst.send(send)
        self.assertEqual(sent, ["sent"])  # not held: at once
        with burst.held():
            burst.send(send)
            burst.send(send)
            with burst.held():
                burst.send(send)
            self.assertEqual(sent, ["sent"])
        self.assertEqual(sent, ["sent", "sent"])


class SequencerBatchTests(StoreTestCase):
    """A batch at the sequencer: one replicate request per follower, one push to the front
    end, and each write acknowledged only once a majority has it and its keys are dropped."""

    def setUp(self) -> None:
        super().setUp()
        self.client = ScriptedClient()
        self.clock = Clock()
        self.links = [FollowerLink(f, self.client, self.store, self.clock) for f in (FOLLOWER, OTHER)]  # type: ignore[arg-type]
        self.notice = RecordingNotice()
        self.sequencer = Sequencer(self.store, self.links, self.notice, quorum=2)

    def replicate_calls(self, follower: Any) -> list[Any]:
        return [c for c in self.client.to(follower) if c.path == REPLICATE_PATH]

    def confirm_all(self, seq: int) -> None:
        for follower in (FOLLOWER, OTHER):
            self.replicate_calls(follower)[-1].confirm(seq)

    def test_a_lone_write_is_replicated_at_once(self) -> None:
        """One write: its request goes the moment it commits, and it is acknowledged once the
        followers confirm."""
        acked = self.sequencer.write(self.store.buy(BOOK, 1))
        self.runner.step()
        for follower in (FOLLOWER, OTHER):
            [call] = self.replicate_calls(follower)
            self.assertEqual(call.seqs, [1])
        self.assertEqual([(seq, lagging) for seq, _, lagging in self.notice.of("written")], [(1, [])])
        self.assertNoResult(acked)
        self.confirm_all(1)
        self.assertEqual(outcome(acked)["book"]["quantity"], 7)

    def test_one_request_per_follower_and_one_push_per_batch(self) -> None:
        """Five purchases arrive while one commits: their batch goes to each follower in one
        request, and the front end hears of it in one push, with every key."""
        first = self.sequencer.write(self.store.set_price(0, 1.0))
        buys = [self.sequencer.write(self.store.buy(book, 1)) for book in (1, 2, 3, 4, 5)]
        self.runner.step()
        self.confirm_all(1)
        self.successResultOf(first)
        self.runner.step()  # the five, in one transaction
        for follower in (FOLLOWER, OTHER):
            calls = self.replicate_calls(follower)
            self.assertEqual([c.seqs for c in calls], [[1], [2, 3, 4, 5, 6]])
        self.assertEqual([seq for seq, _, _ in self.notice.of("written")], [1])  # the first, alone
        [(batch,)] = self.notice.of("written_many")
        self.assertEqual([seq for seq, _ in batch], [2, 3, 4, 5, 6])
        self.confirm_all(6)
        self.assertEqual([outcome(d)["book"]["id"] for d in buys], [1, 2, 3, 4, 5])

    def test_acknowledged_only_after_the_followers_and_the_push(self) -> None:
        """No write of a batch is acknowledged before the followers confirm it and the front
        end answered the push that drops its keys; then each is."""
        blocker = self.sequencer.write(self.store.set_price(0, 1.0))
        self.runner.step()
        self.confirm_all(1)
        self.successResultOf(blocker)
        pushed: Deferred[Any] = Deferred()
        self.notice.answers[:] = [succeed(None), pushed]  # the second: the batch's push
        committing = self.sequencer.write(self.store.set_price(0, 2.0))
        buys = [self.sequencer.write(self.store.buy(BOOK, 1)) for _ in range(3)]
        self.runner.step()
        self.confirm_all(2)
        self.successResultOf(committing)
        self.runner.step()  # the three, in one batch
        for d in buys:
            self.assertNoResult(d)  # committed here, but no follower has them
        self.replicate_calls(FOLLOWER)[-1].confirm(5)
        for d in buys:
            self.assertNoResult(d)  # the other follower has not answered yet
        self.replicate_calls(OTHER)[-1].confirm(5)
        for d in buys:
            self.assertNoResult(d)  # every follower has them; the front end may still cache the old
        pushed.callback(None)
        self.assertEqual([outcome(d)["book"]["quantity"] for d in buys], [7, 6, 5])

    def test_a_refused_write_fails_alone(self) -> None:
        """Within one replicated batch a 409 is its own: the others are acknowledged."""
        blocker = self.sequencer.write(self.store.set_price(0, 1.0))
        writes = [self.sequencer.write(self.store.buy(BOOK, n)) for n in (5, 5, 3)]
        self.runner.run_all()
        self.confirm_all(1)
        self.successResultOf(blocker)
        self.confirm_all(3)
        self.assertEqual(outcome(writes[0])["book"]["quantity"], 3)
        self.failureResultOf(writes[1], Conflict)
        self.assertEqual(outcome(writes[2])["book"]["quantity"], 0)
        self.assertEqual(self.replicate_calls(FOLLOWER)[1].seqs, [2, 3])

    def test_a_batch_no_majority_has_is_not_acknowledged(self) -> None:
        """Both followers unreachable: no write of the batch is acknowledged."""
        blocker = self.sequencer.write(self.store.set_price(0, 1.0))
        writes = [self.sequencer.write(self.store.buy(BOOK, 1)) for _ in range(3)]
        self.runner.step()
        self.confirm_all(1)
        self.successResultOf(blocker)
        self.runner.step()
        for follower in (FOLLOWER, OTHER):
            self.replicate_calls(follower)[-1].unreachable()
        for d in writes:
            self.failureResultOf(d, Unavailable)
        self.assertFalse(self.sequencer.settled())

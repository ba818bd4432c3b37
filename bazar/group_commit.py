"""Group commit: the writes that queue while one transaction commits share the next one.

Each sequenced write used to be its own SQLite transaction, so its own fsync (``synchronous
= FULL``), its own trip through adbapi's thread, and, at the sequencer, its own replication
message per follower and its own invalidation push. Under load they queue behind each other
anyway: ``GroupCommit`` runs every write that arrived while the previous transaction was
committing in *one* transaction, up to MAX_WRITES writes and MAX_BYTES of log entries.

Nothing waits for a batch to fill: a write that finds no transaction under way starts one at
once, alone. Each write runs in its own SAVEPOINT, so one that fails (a 409: not enough
stock, a key used for another request, a replay) is rolled back alone and gets its own
failure, while the others commit. Every write's Deferred fires only after the transaction
holding it has committed, in submission order (which is sequence order).

While one batch's results are handed out, what each write would send at once (a follower's
replication request, the front end's invalidation push) is put off to the end of the hand-out
(``Burst``), so the whole batch goes in one message per follower and one push: see
``bazar.follower_link.FollowerLink.ship`` and ``Sequencer``. Acknowledgements do not change:
each write is still acknowledged only once a majority has it and the front end dropped its
keys (``Sequencer.write``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from bazar.metrics import Sizes

T = TypeVar("T")
Cursor = Any  # an adbapi Transaction or a sqlite3.Cursor

# A batch's bounds: a transaction of 200 purchases takes a few milliseconds on the pool's
# thread; 48 KiB of entries fit one replication request (``bazar.follower_link.MAX_BATCH_BYTES``).
MAX_WRITES = 200
MAX_BYTES = 48 * 1024

log = Logger()


class Burst:
    """Sends put off while a batch's results are handed out, each made once at the end.

    Outside a hand-out ``send(f)`` calls ``f`` at once, so a lone write goes as it did; during
    one, ``f`` runs when the hand-out ends (once, however often it was asked for)."""

    def __init__(self) -> None:
        self._depth = 0
        self._pending: dict[Callable[[], object], None] = {}  # in order, once each

    @contextmanager
    def held(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth:
                self._release()

    def send(self, send: Callable[[], object]) -> None:
        if self._depth:
            self._pending[send] = None
        else:
            send()

    def _release(self) -> None:
        while self._pending:
            send = next(iter(self._pending))
            del self._pending[send]
            try:
                send()
            except Exception:
                log.failure("a send put off to the end of a batch failed")


class _Write(Generic[T]):
    __slots__ = ("args", "done", "interaction")

    def __init__(self, interaction: Callable[..., T], args: tuple[Any, ...]) -> None:
        self.interaction = interaction
        self.args = args
        self.done: Deferred[T] = Deferred()


class GroupCommit:
    """Runs writes through ``runner`` (adbapi's ``runInteraction``), many to a transaction.

    ``weigh(result)``: a write's size in bytes, for MAX_BYTES (its log entry). ``sizes``: how
    many writes each committed transaction held (``bazar_group_commit_writes`` on /metrics)."""

    def __init__(
        self,
        runner: Any,
        weigh: Callable[[Any], int] = lambda result: 0,
        max_writes: int = MAX_WRITES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.runner = runner
        self.weigh = weigh
        self.max_writes = max_writes
        self.max_bytes = max_bytes
        self.delivery = Burst()
        self.sizes = Sizes()
        self._queue: list[_Write[Any]] = []
        self._committing = False
        self._gathering = 0

    @property
    def batches(self) -> int:
        """Transactions committed."""
        return self.sizes.count

    @contextmanager
    def together(self) -> Iterator[None]:
        """The writes submitted in this block go in one transaction (or after the one under
        way): for a caller that has several at once (``bazar.order.takes``), whose first
        would otherwise go alone."""
        self._gathering += 1
        try:
            yield
        finally:
            self._gathering -= 1
            if not self._gathering and not self._committing:
                self._next()

    def submit(self, interaction: Callable[..., T], *args: Any) -> Deferred[T]:
        """``interaction(txn, *args)`` in the next transaction: at once if none is under way."""
        write = _Write(interaction, args)
        self._queue.append(write)
        if not self._committing and not self._gathering:
            self._next()
        return write.done

    def _next(self) -> None:
        writes = self._queue[: self.max_writes]
        if not writes:
            self._committing = False
            return
        self._committing = True
        del self._queue[: len(writes)]
        d = self.runner.runInteraction(self._transaction, [(w.interaction, w.args) for w in writes])
        d.addBoth(self._committed, writes)

    def _transaction(
        self, txn: Cursor, writes: list[tuple[Callable[..., Any], tuple[Any, ...]]]
    ) -> list[Any]:
        """On the pool's thread: each write in its own savepoint, until MAX_BYTES of results
        (one write at least); the outcomes of those run, a Failure for each that raised."""
        # Open the transaction ourselves: releasing a savepoint that opened it would commit
        # (and fsync) each write on its own.
        txn.execute("BEGIN")
        outcomes: list[Any] = []
        size = 0
        for interaction, args in writes:
            if size > self.max_bytes:
                break
            txn.execute("SAVEPOINT write")
            try:
                result = interaction(txn, *args)
            except Exception:
                txn.execute("ROLLBACK TO write")
                outcomes.append(Failure())
            else:
                size += self.weigh(result)
                outcomes.append(result)
            txn.execute("RELEASE write")
        return outcomes

    def _committed(self, outcomes: list[Any] | Failure, writes: list[_Write[Any]]) -> None:
        """Back on the reactor thread: hand each write its outcome, then start the next batch."""
        if isinstance(outcomes, Failure):
            outcomes = [outcomes] * len(writes)  # the transaction failed: none of them was written
        else:
            self.sizes.record(len(outcomes))
            self._queue[:0] = writes[len(outcomes) :]  # past MAX_BYTES: first in the next batch
        with self.delivery.held():
            for write, outcome in zip(writes, outcomes, strict=False):
                if isinstance(outcome, Failure):
                    write.done.errback(outcome)
                else:
                    write.done.callback(outcome)
        self._next()

"""SQLite storage shared by every replica: a table of data plus a log of sequenced writes.

Each write changes the data *and* appends the resulting entry to ``log`` under the next
sequence number in one transaction (shared with the writes of its batch: ``bazar.group_commit``),
so a replica's state is exactly "the entries up to ``last_seq`` applied in order". The
sequencer creates entries (``sequence``); followers apply the sequencer's entries in order and
refuse to skip one (``apply``); the log lets anyone resend what a replica missed
(``entries_after``).

SQL runs through a *runner* (``bazar.runners``): a one-connection adbapi pool in production,
an inline in-memory database in unit tests.

The ``meta`` table keeps the digest of the data (``bazar.digest``), changed in the same
transaction as each row; ``recompute_digest`` sums it from scratch, to check.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore

from bazar.digest import Row, digest_hex, row_hash
from bazar.errors import Conflict
from bazar.group_commit import GroupCommit
from bazar.runners import PoolRunner, Runner, configure_connection, open_pool

if TYPE_CHECKING:
    from bazar.config import Config

T = TypeVar("T")
Entry = dict[str, Any]
Cursor = Any  # an adbapi Transaction or a sqlite3.Cursor: both have execute/fetchone/fetchall
BATCH = 10_000  # rows per executemany / fetchmany: bounded memory, few round trips


def batches(rows: Iterable[T], size: int = BATCH) -> Iterator[list[T]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


class SequenceGap(Conflict):
    """Entries arrived that do not follow the last applied one; the sender must resend from ``last_seq``."""

    def __init__(self, last_seq: int, got: int) -> None:
        super().__init__(f"expected sequence number {last_seq + 1}, got {got}")
        self.last_seq = last_seq


class Replayed(Exception):
    """A write with an idempotency key that was already written: here is the original."""

    def __init__(self, seq: int, entry: Entry) -> None:
        super().__init__(f"already written as sequence number {seq}")
        self.seq = seq
        self.entry = entry


Idempotency = tuple[str, str]  # (the client's key, what the request asked for)


class SeedMismatch(Exception):
    """An existing database was seeded differently from what the configuration now asks for."""


class ReplicatedStore:
    """What catalog and order stores share: the log, ordered application, and a digest.

    A subclass names its data ``table`` (with an integer primary key ``id``) and its
    ``columns``, and changes rows only through ``_put_row`` or ``_row_changed``, so the
    digest in ``meta`` always matches the table.
    """

    schema: ClassVar[str]
    table: ClassVar[str]
    columns: ClassVar[str]
    # Statements run after the seed: building an index over a full table beats keeping
    # it up to date through a million inserts.
    indexes: ClassVar[str] = ""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        # Sequenced writes that queue while one commits share the next transaction.
        self.commits = GroupCommit(runner, weigh=_entry_size)
        # The last sequence number committed here, kept in memory for metrics and status
        # figures that must not wait for the database.
        self.applied_seq = 0
        # The epoch this replica last recorded and its sequencer (0 and None: never recorded).
        self.epoch = 0
        self.epoch_sequencer: str | None = None
        # The last sequence number this replica held before it last forgot its writes
        # (``wipe``), until a sequencer has caught it up again (``caught_up``); 0: none
        # forgotten. Its empty log says nothing about which writes were acknowledged: it
        # votes as if it still held them (``bazar.failover``).
        self.forgot_up_to = 0

    @classmethod
    def options(cls, config: Config) -> dict[str, Any]:
        """Keyword arguments for this store's constructor from a ``bazar.config.Config``."""
        return {}

    def setup(self) -> Deferred[None]:
        return self.runner.runInteraction(self._setup)

    def _setup(self, txn: Cursor) -> None:
        txn.execute("CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL)")
        txn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL)")
        txn.execute(
            "CREATE TABLE IF NOT EXISTS idempotency"
            " (key TEXT PRIMARY KEY, request TEXT NOT NULL, seq INTEGER NOT NULL, entry TEXT NOT NULL)"
        )
        for statement in self.schema.split(";"):
            if statement.strip():
                txn.execute(statement)
        if self._meta(txn, "digest") is None:
            if self._last_seq(txn) == 0 and self._is_empty(txn):
                self._set_meta(txn, "digest", digest_hex(0))
                self._set_meta(txn, "rows", 0)
                self._seed(txn)
            else:
                # Written before the meta table existed: sum its rows up, once.
                self._derive(txn)
        for statement in self.indexes.split(";"):
            if statement.strip():
                txn.execute(statement)
        self._check_seed(txn)
        self.applied_seq = self._last_seq(txn)
        self.epoch = int(self._meta(txn, "epoch") or 0)
        self.epoch_sequencer = self._meta(txn, "sequencer")
        self.forgot_up_to = int(self._meta(txn, "forgot_up_to") or 0)

    # -- epochs: which replica sequences writes, and since when ------------------------

    def save_epoch(self, epoch: int, sequencer: str) -> Deferred[None]:
        """Record, durably, that ``sequencer`` orders writes from ``epoch`` on."""

        def save(txn: Cursor) -> None:
            self._set_meta(txn, "epoch", epoch)
            self._set_meta(txn, "sequencer", sequencer)

        d = self.runner.runInteraction(save)

        def saved(_: None) -> None:
            self.epoch, self.epoch_sequencer = epoch, sequencer

        return d.addCallback(saved)

    def wipe(self) -> Deferred[None]:
        """Forget every write (keeping the epoch) and seed anew: for a replica whose log may
        hold writes that were never acknowledged, before the sequencer sends it everything.
        Records, in the same transaction, how far the log went (``forgot_up_to``): some of
        those writes may have been acknowledged, with only one other replica holding them."""
        return self.runner.runInteraction(self._wipe)

    def _wipe(self, txn: Cursor) -> None:
        forgot = max(self._last_seq(txn), int(self._meta(txn, "forgot_up_to") or 0))
        txn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        for (table,) in txn.fetchall():
            if table != "meta":
                txn.execute(f"DELETE FROM {table}")
        txn.execute("DELETE FROM meta WHERE key NOT IN ('epoch', 'sequencer')")
        if forgot:
            self._set_meta(txn, "forgot_up_to", forgot)
        self._setup(txn)

    def caught_up(self) -> Deferred[None]:
        """A sequencer sent this replica everything it holds: what it forgot is no longer
        needed to vote (``forgot_up_to`` back to 0)."""

        def clear(txn: Cursor) -> None:
            txn.execute("DELETE FROM meta WHERE key = 'forgot_up_to'")

        d = self.runner.runInteraction(clear)

        def cleared(_: None) -> None:
            self.forgot_up_to = 0

        return d.addCallback(cleared)

    def entry_at(self, seq: int) -> Deferred[Entry | None]:
        def read(txn: Cursor) -> Entry | None:
            txn.execute("SELECT entry FROM log WHERE seq = ?", (seq,))
            row = txn.fetchone()
            return None if row is None else json.loads(row[0])

        return self.runner.runInteraction(read)

    def _seed(self, txn: Cursor) -> None:
        """Fill a new database with its initial data (``_insert_new_rows``); the same on every replica."""

    def _check_seed(self, txn: Cursor) -> None:
        """Raise SeedMismatch if an existing database was seeded differently."""

    def _is_empty(self, txn: Cursor) -> bool:
        txn.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {self.table})")
        return bool(txn.fetchone()[0])

    def _derive(self, txn: Cursor) -> None:
        """Compute what ``meta`` keeps (digest, row count) from the table itself."""
        total, count = self._sum_rows(txn)
        self._set_meta(txn, "digest", digest_hex(total))
        self._set_meta(txn, "rows", count)

    def close(self) -> None:
        self.runner.close()

    # -- meta: the digest and the row count, kept in step with every change ------------

    @staticmethod
    def _meta(txn: Cursor, key: str) -> Any:
        txn.execute("SELECT value FROM meta WHERE key = ?", (key,))
        row = txn.fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _set_meta(txn: Cursor, key: str, value: Any) -> None:
        txn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _row(self, txn: Cursor, row_id: int) -> Row | None:
        txn.execute(f"SELECT {self.columns} FROM {self.table} WHERE id = ?", (row_id,))
        row = txn.fetchone()
        return None if row is None else tuple(row)

    def _row_changed(self, txn: Cursor, old: Row | None, new: Row | None) -> None:
        """Account for one row going from ``old`` to ``new`` (None: absent), in the caller's transaction."""
        delta = (row_hash(new) if new is not None else 0) - (row_hash(old) if old is not None else 0)
        count = (new is not None) - (old is not None)
        if delta:
            self._set_meta(txn, "digest", digest_hex(int(self._meta(txn, "digest"), 16) + delta))
        if count:
            self._set_meta(txn, "rows", int(self._meta(txn, "rows")) + count)

    def _put_row(self, txn: Cursor, row: Row) -> Row:
        """Insert or replace the row with ``row``'s id; the row as stored."""
        old = self._row(txn, row[0])
        marks = ", ".join("?" * len(row))
        txn.execute(f"INSERT OR REPLACE INTO {self.table} ({self.columns}) VALUES ({marks})", row)
        new = self._row(txn, row[0])  # as SQLite stored it (e.g. an integer price as a REAL)
        self._row_changed(txn, old, new)
        assert new is not None
        return new

    def _insert_new_rows(self, txn: Cursor, rows: Iterable[Row]) -> None:
        """Insert rows with new ids a batch at a time (the seed), adding them to the digest as they go."""
        marks = ", ".join("?" * len(self.columns.split(",")))
        statement = f"INSERT INTO {self.table} ({self.columns}) VALUES ({marks})"
        total = count = 0
        for batch in batches(rows):
            txn.executemany(statement, batch)
            total += sum(map(row_hash, batch))
            count += len(batch)
        self._set_meta(txn, "digest", digest_hex(int(self._meta(txn, "digest"), 16) + total))
        self._set_meta(txn, "rows", int(self._meta(txn, "rows")) + count)

    @classmethod
    def _scan(cls, txn: Cursor) -> Iterator[Row]:
        """Every row in id order, fetched a batch at a time (never the whole table in memory)."""
        txn.execute(f"SELECT {cls.columns} FROM {cls.table} ORDER BY id")
        while batch := txn.fetchmany(BATCH):
            yield from batch

    @classmethod
    def _sum_rows(cls, txn: Cursor) -> tuple[int, int]:
        total = count = 0
        for row in cls._scan(txn):
            total += row_hash(row)
            count += 1
        return total, count

    def recompute_digest(self) -> Deferred[str]:
        """The digest summed from scratch over every row, to check the kept one (O(rows))."""
        return self.runner.runInteraction(self.check_digest).addCallback(
            lambda kept_and_true: kept_and_true[1]
        )

    @classmethod
    def check_digest(cls, txn: Cursor) -> tuple[str | None, str]:
        """The digest kept in ``meta`` (None if there is none yet) and the one summed from scratch."""
        return cls._meta(txn, "digest"), digest_hex(cls._sum_rows(txn)[0])

    def row_count(self) -> Deferred[int]:
        return self.runner.runInteraction(lambda txn: int(self._meta(txn, "rows")))

    # -- the sequencer's side --------------------------------------------------------

    def sequence(
        self, operation: Callable[..., Entry], *args: Any, idempotency: Idempotency | None = None
    ) -> Deferred[tuple[int, Entry]]:
        """Run ``operation`` and log the entry it returns under the next sequence number, atomically.

        With ``idempotency`` (key, request), a key already written fails with ``Replayed``
        carrying the original entry, and a key written for another request with Conflict.
        Writes submitted while another transaction commits share the next one, each in its
        own savepoint (``bazar.group_commit``).
        """
        d = self.commits.submit(self._sequence, operation, args, idempotency)
        return d.addCallback(self._committed)

    def _committed(self, sequenced: tuple[int, Entry]) -> tuple[int, Entry]:
        self.applied_seq = max(self.applied_seq, sequenced[0])
        return sequenced

    def _sequence(
        self,
        txn: Cursor,
        operation: Callable[..., Entry],
        args: tuple[Any, ...],
        idempotency: Idempotency | None,
    ) -> tuple[int, Entry]:
        if idempotency is not None:
            txn.execute("SELECT request, seq, entry FROM idempotency WHERE key = ?", (idempotency[0],))
            row = txn.fetchone()
            if row is not None:
                if row[0] != idempotency[1]:
                    raise Conflict(f"Idempotency-Key {idempotency[0]!r} was already used for another request")
                raise Replayed(row[1], json.loads(row[2]))
        entry = operation(txn, *args)
        if idempotency is not None:
            entry = {**entry, "idempotency": {"key": idempotency[0], "request": idempotency[1]}}
        seq = self._last_seq(txn) + 1
        txn.execute("INSERT INTO log (seq, entry) VALUES (?, ?)", (seq, json.dumps(entry)))
        self._remember(txn, seq, entry)
        return seq, entry

    @staticmethod
    def _remember(txn: Cursor, seq: int, entry: Entry) -> None:
        """Keep a keyed write's result, so a retry with its key gets it back, on any replica."""
        if "idempotency" in entry:
            key = entry["idempotency"]
            txn.execute(
                "INSERT OR IGNORE INTO idempotency (key, request, seq, entry) VALUES (?, ?, ?, ?)",
                (key["key"], key["request"], seq, json.dumps(entry)),
            )

    # -- the followers' side ---------------------------------------------------------

    def apply(self, entries: list[tuple[int, Entry]]) -> Deferred[int]:
        """Apply the sequencer's entries in order; already-applied ones are skipped. Returns last_seq."""
        d = self.runner.runInteraction(self._apply, entries)
        return d.addCallback(self._applied)

    def _applied(self, last_seq: int) -> int:
        self.applied_seq = max(self.applied_seq, last_seq)
        return last_seq

    def _apply(self, txn: Cursor, entries: list[tuple[int, Entry]]) -> int:
        start = last = self._last_seq(txn)
        for seq, entry in sorted(entries, key=lambda e: e[0]):
            if seq <= last:
                continue
            if seq != last + 1:
                # The transaction rolls back, undoing this batch: report where we really are.
                raise SequenceGap(start, seq)
            self._apply_entry(txn, entry)
            txn.execute("INSERT INTO log (seq, entry) VALUES (?, ?)", (seq, json.dumps(entry)))
            self._remember(txn, seq, entry)
            last = seq
        return last

    def _apply_entry(self, txn: Cursor, entry: Entry) -> None:
        raise NotImplementedError

    # -- everyone --------------------------------------------------------------------

    def last_seq(self) -> Deferred[int]:
        return self.runner.runInteraction(self._last_seq)

    @staticmethod
    def _last_seq(txn: Cursor) -> int:
        txn.execute("SELECT COALESCE(MAX(seq), 0) FROM log")
        return int(txn.fetchone()[0])

    def entries_after(self, seq: int, limit: int = 1000) -> Deferred[list[tuple[int, Entry]]]:
        return self.runner.runInteraction(self._entries_after, seq, limit)

    @staticmethod
    def _entries_after(txn: Cursor, seq: int, limit: int) -> list[tuple[int, Entry]]:
        txn.execute("SELECT seq, entry FROM log WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return [(s, json.loads(e)) for s, e in txn.fetchall()]

    def status(self) -> Deferred[dict[str, Any]]:
        """``last_seq`` and the digest of the data: equal digests mean equal data. O(1), no scan."""
        return self.runner.runInteraction(self._status)

    def _status(self, txn: Cursor) -> dict[str, Any]:
        return {"last_seq": self._last_seq(txn), "digest": self._meta(txn, "digest")}


def _entry_size(sequenced: tuple[int, Entry]) -> int:
    """A sequenced write's log entry in bytes, for the group commit's bound."""
    return len(json.dumps(sequenced[1]))


S = TypeVar("S", bound=ReplicatedStore)


def open_store(store_type: type[S], path: Path, reactor: IReactorCore | None = None, **options: Any) -> S:
    """Create and seed the database file if it is new (before the reactor starts: seconds
    for a million books), then hand it to a one-connection adbapi pool for everything after.

    Raises SeedMismatch if the file was seeded differently from what ``options`` ask for.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    store = store_type(PoolRunner(open_pool(path, reactor), path), **options)
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA synchronous=FULL")
        store._setup(connection.cursor())
        connection.commit()
        # WAL from here on. A new file is seeded with the default rollback journal first:
        # one big transaction, written once rather than to the WAL and then again.
        configure_connection(connection)
    finally:
        connection.close()
    return store

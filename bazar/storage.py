"""SQLite storage shared by every replica: a table of data plus a log of sequenced writes.

Each write is one transaction that changes the data *and* appends the resulting entry to
``log`` under the next sequence number, so a replica's state is exactly "the entries up to
``last_seq`` applied in order". The sequencer creates entries (``sequence``); followers
apply the sequencer's entries in order and refuse to skip one (``apply``); the log lets
anyone resend what a replica missed (``entries_after``).

SQL runs through a *runner* with adbapi's ``runInteraction`` signature: in production an
``adbapi.ConnectionPool`` with one connection, so statements leave the reactor thread and
transactions run one at a time in submission order; in unit tests an ``InlineRunner`` that
runs the same SQL synchronously on an in-memory database.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed

from bazar.errors import Conflict

T = TypeVar("T")
Entry = dict[str, Any]
Cursor = Any  # an adbapi Transaction or a sqlite3.Cursor: both have execute/fetchone/fetchall


class Runner(Protocol):
    def runInteraction(self, interaction: Callable[..., T], *args: Any) -> Deferred[T]: ...

    def close(self) -> None: ...


class InlineRunner:
    """Runs each interaction at once, in a transaction, on one sqlite3 connection (tests, tools)."""

    def __init__(self, path: str = ":memory:") -> None:
        self._connection = sqlite3.connect(path)

    def runInteraction(self, interaction: Callable[..., T], *args: Any) -> Deferred[T]:
        cursor = self._connection.cursor()
        try:
            result = interaction(cursor, *args)
        except BaseException:
            self._connection.rollback()
            return fail()
        self._connection.commit()
        return succeed(result)

    def close(self) -> None:
        self._connection.close()


def _configure(connection: sqlite3.Connection) -> None:
    # WAL lets readers and the writer proceed together; FULL syncs every commit to disk
    # before the write can be acknowledged.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")


def open_pool(path: Path, reactor: Any = None) -> adbapi.ConnectionPool:
    """One connection, so transactions run strictly one after another, in submission order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return adbapi.ConnectionPool(
        "sqlite3",
        str(path),
        check_same_thread=False,
        cp_min=1,
        cp_max=1,
        cp_openfun=_configure,
        cp_reactor=reactor,
    )


class SequenceGap(Conflict):
    """Entries arrived that do not follow the last applied one; the sender must resend from ``last_seq``."""

    def __init__(self, last_seq: int, got: int) -> None:
        super().__init__(f"expected sequence number {last_seq + 1}, got {got}")
        self.last_seq = last_seq


class ReplicatedStore:
    """What catalog and order stores share: the log, ordered application, and a digest."""

    schema: ClassVar[str]

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        # The last sequence number committed here, kept in memory for metrics and status
        # figures that must not wait for the database.
        self.applied_seq = 0

    def setup(self) -> Deferred[None]:
        return self.runner.runInteraction(self._setup)

    def _setup(self, txn: Cursor) -> None:
        txn.execute("CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL)")
        for statement in self.schema.split(";"):
            if statement.strip():
                txn.execute(statement)
        self._seed(txn)
        self.applied_seq = self._last_seq(txn)

    def _seed(self, txn: Cursor) -> None:
        """Fill a new database with its initial data; the same on every replica."""

    def close(self) -> None:
        self.runner.close()

    # -- the sequencer's side --------------------------------------------------------

    def sequence(self, operation: Callable[..., Entry], *args: Any) -> Deferred[tuple[int, Entry]]:
        """Run ``operation`` and log the entry it returns under the next sequence number, atomically."""
        d = self.runner.runInteraction(self._sequence, operation, args)
        return d.addCallback(self._committed)

    def _committed(self, sequenced: tuple[int, Entry]) -> tuple[int, Entry]:
        self.applied_seq = max(self.applied_seq, sequenced[0])
        return sequenced

    def _sequence(
        self, txn: Cursor, operation: Callable[..., Entry], args: tuple[Any, ...]
    ) -> tuple[int, Entry]:
        entry = operation(txn, *args)
        seq = self._last_seq(txn) + 1
        txn.execute("INSERT INTO log (seq, entry) VALUES (?, ?)", (seq, json.dumps(entry)))
        return seq, entry

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
        """``last_seq`` and a digest of the data: equal digests mean equal data."""
        return self.runner.runInteraction(self._status)

    def _status(self, txn: Cursor) -> dict[str, Any]:
        digest = hashlib.sha256()
        for row in self._rows(txn):
            digest.update(json.dumps(row, sort_keys=True).encode())
            digest.update(b"\n")
        return {"last_seq": self._last_seq(txn), "digest": digest.hexdigest()}

    def _rows(self, txn: Cursor) -> list[dict[str, Any]]:
        """Every data row in a fixed order: what the digest covers."""
        raise NotImplementedError


S = TypeVar("S", bound=ReplicatedStore)


def open_store(store_type: type[S], path: Path, reactor: Any = None) -> S:
    """Create and seed the database file if it is new (a few statements, run before the
    reactor starts), then hand it to a one-connection adbapi pool for everything after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = store_type(open_pool(path, reactor))
    connection = sqlite3.connect(path)
    try:
        _configure(connection)
        store._setup(connection.cursor())
        connection.commit()
    finally:
        connection.close()
    return store

"""Where a store's SQL runs: a *runner* with adbapi's ``runInteraction`` signature.

In production a ``PoolRunner``, an ``adbapi.ConnectionPool`` with one connection, so
statements leave the reactor thread and transactions run one at a time in submission order
(plus ``read_now``: point reads by primary key on a read-only connection of the reactor
thread); in unit tests an ``InlineRunner`` that runs the same SQL synchronously on an
in-memory database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorCore

T = TypeVar("T")


class Runner(Protocol):
    def runInteraction(self, interaction: Callable[..., T], *args: Any) -> Deferred[T]: ...

    def read_now(self, read: Callable[..., T], *args: Any) -> T:
        """Run a read whose cost is bounded by a few index pages, here and now (see PoolRunner)."""
        ...

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

    def read_now(self, read: Callable[..., T], *args: Any) -> T:
        return read(self._connection.cursor(), *args)

    def close(self) -> None:
        self._connection.close()


def configure_connection(connection: sqlite3.Connection) -> None:
    # WAL lets readers and the writer proceed together; FULL syncs every commit to disk
    # before the write can be acknowledged.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")


class PoolRunner:
    """Production: every transaction in adbapi's one-connection pool (off the reactor thread,
    one at a time), and point reads on a read-only connection of the reactor thread.

    A point read looks one row up by primary key: a few B-tree pages, measured in
    microseconds even with a million books, and in WAL mode it never waits for the writer.
    Sending it through the pool costs more than the read itself: a thread hop each way,
    the GIL handed back and forth, and a wait behind any commit in the queue.
    """

    def __init__(self, pool: adbapi.ConnectionPool, path: Path) -> None:
        self.pool = pool
        self.path = path
        self._reader: sqlite3.Connection | None = None  # opened at the first read: the file exists then

    def runInteraction(self, interaction: Callable[..., T], *args: Any) -> Deferred[T]:
        return self.pool.runInteraction(interaction, *args)

    def read_now(self, read: Callable[..., T], *args: Any) -> T:
        if self._reader is None:
            self._reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        cursor = self._reader.cursor()
        try:
            return read(cursor, *args)
        finally:
            cursor.close()

    def close(self) -> None:
        self.pool.close()
        if self._reader is not None:
            self._reader.close()


def open_pool(path: Path, reactor: IReactorCore | None = None) -> adbapi.ConnectionPool:
    """One connection, so transactions run strictly one after another, in submission order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return adbapi.ConnectionPool(
        "sqlite3",
        str(path),
        check_same_thread=False,
        cp_min=1,
        cp_max=1,
        cp_openfun=configure_connection,
        cp_reactor=reactor,
    )

"""The catalog's SQLite data: the books table and the operations that change it.

Every change is a sequenced operation (see ``bazar.storage``) whose log entry is the
book's resulting row; followers upsert that row. Stock changes are conditional updates in
one statement, so two concurrent buys can never both take the last copy.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from bazar.errors import Conflict, NotFound
from bazar.storage import Cursor, Entry, ReplicatedStore

Book = dict[str, Any]

# The seven books of the Lab 2 report (titles trimmed of their trailing blanks).
SEED_BOOKS: tuple[tuple[int, str, str, float, int], ...] = (
    (0, "How to get a good grade in DOS in 40 minutes a day.", "distributed systems", 100.0, 85),
    (1, "RPCs for Noobs.", "distributed systems", 22.35, 60),
    (2, "Xen and the Art of Surviving Undergraduate School.", "undergraduate school", 50.0, 8),
    (3, "Cooking for the Impatient Undergrad.", "undergraduate school", 89.33, 65),
    (4, "How to finish Project 3 on time", "new", 70.0, 40),
    (5, "Why theory classes are so hard", "new", 100.0, 80),
    (6, "Living in the Pioneer Valley", "new", 700.0, 90),
)

_COLUMNS = "id, title, topic, price, quantity"

# Stock stays an exact integer (SQLite would turn a sum past 2**63 into a float).
MAX_STOCK = 2**53


def _book(row: tuple[Any, ...]) -> Book:
    return {"id": row[0], "title": row[1], "topic": row[2], "price": row[3], "quantity": row[4]}


class CatalogStore(ReplicatedStore):
    schema = """
        CREATE TABLE IF NOT EXISTS books (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            topic TEXT NOT NULL,
            price REAL NOT NULL CHECK (price >= 0),
            quantity INTEGER NOT NULL CHECK (quantity >= 0)
        );
        CREATE INDEX IF NOT EXISTS books_by_topic ON books (topic, id)
    """

    def _seed(self, txn: Cursor) -> None:
        txn.execute("SELECT COUNT(*) FROM books")
        if txn.fetchone()[0] == 0 and self._last_seq(txn) == 0:
            txn.executemany(f"INSERT INTO books ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)", SEED_BOOKS)

    # -- reads -----------------------------------------------------------------------

    def all_books(self) -> Deferred[list[Book]]:
        return self.runner.runInteraction(self._all_books)

    @staticmethod
    def _all_books(txn: Cursor) -> list[Book]:
        txn.execute(f"SELECT {_COLUMNS} FROM books ORDER BY id")
        return [_book(r) for r in txn.fetchall()]

    def book(self, book_id: int) -> Deferred[Book]:
        return self.runner.runInteraction(self._book, book_id)

    @staticmethod
    def _book(txn: Cursor, book_id: int) -> Book:
        txn.execute(f"SELECT {_COLUMNS} FROM books WHERE id = ?", (book_id,))
        row = txn.fetchone()
        if row is None:
            raise NotFound(f"no book with id {book_id}")
        return _book(row)

    def search(self, topic: str) -> Deferred[list[Book]]:
        return self.runner.runInteraction(self._search, topic)

    @staticmethod
    def _search(txn: Cursor, topic: str) -> list[Book]:
        txn.execute(f"SELECT {_COLUMNS} FROM books WHERE topic = ? ORDER BY id", (topic,))
        return [_book(r) for r in txn.fetchall()]

    def _rows(self, txn: Cursor) -> list[Book]:
        return self._all_books(txn)

    # -- sequenced writes (the sequencer only) ---------------------------------------

    def buy(self, book_id: int, quantity: int) -> Deferred[tuple[int, Entry]]:
        return self.sequence(self._buy, book_id, quantity)

    def _buy(self, txn: Cursor, book_id: int, quantity: int) -> Entry:
        txn.execute(
            "UPDATE books SET quantity = quantity - ? WHERE id = ? AND quantity >= ?",
            (quantity, book_id, quantity),
        )
        if txn.rowcount == 0:
            book = self._book(txn, book_id)  # raises NotFound for an unknown id
            raise Conflict(f"not enough stock of book {book_id}: {book['quantity']} left, {quantity} asked")
        return {"book": self._book(txn, book_id)}

    def set_price(self, book_id: int, price: float) -> Deferred[tuple[int, Entry]]:
        return self.sequence(self._set, book_id, "price = ?", (price,))

    def set_quantity(self, book_id: int, quantity: int) -> Deferred[tuple[int, Entry]]:
        return self.sequence(self._set, book_id, "quantity = ?", (quantity,))

    def add_quantity(self, book_id: int, delta: int) -> Deferred[tuple[int, Entry]]:
        return self.sequence(self._add_quantity, book_id, delta)

    def _add_quantity(self, txn: Cursor, book_id: int, delta: int) -> Entry:
        txn.execute(
            "UPDATE books SET quantity = quantity + ? WHERE id = ? AND quantity + ? BETWEEN 0 AND ?",
            (delta, book_id, delta, MAX_STOCK),
        )
        if txn.rowcount == 0:
            book = self._book(txn, book_id)
            raise Conflict(
                f"stock of book {book_id} must stay between 0 and {MAX_STOCK}: "
                f"{book['quantity']} left, delta {delta}"
            )
        return {"book": self._book(txn, book_id)}

    def _set(self, txn: Cursor, book_id: int, assignment: str, values: tuple[Any, ...]) -> Entry:
        txn.execute(f"UPDATE books SET {assignment} WHERE id = ?", (*values, book_id))
        if txn.rowcount == 0:
            raise NotFound(f"no book with id {book_id}")
        return {"book": self._book(txn, book_id)}

    # -- followers -------------------------------------------------------------------

    def _apply_entry(self, txn: Cursor, entry: Entry) -> None:
        book = entry["book"]
        txn.execute(
            f"INSERT OR REPLACE INTO books ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            (book["id"], book["title"], book["topic"], book["price"], book["quantity"]),
        )

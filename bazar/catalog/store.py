"""The catalog's SQLite data: the books table and the operations that change it.

Every change is a sequenced operation (see ``bazar.storage``) whose log entry is the
book's resulting row; followers upsert that row. Stock changes are conditional updates in
one statement, so two concurrent buys can never both take the last copy. Every change also
updates the digest and the per-topic counts in ``meta`` and ``topics`` (same transaction).

A new database holds ``books`` books: the report's seven, then generated ones whose fields
are functions of their id, so every replica seeds identical rows. Listings are read a page
at a time by index seeks (see ``bazar.paging``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from bazar.config import Config
from bazar.digest import Row
from bazar.errors import Conflict, NotFound
from bazar.paging import Page
from bazar.runners import Runner
from bazar.storage import Cursor, Entry, ReplicatedStore, SeedMismatch

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

# Topics of the generated books (ids 7 and up): none is a topic of the report's books, so
# the report's searches find the report's books whatever the size of the catalog.
GENERATED_TOPICS: tuple[str, ...] = (
    "algorithms", "compilers", "operating systems", "databases", "networking", "security",
    "cryptography", "machine learning", "statistics", "linear algebra", "calculus", "geometry",
    "number theory", "logic", "philosophy", "ethics", "history", "economics", "finance",
    "accounting", "marketing", "management", "law", "psychology", "sociology", "linguistics",
    "poetry", "fiction", "drama", "music", "painting", "architecture", "photography", "film",
    "cooking", "gardening", "travel", "hiking", "astronomy", "physics", "chemistry", "biology",
    "ecology", "geology", "medicine", "nursing", "sports", "chess", "woodworking", "art/design",
)  # fmt: skip
_ADJECTIVES = (
    "Practical", "Modern", "Gentle", "Applied", "Essential", "Hidden", "Elegant", "Curious",
    "Complete", "Pocket", "Illustrated", "Unofficial", "Hands-on",
)  # fmt: skip
_NOUNS = (
    "Guide", "Handbook", "Primer", "Notes", "Lectures", "Recipes", "Patterns", "Essays",
    "Companion", "Workbook", "Atlas", "Puzzles", "Questions", "Stories", "Field Manual",
)  # fmt: skip

_TITLED_TOPICS = tuple(topic.title() for topic in GENERATED_TOPICS)

_COLUMNS = "id, title, topic, price, quantity"

# A page: a seek on the primary key (id > after), then at most offset + limit + 1 rows; the
# extra row only tells whether a next page exists. A topic's page seeks the (topic, id) index.
PAGE_SQL = f"SELECT {_COLUMNS} FROM books WHERE id > ? ORDER BY id LIMIT ? OFFSET ?"
SEARCH_SQL = f"SELECT {_COLUMNS} FROM books WHERE topic = ? AND id > ? ORDER BY id LIMIT ? OFFSET ?"

# Stock stays an exact integer (SQLite would turn a sum past 2**63 into a float).
MAX_STOCK = 2**53


def generated_book(book_id: int) -> tuple[int, str, str, float, int]:
    """Book ``book_id`` (7 or more) of a large catalog: a function of its id alone, so every
    replica seeds the same rows. Prices 1.00 to 99.99, stock 0 to 100."""
    which = book_id % len(GENERATED_TOPICS)
    adjective = _ADJECTIVES[book_id % len(_ADJECTIVES)]
    noun = _NOUNS[(book_id // len(_ADJECTIVES)) % len(_NOUNS)]
    title = f"{adjective} {noun} on {_TITLED_TOPICS[which]}, vol. {book_id}"
    price = ((book_id * 7919) % 9900 + 100) / 100
    return book_id, title, GENERATED_TOPICS[which], price, book_id * 37 % 101


def seed_books(count: int) -> Iterator[tuple[int, str, str, float, int]]:
    """The first ``count`` books (at least the report's seven), in id order."""
    yield from SEED_BOOKS
    for book_id in range(len(SEED_BOOKS), count):
        yield generated_book(book_id)


def buy_request(book_id: int, quantity: int) -> str:
    """What a keyed take asked for, stored with its key: a retry must ask the same."""
    return f"buy {book_id} x{quantity}"


_BUY_REQUEST = re.compile(r"buy (\d+) x(\d+)")

Take = dict[str, Any]


def take_of(seq: int, entry: Entry) -> Take | None:
    """The purchase's take that log entry ``seq`` is, if it is a keyed one: its key, book,
    quantity, and the book's title and price after it. Entries logged before buys were
    marked (``bought``) are recognised by their request."""
    key = entry.get("idempotency")
    if key is None:
        return None
    quantity = entry.get("bought")
    if quantity is None:
        asked = _BUY_REQUEST.fullmatch(key["request"])
        if asked is None:
            return None
        quantity = int(asked[2])
    book = entry["book"]
    return {
        "seq": seq,
        "key": key["key"],
        "book_id": book["id"],
        "quantity": quantity,
        "title": book["title"],
        "price": book["price"],
    }


def no_such_book(book_id: int) -> NotFound:
    return NotFound(f"no book with id {book_id}")


def _book(row: Row) -> Book:
    return {"id": row[0], "title": row[1], "topic": row[2], "price": row[3], "quantity": row[4]}


def _after(page: Page) -> int:
    return -1 if page.after is None else page.after  # ids are >= 0


@dataclass(frozen=True)
class BookPage:
    """One page of a listing: its books, how many the whole listing has, and the id after
    which the next page starts (None on the last page)."""

    books: list[Book]
    total: int
    next_after: int | None


def _page(rows: list[Row], page: Page, total: int) -> BookPage:
    """``rows`` were fetched with LIMIT page.limit + 1: a row beyond the page means a next page."""
    books = [_book(r) for r in rows[: page.limit]]
    next_after = books[-1]["id"] if len(rows) > page.limit else None
    return BookPage(books, total, next_after)


class CatalogStore(ReplicatedStore):
    table = "books"
    columns = _COLUMNS
    schema = """
        CREATE TABLE IF NOT EXISTS books (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            topic TEXT NOT NULL,
            price REAL NOT NULL CHECK (price >= 0),
            quantity INTEGER NOT NULL CHECK (quantity >= 0)
        );
        CREATE TABLE IF NOT EXISTS topics (topic TEXT PRIMARY KEY, books INTEGER NOT NULL)
    """
    indexes = "CREATE INDEX IF NOT EXISTS books_by_topic ON books (topic, id)"

    def __init__(self, runner: Runner, books: int = len(SEED_BOOKS)) -> None:
        super().__init__(runner)
        if books < len(SEED_BOOKS):
            raise ValueError(f"a catalog has at least the report's {len(SEED_BOOKS)} books, not {books}")
        self.books = books

    @classmethod
    def options(cls, config: Config) -> dict[str, Any]:
        return {"books": config.books}

    def _seed(self, txn: Cursor) -> None:
        topics: Counter[str] = Counter()

        def counted() -> Iterator[Row]:
            for book in seed_books(self.books):
                topics[book[2]] += 1
                yield book

        self._insert_new_rows(txn, counted())
        txn.executemany("INSERT INTO topics (topic, books) VALUES (?, ?)", sorted(topics.items()))
        self._set_meta(txn, "books", self.books)

    def _check_seed(self, txn: Cursor) -> None:
        seeded = self._meta(txn, "books")
        if seeded is None:
            # Made before the count was recorded, when only the report's books existed.
            seeded = len(SEED_BOOKS)
            self._set_meta(txn, "books", seeded)
        if seeded != self.books:
            raise SeedMismatch(
                f"the catalog database was seeded with {seeded} books, but the config asks for "
                f"{self.books}: remove the data directory to seed it anew"
            )

    def _derive(self, txn: Cursor) -> None:
        super()._derive(txn)
        # A count per topic, so a search page can say how many books the topic has without
        # counting them on every request; the (topic, id) index makes this one pass.
        txn.execute("DELETE FROM topics")
        txn.execute("INSERT INTO topics (topic, books) SELECT topic, COUNT(*) FROM books GROUP BY topic")

    def _row_changed(self, txn: Cursor, old: Row | None, new: Row | None) -> None:
        super()._row_changed(txn, old, new)
        change: Counter[str] = Counter()
        if old is not None:
            change[old[2]] -= 1
        if new is not None:
            change[new[2]] += 1
        for topic, delta in change.items():
            if delta:
                txn.execute("INSERT OR IGNORE INTO topics (topic, books) VALUES (?, 0)", (topic,))
                txn.execute("UPDATE topics SET books = books + ? WHERE topic = ?", (delta, topic))
                txn.execute("DELETE FROM topics WHERE topic = ? AND books = 0", (topic,))

    # -- reads -----------------------------------------------------------------------

    def all_books(self) -> Deferred[list[Book]]:
        """Every book, in one list: for tests and tools. The API pages (``books_page``)."""
        return self.runner.runInteraction(lambda txn: [_book(r) for r in self._scan(txn)])

    def books_page(self, page: Page) -> Deferred[BookPage]:
        return self.runner.runInteraction(self._books_page, page)

    def _books_page(self, txn: Cursor, page: Page) -> BookPage:
        txn.execute(PAGE_SQL, (_after(page), page.limit + 1, page.offset))
        rows = txn.fetchall()
        return _page(rows, page, int(self._meta(txn, "rows")))

    def book(self, book_id: int) -> Book:
        """One book by id, read at once (a point read: see ``PoolRunner``); NotFound if none."""
        return self.runner.read_now(self._book, book_id)

    def book_queued(self, book_id: int) -> Deferred[Book]:
        """The same, read in turn with the writes: after every one submitted before it."""
        return self.runner.runInteraction(self._book, book_id)

    @staticmethod
    def _book(txn: Cursor, book_id: int) -> Book:
        txn.execute(f"SELECT {_COLUMNS} FROM books WHERE id = ?", (book_id,))
        row = txn.fetchone()
        if row is None:
            raise no_such_book(book_id)
        return _book(row)

    def lookup(self, book_ids: list[int]) -> list[Book]:
        """The books with these ids (any missing id is left out), read at once: a point read
        per id, like ``book`` (a lookup names at most ``bazar.batching.MAX_LOOKUP``)."""
        return self.runner.read_now(self._lookup, book_ids)

    def lookup_queued(self, book_ids: list[int]) -> Deferred[list[Book]]:
        """The same, read in turn with the writes: after every one submitted before it."""
        return self.runner.runInteraction(self._lookup, book_ids)

    @staticmethod
    def _lookup(txn: Cursor, book_ids: list[int]) -> list[Book]:
        marks = ",".join("?" * len(book_ids))
        txn.execute(f"SELECT {_COLUMNS} FROM books WHERE id IN ({marks})", book_ids)
        return [_book(row) for row in txn.fetchall()]

    def search_page(self, topic: str, page: Page) -> Deferred[BookPage]:
        return self.runner.runInteraction(self._search_page, topic, page)

    def _search_page(self, txn: Cursor, topic: str, page: Page) -> BookPage:
        txn.execute(SEARCH_SQL, (topic, _after(page), page.limit + 1, page.offset))
        rows = txn.fetchall()
        txn.execute("SELECT books FROM topics WHERE topic = ?", (topic,))
        count = txn.fetchone()
        return _page(rows, page, 0 if count is None else int(count[0]))

    # -- sequenced writes (the sequencer only) ---------------------------------------

    def buy(self, book_id: int, quantity: int, key: str | None = None) -> Deferred[tuple[int, Entry]]:
        """Take ``quantity`` copies; with a ``key``, a retry gets the original answer instead."""
        idempotency = (key, buy_request(book_id, quantity)) if key is not None else None
        return self.sequence(self._buy, book_id, quantity, idempotency=idempotency)

    def _buy(self, txn: Cursor, book_id: int, quantity: int) -> Entry:
        old = self._existing(txn, book_id)
        txn.execute(
            "UPDATE books SET quantity = quantity - ? WHERE id = ? AND quantity >= ?",
            (quantity, book_id, quantity),
        )
        if txn.rowcount == 0:
            raise Conflict(f"not enough stock of book {book_id}: {old[4]} left, {quantity} asked")
        # Marked, so that the log tells a purchase's take from a change of stock.
        return {**self._changed(txn, old), "bought": quantity}

    def set_price(self, book_id: int, price: float) -> Deferred[tuple[int, Entry]]:
        return self.sequence(self._set, book_id, "price = ?", (price,))

    def set_quantity(self, book_id: int, quantity: int) -> Deferred[tuple[int, Entry]]:
        return self.sequence(self._set, book_id, "quantity = ?", (quantity,))

    def add_quantity(self, book_id: int, delta: int) -> Deferred[tuple[int, Entry]]:
        return self.sequence(self._add_quantity, book_id, delta)

    def _add_quantity(self, txn: Cursor, book_id: int, delta: int) -> Entry:
        old = self._existing(txn, book_id)
        txn.execute(
            "UPDATE books SET quantity = quantity + ? WHERE id = ? AND quantity + ? BETWEEN 0 AND ?",
            (delta, book_id, delta, MAX_STOCK),
        )
        if txn.rowcount == 0:
            if delta < 0:
                raise Conflict(f"not enough stock of book {book_id} to remove {-delta}: {old[4]} left")
            raise Conflict(f"that would make the stock of book {book_id} too large")  # past MAX_STOCK
        return self._changed(txn, old)

    def _set(self, txn: Cursor, book_id: int, assignment: str, values: tuple[Any, ...]) -> Entry:
        old = self._existing(txn, book_id)
        txn.execute(f"UPDATE books SET {assignment} WHERE id = ?", (*values, book_id))
        return self._changed(txn, old)

    def _existing(self, txn: Cursor, book_id: int) -> Row:
        """The book's row before a change (for the digest), or NotFound."""
        row = self._row(txn, book_id)
        if row is None:
            raise no_such_book(book_id)
        return row

    def _changed(self, txn: Cursor, old: Row) -> Entry:
        """Account for the change from ``old`` in the digest; the log entry: the row as it is now."""
        new = self._row(txn, old[0])
        self._row_changed(txn, old, new)
        assert new is not None
        return {"book": _book(new)}

    # -- takes: what the order sequencer resolves (see ``bazar.order.orphans``) --------

    def takes_after(self, after: int, limit: int) -> Deferred[tuple[list[Take], int]]:
        """The keyed takes among the log entries after ``after`` (at most ``limit`` entries
        looked at), and the sequence number of the last entry looked at (``after`` if none)."""
        return self.runner.runInteraction(self._takes_after, after, limit)

    def _takes_after(self, txn: Cursor, after: int, limit: int) -> tuple[list[Take], int]:
        takes = []
        last = after
        for seq, entry in self._entries_after(txn, after, limit):
            last = seq
            take = take_of(seq, entry)
            if take is not None:
                takes.append(take)
        return takes, last

    # -- followers -------------------------------------------------------------------

    def _apply_entry(self, txn: Cursor, entry: Entry) -> None:
        book = entry["book"]
        self._put_row(txn, (book["id"], book["title"], book["topic"], book["price"], book["quantity"]))

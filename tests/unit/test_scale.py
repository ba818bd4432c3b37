"""A catalog of many books: deterministic seeding, pages by index, and the digest kept up to date.

Stores run on in-memory SQLite (``InlineRunner``) except where a file is the point (the
seed-size check, a database from before the ``meta`` table).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, TypeVar

from twisted.trial.unittest import SynchronousTestCase

from bazar import verify
from bazar.catalog.store import (
    GENERATED_TOPICS,
    PAGE_SQL,
    SEARCH_SQL,
    SEED_BOOKS,
    BookPage,
    CatalogStore,
    generated_book,
)
from bazar.digest import row_hash
from bazar.order.store import OrderStore
from bazar.paging import Page
from bazar.runners import InlineRunner
from bazar.storage import ReplicatedStore, SeedMismatch, open_store

S = TypeVar("S", bound=ReplicatedStore)

N = 1000
REPORT_BOOK_6 = {
    "id": 6,
    "title": "Living in the Pioneer Valley",
    "topic": "new",
    "price": 700.0,
    "quantity": 90,
}


class ScaleTestCase(SynchronousTestCase):
    def store(self, store: S) -> S:
        """``store``, set up on its in-memory database, and closed after the test."""
        self.addCleanup(store.close)
        self.successResultOf(store.setup())
        return store

    def catalog(self, books: int = 7) -> CatalogStore:
        return self.store(CatalogStore(InlineRunner(), books=books))

    def orders(self) -> OrderStore:
        return self.store(OrderStore(InlineRunner()))

    def digest(self, store: ReplicatedStore) -> str:
        digest = self.successResultOf(store.status())["digest"]
        assert isinstance(digest, str)
        return digest

    def assertDigestIsTrue(self, store: ReplicatedStore) -> None:
        """The digest kept in ``meta`` is the one summed from scratch over the rows."""
        self.assertEqual(self.digest(store), self.successResultOf(store.recompute_digest()))


class SeedTests(ScaleTestCase):
    def test_same_size_same_rows_and_digest(self) -> None:
        """Two catalogs of N books hold identical rows and have one digest."""
        first, second = self.catalog(N), self.catalog(N)
        books = self.successResultOf(first.all_books())
        self.assertEqual(books, self.successResultOf(second.all_books()))
        self.assertEqual([b["id"] for b in books], list(range(N)))
        self.assertEqual(self.digest(first), self.digest(second))
        self.assertEqual(self.successResultOf(first.row_count()), N)

    def test_the_report_books_come_first(self) -> None:
        """Books 0-6 are the report's, book 6 included; the report's searches find only them."""
        catalog = self.catalog(N)
        books = self.successResultOf(catalog.all_books())
        self.assertEqual([tuple(b.values()) for b in books[:7]], [tuple(row) for row in SEED_BOOKS])
        self.assertEqual(books[6], REPORT_BOOK_6)
        new = self.successResultOf(catalog.search_page("new", Page()))
        self.assertEqual([b["id"] for b in new.books], [4, 5, 6])
        self.assertEqual(new.total, 3)

    def test_generated_books(self) -> None:
        """Books 7 and up are functions of their id, with a topic from the fixed list."""
        catalog = self.catalog(N)
        books = self.successResultOf(catalog.all_books())
        for book in books[7:]:
            self.assertEqual(tuple(book.values()), generated_book(book["id"]))
            self.assertIn(book["topic"], GENERATED_TOPICS)
            self.assertGreaterEqual(book["price"], 1.0)
            self.assertGreaterEqual(book["quantity"], 0)
        self.assertEqual({b["topic"] for b in books[7:]}, set(GENERATED_TOPICS))
        self.assertEqual(generated_book(123_456), generated_book(123_456))

    def test_seven_by_default(self) -> None:
        """Without a size, a catalog is the report's seven books."""
        self.assertEqual(len(self.successResultOf(self.catalog().all_books())), 7)

    def test_size_changes_the_digest(self) -> None:
        self.assertNotEqual(self.digest(self.catalog(N)), self.digest(self.catalog(N + 1)))

    def test_fewer_than_seven_is_refused(self) -> None:
        error = self.assertRaises(ValueError, CatalogStore, InlineRunner(), books=6)
        self.assertIn("6", str(error))

    def test_seed_digest_is_the_recomputed_one(self) -> None:
        """The seed adds each row's hash as it inserts it: the same sum as one from scratch."""
        self.assertDigestIsTrue(self.catalog(N))
        self.assertDigestIsTrue(self.catalog())
        self.assertDigestIsTrue(self.orders())


class SeedFileTests(ScaleTestCase):
    def path(self) -> Path:
        return Path(self.mktemp()) / "catalog.sqlite"

    def open(self, path: Path, books: int) -> CatalogStore:
        """Open (create, seed, migrate) the file as a replica does, then a store on it that runs
        its SQL inline (the replica's own store needs a running reactor)."""
        open_store(CatalogStore, path, books=books).close()
        store = CatalogStore(InlineRunner(str(path)), books=books)
        self.addCleanup(store.close)
        self.successResultOf(store.setup())
        return store

    def test_reopening_keeps_the_data(self) -> None:
        """A database is seeded once: reopened with the same size, it keeps its changes."""
        path = self.path()
        store = self.open(path, N)
        self.successResultOf(store.buy(500, 1))
        digest = self.digest(store)
        again = self.open(path, N)
        self.assertEqual(self.digest(again), digest)
        self.assertEqual(again.book(500)["quantity"], generated_book(500)[4] - 1)

    def test_a_different_size_is_refused(self) -> None:
        """A database seeded with N books will not serve a config that asks for another number."""
        path = self.path()
        self.open(path, N)
        error = self.assertRaises(SeedMismatch, open_store, CatalogStore, path, books=N + 1)
        self.assertIn(f"seeded with {N} books", str(error))
        self.assertIn(f"asks for {N + 1}", str(error))

    def test_a_database_from_before_the_meta_table(self) -> None:
        """A file written by the previous version (no meta, no topic counts) gets them derived once."""
        path = self.path()
        path.parent.mkdir(parents=True)
        connection = sqlite3.connect(path)
        connection.executescript(
            """
            CREATE TABLE log (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL);
            CREATE TABLE books (id INTEGER PRIMARY KEY, title TEXT NOT NULL, topic TEXT NOT NULL,
                                price REAL NOT NULL, quantity INTEGER NOT NULL);
            """
        )
        connection.executemany("INSERT INTO books VALUES (?, ?, ?, ?, ?)", SEED_BOOKS)
        connection.execute("UPDATE books SET quantity = 1 WHERE id = 6")
        connection.execute("INSERT INTO log VALUES (1, '{}')")
        connection.commit()
        connection.close()
        store = self.open(path, 7)
        self.assertEqual(store.book(6)["quantity"], 1)  # not reseeded
        self.assertDigestIsTrue(store)
        self.assertEqual(self.successResultOf(store.row_count()), 7)
        self.assertEqual(self.successResultOf(store.search_page("new", Page())).total, 3)
        self.assertRaises(SeedMismatch, open_store, CatalogStore, path, books=8)


class DigestTests(ScaleTestCase):
    def test_kept_digest_equals_recomputed_after_writes(self) -> None:
        """After every kind of write, on the sequencer and on a follower, the kept digest is the true one."""
        leader, follower = self.catalog(N), self.catalog(N)
        self.successResultOf(leader.buy(6, 2))
        self.successResultOf(leader.set_price(700, 12.5))
        self.successResultOf(leader.set_quantity(3, 0))
        self.successResultOf(leader.add_quantity(999, 5))
        self.successResultOf(leader.set_price(700, 13))  # an int price is stored as a REAL: hashed as stored
        self.assertDigestIsTrue(leader)
        self.successResultOf(follower.apply(self.successResultOf(leader.entries_after(0))))
        self.assertDigestIsTrue(follower)
        self.assertEqual(self.digest(follower), self.digest(leader))

    def test_failed_writes_leave_the_digest(self) -> None:
        catalog = self.catalog(N)
        before = self.digest(catalog)
        self.failureResultOf(catalog.buy(2, 1000))
        self.failureResultOf(catalog.set_price(N, 1.0))
        self.assertEqual(self.digest(catalog), before)
        self.assertDigestIsTrue(catalog)

    def test_order_of_writes_does_not_matter(self) -> None:
        """Equal data, equal digest, whatever the order of the writes that led there."""
        first, second = self.catalog(N), self.catalog(N)
        self.successResultOf(first.set_price(10, 1.5))
        self.successResultOf(first.set_price(20, 2.5))
        self.successResultOf(second.set_price(20, 2.5))
        self.successResultOf(second.set_price(10, 1.5))
        self.assertEqual(self.digest(first), self.digest(second))

    def test_a_write_and_its_undo(self) -> None:
        """A change moves the digest; changing it back restores it exactly."""
        catalog = self.catalog(N)
        before = self.digest(catalog)
        original = catalog.book(400)["price"]
        self.successResultOf(catalog.set_price(400, original + 1))
        self.assertNotEqual(self.digest(catalog), before)
        self.successResultOf(catalog.set_price(400, original))
        self.assertEqual(self.digest(catalog), before)

    def test_status_reads_the_kept_digest(self) -> None:
        """status() does not scan the table: a change made behind the store's back does not show
        in it, but recompute_digest() (the operator's check) finds it."""
        catalog = self.catalog(N)
        kept = self.digest(catalog)
        self.successResultOf(
            catalog.runner.runInteraction(lambda txn: txn.execute("UPDATE books SET price = 0 WHERE id = 9"))
        )
        self.assertEqual(self.digest(catalog), kept)
        self.assertNotEqual(self.successResultOf(catalog.recompute_digest()), kept)

    def test_new_rows_from_the_log(self) -> None:
        """A follower given a book it lacks, or one with a new topic, counts it in rows, topics, digest."""
        catalog = self.catalog(N)
        new_book = {"id": N + 5, "title": "Extra", "topic": "chess", "price": 1, "quantity": 1}  # int price
        moved = catalog.book(3) | {"topic": "chess"}
        chess = self.successResultOf(catalog.search_page("chess", Page())).total
        self.successResultOf(catalog.apply([(1, {"book": new_book}), (2, {"book": moved})]))
        self.assertEqual(self.successResultOf(catalog.row_count()), N + 1)
        self.assertEqual(self.successResultOf(catalog.search_page("chess", Page())).total, chess + 2)
        self.assertEqual(self.successResultOf(catalog.search_page("undergraduate school", Page())).total, 1)
        self.assertDigestIsTrue(catalog)

    def test_orders(self) -> None:
        orders = self.orders()
        for book in (1, 2, 3):
            self.successResultOf(orders.record(book, f"book {book}", 1.0 * book, 1))
        self.assertDigestIsTrue(orders)
        self.assertEqual(self.successResultOf(orders.row_count()), 3)

    def test_row_hash_is_unambiguous(self) -> None:
        """Rows that differ in any value, a string's split, or a number's type hash differently."""
        rows = [(1, "ab", "c", 1.0, 1), (1, "a", "bc", 1.0, 1), (1, "ab", "c", 1, 1), (1, "ab", "c", 1.0, 2)]
        self.assertEqual(len({row_hash(r) for r in rows}), len(rows))


class PageTests(ScaleTestCase):
    def setUp(self) -> None:
        self.big = self.catalog(N)

    def page(self, page: Page) -> BookPage:
        return self.successResultOf(self.big.books_page(page))

    def ids(self, page: BookPage) -> list[int]:
        return [b["id"] for b in page.books]

    def test_default_page(self) -> None:
        """The first 100 books, the total, and the id the next page starts after."""
        first = self.page(Page())
        self.assertEqual(self.ids(first), list(range(100)))
        self.assertEqual((first.total, first.next_after), (N, 99))

    def test_limit_and_offset(self) -> None:
        self.assertEqual(self.ids(self.page(Page(limit=3, offset=10))), [10, 11, 12])
        last = self.page(Page(limit=10, offset=N - 4))
        self.assertEqual((self.ids(last), last.next_after), (list(range(N - 4, N)), None))
        self.assertEqual(self.page(Page(offset=N)), BookPage([], N, None))

    def test_an_exactly_full_last_page_has_no_next(self) -> None:
        last = self.page(Page(limit=500, offset=500))
        self.assertEqual((len(last.books), last.next_after), (500, None))

    def test_cursor(self) -> None:
        """``after`` starts after that id; with ``offset`` too, skips that many more."""
        self.assertEqual(self.ids(self.page(Page(limit=3, after=41))), [42, 43, 44])
        self.assertEqual(self.ids(self.page(Page(limit=2, offset=3, after=10))), [14, 15])
        self.assertEqual(self.page(Page(after=N - 1)), BookPage([], N, None))

    def test_following_the_cursor_visits_every_book_once(self) -> None:
        seen: list[int] = []
        page = Page(limit=97)
        while True:
            result = self.page(page)
            seen += self.ids(result)
            if result.next_after is None:
                break
            page = Page(limit=97, after=result.next_after)
        self.assertEqual(seen, list(range(N)))

    def test_search_pages(self) -> None:
        """A topic's books a page at a time, in id order, with the topic's total."""
        topic = GENERATED_TOPICS[0]
        expected = [b["id"] for b in self.successResultOf(self.big.all_books()) if b["topic"] == topic]
        seen: list[int] = []
        page = Page(limit=7)
        while True:
            result = self.successResultOf(self.big.search_page(topic, page))
            self.assertEqual(result.total, len(expected))
            seen += self.ids(result)
            if result.next_after is None:
                break
            page = Page(limit=7, after=result.next_after)
        self.assertEqual(seen, expected)
        second = self.successResultOf(self.big.search_page(topic, Page(limit=2, offset=2)))
        self.assertEqual(self.ids(second), expected[2:4])
        self.assertEqual(
            self.successResultOf(self.big.search_page("no such topic", Page())), BookPage([], 0, None)
        )

    def test_queries_seek_an_index(self) -> None:
        """Pages are index seeks (the primary key, the (topic, id) index), never a scan of the table."""

        def plan(txn: Any, sql: str, args: tuple[Any, ...]) -> str:
            txn.execute(f"EXPLAIN QUERY PLAN {sql}", args)
            return " ".join(str(row[-1]) for row in txn.fetchall())

        run = self.big.runner.runInteraction
        self.assertIn("USING INTEGER PRIMARY KEY", self.successResultOf(run(plan, PAGE_SQL, (41, 101, 0))))
        self.assertIn(
            "USING INDEX books_by_topic (topic=? AND id>?)",
            self.successResultOf(run(plan, SEARCH_SQL, ("x", 41, 101, 0))),
        )


class VerifyTests(SynchronousTestCase):
    """``python -m bazar.verify``: the operator's check that kept digests are true."""

    def seeded(self, name: str) -> Path:
        path = Path(self.mktemp()) / name
        open_store(CatalogStore, path, books=N).close()
        return path

    def test_a_true_digest_passes(self) -> None:
        path = self.seeded("catalog-1.sqlite")
        orders = Path(self.mktemp()) / "order-1.sqlite"
        open_store(OrderStore, orders).close()
        self.assertEqual(verify.main([str(path), str(orders)]), 0)
        ok, line = verify.check(path)
        self.assertTrue(ok)
        self.assertIn("kept = recomputed", line)

    def test_a_change_behind_the_stores_back_fails(self) -> None:
        path = self.seeded("catalog-2.sqlite")
        connection = sqlite3.connect(path)
        connection.execute("UPDATE books SET quantity = quantity + 1 WHERE id = 500")
        connection.commit()
        connection.close()
        ok, line = verify.check(path)
        self.assertFalse(ok)
        self.assertIn("but the rows sum to", line)
        self.assertEqual(verify.main([str(path)]), 1)

    def test_not_a_replica_file(self) -> None:
        missing = Path(self.mktemp()) / "missing.sqlite"
        self.assertEqual(verify.check(missing)[0], False)
        self.assertFalse(missing.exists())  # read-only: nothing created
        self.assertEqual(verify.main([]), 2)

"""Tests for ``bazar.storage`` and the catalog and order stores, on in-memory SQLite.

``InlineRunner`` runs every interaction at once, so each store call returns an
already-fired Deferred: ``successResultOf``/``failureResultOf`` read it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, TypeVar

from twisted.trial.unittest import SynchronousTestCase

from bazar.catalog.store import MAX_STOCK, SEED_BOOKS, BookPage, CatalogStore
from bazar.errors import Conflict, NotFound
from bazar.order.store import OrderStore
from bazar.paging import Page
from bazar.runners import InlineRunner, PoolRunner
from bazar.storage import Entry, ReplicatedStore, SequenceGap, open_store

S = TypeVar("S", bound=ReplicatedStore)


class StoreTestCase(SynchronousTestCase):
    def store(self, store_type: type[S], **options: Any) -> S:
        """A new, set-up store on its own in-memory database, closed after the test."""
        store = store_type(InlineRunner(), **options)
        self.addCleanup(store.close)
        self.assertIsNone(self.successResultOf(store.setup()))
        return store

    def log(self, store: ReplicatedStore) -> list[tuple[int, Entry]]:
        return self.successResultOf(store.entries_after(0))

    def assertInSync(self, leader: ReplicatedStore, follower: ReplicatedStore) -> None:
        """Same last_seq, same digest, same log."""
        self.assertEqual(self.successResultOf(follower.status()), self.successResultOf(leader.status()))
        self.assertEqual(self.log(follower), self.log(leader))


class SeedTests(StoreTestCase):
    def test_seven_books(self) -> None:
        """A new catalog holds the report's seven books, ids 0 to 6, and an empty log."""
        catalog = self.store(CatalogStore)
        books = self.successResultOf(catalog.all_books())
        self.assertEqual([b["id"] for b in books], list(range(7)))
        self.assertEqual(
            books[6],
            {
                "id": 6,
                "title": "Living in the Pioneer Valley",
                "topic": "new",
                "price": 700.0,
                "quantity": 90,
            },
        )
        self.assertEqual([tuple(b.values()) for b in books], [tuple(row) for row in SEED_BOOKS])
        self.assertEqual(self.successResultOf(catalog.last_seq()), 0)
        self.assertEqual(self.log(catalog), [])

    def test_setup_twice_does_not_reseed(self) -> None:
        """Setting up an existing database keeps its data instead of adding the books again."""
        catalog = self.store(CatalogStore)
        self.successResultOf(catalog.buy(6, 10))
        self.successResultOf(catalog.setup())
        books = self.successResultOf(catalog.all_books())
        self.assertEqual(len(books), 7)
        self.assertEqual(books[6]["quantity"], 80)

    def test_book_and_search(self) -> None:
        """book() finds one book, search_page() a topic's books in id order; unknown ids are NotFound."""
        catalog = self.store(CatalogStore)
        books = self.successResultOf(catalog.all_books())
        self.assertEqual(catalog.book(1)["title"], "RPCs for Noobs.")
        self.assertEqual(
            self.successResultOf(catalog.search_page("new", Page())), BookPage(books[4:], 3, None)
        )
        self.assertEqual(self.successResultOf(catalog.search_page("cooking", Page())), BookPage([], 0, None))
        self.assertRaises(NotFound, catalog.book, 7)

    def test_same_seed_same_digest(self) -> None:
        """Two freshly seeded catalogs have equal digests."""
        self.assertEqual(
            self.successResultOf(self.store(CatalogStore).status()),
            self.successResultOf(self.store(CatalogStore).status()),
        )


class CatalogWriteTests(StoreTestCase):
    def setUp(self) -> None:
        self.catalog = self.store(CatalogStore)

    def quantity(self, book_id: int) -> int:
        return int(self.catalog.book(book_id)["quantity"])

    def test_buy_decrements(self) -> None:
        """buy takes copies from the stock and logs the book's resulting row under seq 1, and
        how many it took (so the log tells a purchase from a change of stock)."""
        seq, entry = self.successResultOf(self.catalog.buy(6, 3))
        self.assertEqual(seq, 1)
        self.assertEqual(entry, {"book": self.catalog.book(6), "bought": 3})
        self.assertEqual(entry["book"]["quantity"], 87)
        self.assertEqual(self.quantity(6), 87)
        self.assertEqual(self.log(self.catalog), [(1, entry)])

    def test_buy_the_last_copies(self) -> None:
        """Buying exactly the stock leaves zero."""
        self.successResultOf(self.catalog.buy(2, 8))
        self.assertEqual(self.quantity(2), 0)

    def test_buy_more_than_the_stock(self) -> None:
        """Asking for more than the stock is a 409 Conflict that changes nothing."""
        failure = self.failureResultOf(self.catalog.buy(2, 9), Conflict)
        self.assertEqual(failure.value.code, 409)
        self.assertIn("8 left, 9 asked", failure.value.message)
        self.assertEqual(self.quantity(2), 8)
        self.assertEqual(self.log(self.catalog), [])

    def test_buy_from_an_empty_stock(self) -> None:
        """Once sold out, the next buy conflicts."""
        self.successResultOf(self.catalog.buy(2, 8))
        self.failureResultOf(self.catalog.buy(2, 1), Conflict)
        self.assertEqual(self.quantity(2), 0)

    def test_buy_unknown_book(self) -> None:
        """Buying an unknown id is NotFound (404), not a Conflict."""
        failure = self.failureResultOf(self.catalog.buy(42, 1), NotFound)
        self.assertEqual(failure.value.code, 404)
        self.assertEqual(self.log(self.catalog), [])

    def test_failed_write_does_not_consume_a_sequence_number(self) -> None:
        """After failed writes, the next successful one still gets the next sequence number."""
        self.successResultOf(self.catalog.buy(0, 1))
        self.failureResultOf(self.catalog.buy(2, 100), Conflict)
        self.failureResultOf(self.catalog.set_price(42, 1.0), NotFound)
        self.failureResultOf(self.catalog.add_quantity(2, -100), Conflict)
        seq, _ = self.successResultOf(self.catalog.buy(0, 1))
        self.assertEqual(seq, 2)
        self.assertEqual([s for s, _ in self.log(self.catalog)], [1, 2])

    def test_set_price(self) -> None:
        """set_price changes only the price and logs the new row."""
        seq, entry = self.successResultOf(self.catalog.set_price(1, 19.99))
        self.assertEqual(seq, 1)
        self.assertEqual(entry["book"]["price"], 19.99)
        self.assertEqual(entry["book"]["quantity"], 60)
        self.assertEqual(self.catalog.book(1)["price"], 19.99)

    def test_set_price_unknown_book(self) -> None:
        """Setting the price of an unknown id is NotFound."""
        self.failureResultOf(self.catalog.set_price(42, 1.0), NotFound)

    def test_set_quantity(self) -> None:
        """set_quantity replaces the stock, to zero too."""
        self.successResultOf(self.catalog.set_quantity(3, 500))
        self.assertEqual(self.quantity(3), 500)
        self.successResultOf(self.catalog.set_quantity(3, 0))
        self.assertEqual(self.quantity(3), 0)
        self.failureResultOf(self.catalog.set_quantity(42, 1), NotFound)

    def test_add_quantity(self) -> None:
        """add_quantity adds a positive or negative delta, down to exactly zero."""
        _, entry = self.successResultOf(self.catalog.add_quantity(4, 10))
        self.assertEqual(entry["book"]["quantity"], 50)
        self.successResultOf(self.catalog.add_quantity(4, -50))
        self.assertEqual(self.quantity(4), 0)

    def test_add_quantity_below_zero(self) -> None:
        """A delta that would take the stock below zero is a Conflict that changes nothing."""
        failure = self.failureResultOf(self.catalog.add_quantity(4, -41), Conflict)
        self.assertEqual(failure.value.message, "not enough stock of book 4 to remove 41: 40 left")
        self.assertEqual(self.quantity(4), 40)
        self.failureResultOf(self.catalog.add_quantity(42, 1), NotFound)

    def test_add_quantity_above_the_exact_integer_range(self) -> None:
        """Stock stays an exact integer: a delta past MAX_STOCK is a Conflict, not a float."""
        self.successResultOf(self.catalog.set_quantity(5, MAX_STOCK))
        failure = self.failureResultOf(self.catalog.add_quantity(5, 1), Conflict)
        # In the user's words: no 2**53 (a limit of the number format, not of the bookstore).
        self.assertEqual(failure.value.message, "that would make the stock of book 5 too large")
        self.assertEqual(self.quantity(5), MAX_STOCK)
        self.assertIsInstance(self.quantity(5), int)

    def test_every_write_is_logged_in_order(self) -> None:
        """Each write appends its resulting row under consecutive sequence numbers 1, 2, 3, ..."""
        self.successResultOf(self.catalog.buy(0, 5))
        self.successResultOf(self.catalog.set_price(1, 1.5))
        self.successResultOf(self.catalog.set_quantity(2, 3))
        self.successResultOf(self.catalog.add_quantity(0, 2))
        log = self.log(self.catalog)
        self.assertEqual([seq for seq, _ in log], [1, 2, 3, 4])
        self.assertEqual([entry["book"]["id"] for _, entry in log], [0, 1, 2, 0])
        self.assertEqual([entry["book"]["quantity"] for _, entry in log], [80, 60, 3, 82])
        self.assertEqual(self.successResultOf(self.catalog.last_seq()), 4)
        self.assertEqual(self.successResultOf(self.catalog.status())["last_seq"], 4)

    def test_entries_after_and_limit(self) -> None:
        """entries_after(seq, limit) returns at most ``limit`` entries that follow ``seq``."""
        for _ in range(5):
            self.successResultOf(self.catalog.buy(0, 1))
        self.assertEqual([s for s, _ in self.successResultOf(self.catalog.entries_after(2))], [3, 4, 5])
        self.assertEqual([s for s, _ in self.successResultOf(self.catalog.entries_after(1, 2))], [2, 3])
        self.assertEqual(self.successResultOf(self.catalog.entries_after(5)), [])


class ReplicationTests(StoreTestCase):
    """A follower that applies the leader's log ends with the same data."""

    def setUp(self) -> None:
        self.leader = self.store(CatalogStore)
        self.follower = self.store(CatalogStore)

    def write_some(self) -> None:
        self.successResultOf(self.leader.buy(6, 2))
        self.successResultOf(self.leader.set_price(3, 9.5))
        self.successResultOf(self.leader.add_quantity(2, -8))
        self.successResultOf(self.leader.set_quantity(0, 7))

    def test_follower_converges(self) -> None:
        """Applying entries_after(0) gives the follower the leader's last_seq and digest."""
        self.write_some()
        self.assertNotEqual(
            self.successResultOf(self.follower.status()), self.successResultOf(self.leader.status())
        )
        self.assertEqual(self.successResultOf(self.follower.apply(self.log(self.leader))), 4)
        self.assertInSync(self.leader, self.follower)
        self.assertEqual(
            self.successResultOf(self.follower.all_books()), self.successResultOf(self.leader.all_books())
        )

    def test_apply_in_several_batches(self) -> None:
        """Entries applied in consecutive batches, each out of order inside, give the same result."""
        self.write_some()
        log = self.log(self.leader)
        self.assertEqual(self.successResultOf(self.follower.apply([log[1], log[0]])), 2)
        self.assertEqual(self.successResultOf(self.follower.apply(list(reversed(log[2:])))), 4)
        self.assertInSync(self.leader, self.follower)

    def test_apply_is_idempotent(self) -> None:
        """Re-applying already-applied entries skips them: nothing changes, last_seq is returned."""
        self.write_some()
        log = self.log(self.leader)
        self.successResultOf(self.follower.apply(log))
        before = self.successResultOf(self.follower.status())
        self.assertEqual(self.successResultOf(self.follower.apply(log)), 4)
        self.assertEqual(self.successResultOf(self.follower.apply(log[:2])), 4)
        self.assertEqual(self.successResultOf(self.follower.status()), before)
        self.assertInSync(self.leader, self.follower)

    def test_overlapping_batch(self) -> None:
        """A batch that repeats some applied entries and adds new ones applies only the new ones."""
        self.write_some()
        log = self.log(self.leader)
        self.successResultOf(self.follower.apply(log[:2]))
        self.assertEqual(self.successResultOf(self.follower.apply(log[1:])), 4)
        self.assertInSync(self.leader, self.follower)

    def test_gap_is_refused(self) -> None:
        """Entries that skip a sequence number raise SequenceGap with the follower's last_seq."""
        self.write_some()
        log = self.log(self.leader)
        self.successResultOf(self.follower.apply(log[:1]))
        failure = self.failureResultOf(self.follower.apply(log[2:]), SequenceGap)
        self.assertEqual(failure.value.last_seq, 1)
        self.assertEqual(failure.value.code, 409)
        self.assertEqual(failure.value.message, "expected sequence number 2, got 3")
        self.assertEqual(self.successResultOf(self.follower.last_seq()), 1)

    def test_gap_inside_a_batch_applies_nothing(self) -> None:
        """A batch with a hole is refused whole, and the reported last_seq is where the follower really is."""
        self.write_some()
        log = self.log(self.leader)
        before = self.successResultOf(self.follower.status())
        failure = self.failureResultOf(self.follower.apply([log[0], log[1], log[3]]), SequenceGap)
        self.assertEqual(self.successResultOf(self.follower.status()), before)
        self.assertEqual(failure.value.last_seq, self.successResultOf(self.follower.last_seq()))
        self.assertEqual(failure.value.last_seq, 0)

    def test_catch_up_after_a_gap(self) -> None:
        """After a refused gap, sending from the reported last_seq brings the follower up to date."""
        self.write_some()
        log = self.log(self.leader)
        failure = self.failureResultOf(self.follower.apply(log[2:]), SequenceGap)
        missing = self.successResultOf(self.leader.entries_after(failure.value.last_seq))
        self.successResultOf(self.follower.apply(missing))
        self.assertInSync(self.leader, self.follower)

    def test_digest_differs_when_data_differs(self) -> None:
        """A single different value changes the digest; the same values give it back."""
        digest = self.successResultOf(self.leader.status())["digest"]
        self.successResultOf(self.leader.set_price(5, 100.01))
        changed = self.successResultOf(self.leader.status())["digest"]
        self.assertNotEqual(changed, digest)
        self.successResultOf(self.leader.set_price(5, 100.0))
        self.assertEqual(self.successResultOf(self.leader.status())["digest"], digest)
        self.assertEqual(self.successResultOf(self.leader.status())["last_seq"], 2)


class OrderStoreTests(StoreTestCase):
    def setUp(self) -> None:
        self.orders = self.store(OrderStore)

    def record(self, store: OrderStore, book_id: int, quantity: int = 1) -> tuple[int, Entry]:
        return self.successResultOf(store.record(book_id, f"book {book_id}", 10.0 * book_id, quantity))

    def test_starts_empty(self) -> None:
        """A new order store has no orders."""
        self.assertEqual(self.successResultOf(self.orders.all_orders()), [])
        self.failureResultOf(self.orders.order(1), NotFound)

    def test_order_ids_are_sequence_numbers(self) -> None:
        """Orders get ids 1, 2, 3: each its own sequence number."""
        results = [self.record(self.orders, book) for book in (6, 2, 6)]
        self.assertEqual([seq for seq, _ in results], [1, 2, 3])
        self.assertEqual([entry["order"]["order_id"] for _, entry in results], [1, 2, 3])
        self.assertEqual([o["order_id"] for o in self.successResultOf(self.orders.all_orders())], [1, 2, 3])

    def test_order_contents(self) -> None:
        """An order stores what was bought, at which price and how many; its log entry also
        says up to where every take had its order (``bazar.order.orphans``)."""
        _, entry = self.successResultOf(
            self.orders.record(6, "Living in the Pioneer Valley", 700.0, 2, None, 41)
        )
        expected: dict[str, Any] = {
            "order_id": 1,
            "book_id": 6,
            "title": "Living in the Pioneer Valley",
            "price": 700.0,
            "quantity": 2,
        }
        self.assertEqual(entry, {"order": expected, "takes_resolved": 41})
        self.assertEqual(self.successResultOf(self.orders.order(1)), expected)
        self.assertEqual(self.successResultOf(self.orders.takes_resolved()), 41)

    def test_follower_gets_the_same_orders(self) -> None:
        """A follower applying the order log has the same orders, ids and digest."""
        for book in (6, 2, 6):
            self.record(self.orders, book)
        follower = self.store(OrderStore)
        self.assertEqual(self.successResultOf(follower.apply(self.log(self.orders))), 3)
        self.assertEqual(
            self.successResultOf(follower.all_orders()), self.successResultOf(self.orders.all_orders())
        )
        self.assertInSync(self.orders, follower)

    def test_follower_is_idempotent_and_refuses_gaps(self) -> None:
        """Re-sent orders are not stored twice; a skipped order is a SequenceGap."""
        for book in (1, 2, 3):
            self.record(self.orders, book)
        log = self.log(self.orders)
        follower = self.store(OrderStore)
        self.successResultOf(follower.apply(log[:2]))
        self.assertEqual(self.successResultOf(follower.apply(log)), 3)
        self.assertEqual(len(self.successResultOf(follower.all_orders())), 3)
        gap = self.store(OrderStore)
        failure = self.failureResultOf(gap.apply(log[1:]), SequenceGap)
        self.assertEqual(failure.value.last_seq, 0)

    def test_digest_differs_when_orders_differ(self) -> None:
        """Stores with different orders have different digests."""
        other = self.store(OrderStore)
        self.record(self.orders, 1)
        self.record(other, 2)
        self.assertNotEqual(
            self.successResultOf(self.orders.status())["digest"],
            self.successResultOf(other.status())["digest"],
        )


class PoolRunnerTests(SynchronousTestCase):
    """Point reads on the reactor thread: a read-only connection that sees every commit."""

    def test_point_reads_see_commits_and_cannot_write(self) -> None:
        path = Path(self.mktemp()) / "catalog.sqlite"
        store = open_store(CatalogStore, path)
        self.addCleanup(store.close)
        runner = store.runner
        assert isinstance(runner, PoolRunner)
        self.assertEqual(store.book(2)["quantity"], 8)
        with sqlite3.connect(path) as writer:  # as the pool's connection would, on its thread
            writer.execute("UPDATE books SET quantity = 7 WHERE id = 2")
        writer.close()
        self.assertEqual(store.book(2)["quantity"], 7)
        self.assertRaises(NotFound, store.book, 99)
        self.assertRaises(
            sqlite3.OperationalError, runner.read_now, lambda txn: txn.execute("DELETE FROM books")
        )

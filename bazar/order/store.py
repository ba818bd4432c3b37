"""The order replicas' SQLite data: one row per purchase.

An order's id is the sequence number the order sequencer gave its log entry, so ids are
unique across the cluster by construction, and every replica stores the same row.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred

from bazar.errors import NotFound
from bazar.storage import Cursor, Entry, ReplicatedStore, batches

Order = dict[str, Any]

_COLUMNS = "id, book_id, title, price, quantity"
KEYS_PER_QUERY = 500  # bound parameters per statement: well under SQLite's limit (999 before 3.32)


def _order(row: tuple[Any, ...]) -> Order:
    return {"order_id": row[0], "book_id": row[1], "title": row[2], "price": row[3], "quantity": row[4]}


class OrderStore(ReplicatedStore):
    table = "orders"
    columns = _COLUMNS
    schema = """
        CREATE TABLE IF NOT EXISTS orders (
            id INTEGER PRIMARY KEY,
            book_id INTEGER NOT NULL,
            title TEXT NOT NULL,
            price REAL NOT NULL,
            quantity INTEGER NOT NULL
        )
    """

    def record(
        self,
        book_id: int,
        title: str,
        price: float,
        quantity: int,
        key: str | None = None,
        takes_resolved: int = 0,
    ) -> Deferred[tuple[int, Entry]]:
        """Sequence a new order; its id is its sequence number. With a ``key``, a retry gets
        the original order instead of a second one. ``takes_resolved``: the catalog sequence
        number up to which every keyed take has its order (logged with the entry, not stored
        in the order: see ``bazar.order.orphans``)."""
        idempotency = (key, f"purchase {book_id} x{quantity}") if key is not None else None
        return self.sequence(
            self._record, book_id, title, price, quantity, takes_resolved, idempotency=idempotency
        )

    def _record(
        self, txn: Cursor, book_id: int, title: str, price: float, quantity: int, takes_resolved: int
    ) -> Entry:
        order_id = self._last_seq(txn) + 1
        order = {
            "order_id": order_id,
            "book_id": book_id,
            "title": title,
            "price": price,
            "quantity": quantity,
        }
        self._apply_entry(txn, {"order": order})
        return {"order": order, "takes_resolved": takes_resolved}

    def recorded_keys(self, keys: list[str]) -> Deferred[set[str]]:
        """Which of ``keys`` have an order here."""
        return self.runner.runInteraction(self._recorded_keys, keys)

    @staticmethod
    def _recorded_keys(txn: Cursor, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for batch in batches(keys, KEYS_PER_QUERY):
            marks = ",".join("?" * len(batch))
            txn.execute(f"SELECT key FROM idempotency WHERE key IN ({marks})", batch)
            found.update(row[0] for row in txn.fetchall())
        return found

    def takes_resolved(self) -> Deferred[int]:
        """The ``takes_resolved`` of the newest order here (0 if none carries one)."""
        return self.runner.runInteraction(self._takes_resolved)

    @staticmethod
    def _takes_resolved(txn: Cursor) -> int:
        txn.execute("SELECT entry FROM log ORDER BY seq DESC LIMIT 1")
        row = txn.fetchone()
        return 0 if row is None else int(json.loads(row[0]).get("takes_resolved", 0))

    def _apply_entry(self, txn: Cursor, entry: Entry) -> None:
        o = entry["order"]
        row = (o["order_id"], o["book_id"], o["title"], o["price"], o["quantity"])
        txn.execute(f"INSERT INTO orders ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)", row)  # never replaces one
        self._row_changed(txn, None, self._row(txn, o["order_id"]))

    def all_orders(self) -> Deferred[list[Order]]:
        return self.runner.runInteraction(self._all_orders)

    def _all_orders(self, txn: Cursor) -> list[Order]:
        return [_order(r) for r in self._scan(txn)]

    def order(self, order_id: int) -> Deferred[Order]:
        return self.runner.runInteraction(self._order_by_id, order_id)

    @staticmethod
    def _order_by_id(txn: Cursor, order_id: int) -> Order:
        txn.execute(f"SELECT {_COLUMNS} FROM orders WHERE id = ?", (order_id,))
        row = txn.fetchone()
        if row is None:
            raise NotFound(f"no order with id {order_id}")
        return _order(row)

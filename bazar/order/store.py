"""The order replicas' SQLite data: one row per purchase.

An order's id is the sequence number the order sequencer gave its log entry, so ids are
unique across the cluster by construction, and every replica stores the same row.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from bazar.errors import NotFound
from bazar.storage import Cursor, Entry, ReplicatedStore

Order = dict[str, Any]

_COLUMNS = "id, book_id, title, price, quantity"


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
        self, book_id: int, title: str, price: float, quantity: int, key: str | None = None
    ) -> Deferred[tuple[int, Entry]]:
        """Sequence a new order; its id is its sequence number. With a ``key``, a retry gets
        the original order instead of a second one."""
        idempotency = (key, f"purchase {book_id} x{quantity}") if key is not None else None
        return self.sequence(self._record, book_id, title, price, quantity, idempotency=idempotency)

    def _record(self, txn: Cursor, book_id: int, title: str, price: float, quantity: int) -> Entry:
        order_id = self._last_seq(txn) + 1
        order = {
            "order_id": order_id,
            "book_id": book_id,
            "title": title,
            "price": price,
            "quantity": quantity,
        }
        self._apply_entry(txn, {"order": order})
        return {"order": order}

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

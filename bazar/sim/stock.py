"""What must hold after any fault, checked from the replicas' own data by tests of every kind.

Stock is conserved. For every book, on every catalog replica:

    initial stock + stock changes - the recorded orders' quantities = current stock

The stock changes are what the catalog's log changed the stock by, other than purchases'
takes (entries marked ``bought``); the recorded orders are an order replica's. A take
without an order (the stock gone and no order saying where), an order without a take or
one recorded twice breaks it. Beyond the sums, every keyed take has exactly one order with
the same key, book and quantity, and every keyed order a take.

``stock_problems`` takes the data (``MemCluster.stock_problems``, the simulator (``bazar.sim``) and
``tests.integration.api.Api.stock_problems`` read it) and lists what is wrong: a test
asserts the list is empty.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

Log = list[tuple[int, dict[str, Any]]]  # a replica's log: (sequence number, entry), in order


def _key(entry: dict[str, Any]) -> str | None:
    idempotency = entry.get("idempotency")
    return None if idempotency is None else idempotency["key"]


def stock_problems(
    initial: Mapping[int, int], catalog_log: Log, current: Mapping[int, int], order_log: Log
) -> list[str]:
    """What breaks the conservation of stock, given each book's ``initial`` stock, one catalog
    replica's log and ``current`` stock, and one order replica's log (empty: none)."""
    problems: list[str] = []
    stock = dict(initial)
    changes: Counter[int] = Counter()
    takes: dict[str, tuple[int, int]] = {}  # key -> (book, quantity)
    for seq, entry in catalog_log:
        book = entry.get("book")
        if book is None:
            continue
        delta = book["quantity"] - stock.get(book["id"], 0)
        stock[book["id"]] = book["quantity"]
        if "bought" not in entry:
            changes[book["id"]] += delta
            continue
        if delta != -entry["bought"]:
            problems.append(f"catalog seq {seq}: bought {entry['bought']} of book {book['id']}, Δ {delta}")
        key = _key(entry)
        if key is not None:
            takes[key] = (book["id"], entry["bought"])
    ordered: Counter[int] = Counter()
    orders: dict[str, tuple[int, int]] = {}
    for seq, entry in order_log:
        order = entry["order"]
        ordered[order["book_id"]] += order["quantity"]
        key = _key(entry)
        if key is not None:
            if key in orders:
                problems.append(f"order seq {seq}: key {key} has an order already")
            orders[key] = (order["book_id"], order["quantity"])
    for book_id in sorted(set(initial) | set(current) | set(stock)):
        now, logged = current.get(book_id), stock.get(book_id)
        if logged != now:
            problems.append(f"book {book_id}: the catalog's log ends at {logged}, its table at {now}")
        was, changed, gone = initial.get(book_id, 0), changes[book_id], ordered[book_id]
        if was + changed - gone != now:
            problems.append(
                f"book {book_id}: {was} initial + {changed} changed - {gone} ordered = "
                f"{was + changed - gone}, but {now} in stock"
            )
    for key, take in sorted(takes.items()):
        if orders.get(key) != take:
            problems.append(f"take {key} (book, quantity {take}) has order {orders.get(key)}")
    for key in sorted(orders.keys() - takes.keys()):
        problems.append(f"order {key} (book, quantity {orders[key]}) has no take")
    return problems

"""What must hold after every simulated run, checked from the history and the replicas' disks.

* Per-book linearizable prices. Every price written is unique, and the catalog's log orders
  the writes (its sequence numbers), so each read names the write it saw. A read is wrong if
  it saw a price no committed write wrote (a write that was lost, or never made), a write
  older than one acknowledged before the read began, or a write older than one an earlier
  read (ended before it began) saw. Acknowledged writes must be in the log in the order
  they were acknowledged in (one acknowledged before another began comes first).
* No acknowledged write lost: every acknowledged price is in every catalog replica's log;
  every acknowledged order (and its key) is on every order replica, exactly once, and a
  keyed purchase answered twice was answered with the same order.
* Stock conservation on every catalog replica with every order replica's orders
  (``bazar.sim.stock``).
* Digests converge: the replicas of a role end with the same last sequence number and digest.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bazar.catalog.store import seed_books
from bazar.sim.cluster import SimCluster
from bazar.sim.stock import Log, stock_problems
from bazar.sim.workload import Op


def price_versions(log: Log, books: int) -> dict[tuple[int, float], int]:
    """(book, price) -> the sequence number of the write that set it (0: the seed's)."""
    versions: dict[tuple[int, float], int] = {}
    for book in seed_books(books):
        versions[book[0], float(book[3])] = 0
    current = {book[0]: float(book[3]) for book in seed_books(books)}
    for seq, entry in log:
        row = entry.get("book")
        if row is None:
            continue
        price = float(row["price"])
        if current.get(row["id"]) != price:
            versions.setdefault((row["id"], price), seq)
            current[row["id"]] = price
    return versions


def linearizability_problems(ops: list[Op], versions: dict[tuple[int, float], int]) -> list[str]:
    problems: list[str] = []
    writes = sorted((op for op in ops if op.kind == "price" and op.ok), key=lambda op: op.end or 0)
    for op in writes:
        if (op.book, op.value) not in versions:
            problems.append(f"acknowledged write lost: {op.describe()}")
    by_book: dict[int, list[Op]] = {}  # each book's acknowledged writes, in the order they ended
    for w in writes:
        by_book.setdefault(w.book, []).append(w)  # type: ignore[arg-type]
    for a in writes:
        for b in by_book[a.book]:  # type: ignore[index]
            if a.end is not None and a.end < b.start:
                sa, sb = versions.get((a.book, a.value)), versions.get((b.book, b.value))  # type: ignore[arg-type]
                if sa is not None and sb is not None and sa > sb:
                    problems.append(f"writes out of order: {a.describe()} came after {b.describe()}")
    reads: list[tuple[Op, int, int]] = []  # (read, book, version seen)
    for op in ops:
        if not op.ok or not op.seen:
            continue
        for book in op.seen:
            if "price" not in book:
                continue
            version = versions.get((book["id"], float(book["price"])))
            if version is None:
                problems.append(
                    f"read a price never committed: book {book['id']} at {book['price']} in {op.describe()}"
                )
                continue
            reads.append((op, book["id"], version))
    for read, book_id, seen in reads:
        for w in by_book.get(book_id, []):
            version = versions.get((book_id, w.value))
            if w.end is not None and w.end < read.start and version is not None and version > seen:
                problems.append(
                    f"stale read: {read.describe()} saw write {seen} of book {book_id},"
                    f" after {w.describe()} (write {version}) was acknowledged"
                )
                break
    reads.sort(key=lambda r: r[0].start)
    reads_of: dict[int, list[tuple[Op, int]]] = {}  # each book's reads (and what they saw), by start
    for read, book_id, seen in reads:
        reads_of.setdefault(book_id, []).append((read, seen))
    for read, book_id, seen in reads:
        for other, other_seen in reads_of[book_id]:
            if other.start >= read.start:
                break  # the rest began after it: none ended before it began
            if other.end is not None and other.end < read.start and other_seen > seen:
                problems.append(
                    f"read went back in time: {read.describe()} saw write {seen} of book {book_id},"
                    f" after {other.describe()} saw write {other_seen}"
                )
                break
    return problems


def order_problems(ops: list[Op], order_logs: dict[str, Log]) -> list[str]:
    problems: list[str] = []
    answered: dict[str, Any] = {}
    for op in ops:
        if not op.kind.startswith("buy") or not op.ok:
            continue
        order = op.value or {}
        key = str(order.get("idempotency_key") or op.key)
        if key in answered and answered[key] != order.get("order_id"):
            problems.append(f"key {key} answered with orders {answered[key]} and {order.get('order_id')}")
        answered[key] = order.get("order_id")
    for name, log in sorted(order_logs.items()):
        keys: Counter[str] = Counter()
        ids: dict[str, int] = {}
        for _, entry in log:
            logged = (entry.get("idempotency") or {}).get("key")
            if logged is not None:
                keys[logged] += 1
                ids[logged] = entry["order"]["order_id"]
        for key, order_id in sorted(answered.items()):
            if keys[key] != 1:
                problems.append(
                    f"{name}: acknowledged order {order_id} (key {key}) is there {keys[key]} times"
                )
            elif ids[key] != order_id:
                problems.append(f"{name}: key {key} has order {ids[key]}, the client was told {order_id}")
    return problems


def disk_problems(cluster: SimCluster, ops: list[Op]) -> list[str]:
    """Everything checked on the replicas' own data, at the end of a run."""
    problems: list[str] = []
    config = cluster.config
    catalog = [r.name for r in config.catalog]
    order = [r.name for r in config.order]
    for names in (catalog, order):
        states = {name: cluster.status(name) for name in names}
        if len(set(states.values())) > 1:
            shown = ", ".join(f"{n}: seq {s} digest {d[:8]}" for n, (s, d) in states.items())
            problems.append(f"digests differ: {shown}")
    logs = {name: cluster.log(name) for name in catalog}
    for name in catalog:
        versions = price_versions(logs[name], config.books)
        for problem in linearizability_problems(ops, versions):
            problems.append(f"{name}: {problem}")
    order_logs = {name: cluster.orders(name) for name in order}
    problems += order_problems(ops, order_logs)
    initial = {book[0]: book[4] for book in seed_books(config.books)}
    for name in catalog:
        current = {book_id: book["quantity"] for book_id, book in cluster.books(name).items()}
        for order_name in order:
            found = stock_problems(initial, logs[name], current, order_logs[order_name])
            problems += [f"{name} with {order_name}'s orders: {p}" for p in found]
    return problems

"""``python -m bazar.verify FILE.sqlite ...``: check each replica's kept digest against its rows.

The digest a replica reports is kept up to date write by write (see ``bazar.storage``), so
reading it costs nothing; this sums it from scratch, once, to show that the kept one is
true. It opens each file read-only, so it can run beside the live replica (WAL lets it read
a consistent snapshot while writes go on). Exit status 1 if any file disagrees.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from bazar.catalog.store import CatalogStore
from bazar.order.store import OrderStore
from bazar.storage import ReplicatedStore

STORES: tuple[type[ReplicatedStore], ...] = (CatalogStore, OrderStore)


def check(path: Path) -> tuple[bool, str]:
    """Whether ``path``'s kept digest is its true one, and a line saying so."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        return False, f"{path}: {e}"
    try:
        tables = {
            name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        store = next((s for s in STORES if s.table in tables), None)
        if store is None:
            return False, f"{path}: no books or orders table"
        connection.execute("BEGIN")  # one snapshot for both reads
        kept, true = store.check_digest(connection.cursor())
    except sqlite3.Error as e:
        return False, f"{path}: {e}"
    finally:
        connection.close()
    if kept == true:
        return True, f"{path}: {store.table}, digest {true}: kept = recomputed"
    return False, f"{path}: {store.table}, kept digest {kept} but the rows sum to {true}"


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m bazar.verify FILE.sqlite ...", file=sys.stderr)
        return 2
    ok = True
    for name in argv:
        good, line = check(Path(name))
        ok = ok and good
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

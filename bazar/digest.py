"""The digest that tells whether two replicas hold the same data.

It is kept up to date rather than computed on demand (hashing a million rows per
``status()`` takes seconds): it is the sum, modulo 2**256, of the SHA-256 of every row,
changed in the same transaction as the row (minus the old row's hash, plus the new one's;
see ``bazar.storage.ReplicatedStore``). Equal data gives equal sums whatever order the rows
were written in; different data gives a different sum except by a 2**-256 accident.
"""

from __future__ import annotations

import hashlib
from typing import Any

Row = tuple[Any, ...]  # one data row's column values, in the table's column order

DIGEST_MODULUS = 2**256


def row_hash(row: Row) -> int:
    """SHA-256 of one row as an integer, over an encoding that is unambiguous and the same on
    every Python version: a string as its length and its text, a number as its repr."""
    text = "\x1f".join([f"{len(v)}:{v}" if isinstance(v, str) else repr(v) for v in row])
    return int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")


def digest_hex(total: int) -> str:
    return f"{total % DIGEST_MODULUS:064x}"

"""A recorded history of operations, and a check that no read went back in time.

Tests that drive a cluster under load (kills, failovers) record every write and read with the
monotonic times it started and was answered. ``stale_reads`` then finds each read that
returned a value older than a write that had been acknowledged before the read *started*:
exactly what "no acknowledged write is followed by a stale read" forbids. Reads that overlap a
write may see either value. Written values must be unique per key, so a value names its write.
An operation may carry a ``note`` (e.g. whether the cache answered), shown when it is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Operation:
    kind: str  # "write" or "read"
    key: str
    value: Any
    start: float
    end: float
    note: Any = None  # anything worth showing with it when it is reported; not checked


@dataclass
class History:
    operations: list[Operation] = field(default_factory=list)

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def write(self, key: str, value: Any, start: float, end: float | None = None, note: Any = None) -> None:
        """An acknowledged write of ``value`` to ``key`` (unacknowledged ones are not recorded)."""
        self.operations.append(
            Operation("write", key, value, start, self.now() if end is None else end, note)
        )

    def read(self, key: str, value: Any, start: float, end: float | None = None, note: Any = None) -> None:
        self.operations.append(Operation("read", key, value, start, self.now() if end is None else end, note))

    def describe(self, stale: list[tuple[Operation, Operation]]) -> list[str]:
        """Stale reads, readably: what was read when, and which acknowledged write it missed."""
        return [
            f"read {r.key}={r.value!r} at {r.start:.3f}-{r.end:.3f}{_note(r)},"
            f" after {w.key}={w.value!r} was acknowledged at {w.end:.3f}"
            for r, w in stale
        ]

    def of(self, kind: str, key: str | None = None) -> list[Operation]:
        """The recorded operations of one kind ("write" or "read"), of one key or all, in the
        order they were recorded."""
        return [op for op in self.operations if op.kind == kind and (key is None or op.key == key)]

    def count(self, kind: str) -> int:
        return len(self.of(kind))

    def reads_after(self, value: Any) -> list[Operation]:
        """The reads that began after the (first) write of ``value`` was acknowledged."""
        acked = min(w.end for w in self.of("write") if w.value == value)
        return [r for r in self.of("read") if r.start > acked]

    def assert_no_stale_reads(self) -> None:
        stale = self.stale_reads()
        assert not stale, f"{len(stale)} reads older than an acknowledged write: {self.describe(stale)}"

    def stale_reads(self) -> list[tuple[Operation, Operation]]:
        """Each read that returned a value older than the newest write acknowledged before it
        began, with that write. Writes are ordered by when they were acknowledged."""
        writes: dict[str, list[Operation]] = {}
        for op in sorted((op for op in self.operations if op.kind == "write"), key=lambda op: op.end):
            writes.setdefault(op.key, []).append(op)
        stale = []
        for read in (op for op in self.operations if op.kind == "read"):
            acknowledged = [w for w in writes.get(read.key, []) if w.end < read.start]
            if not acknowledged:
                continue
            newest = acknowledged[-1]
            order = [w.value for w in writes[read.key]]
            version = order.index(read.value) if read.value in order else -1  # -1: the initial value
            if version < order.index(newest.value):
                stale.append((read, newest))
        return stale


def _note(op: Operation) -> str:
    return "" if op.note is None else f" ({op.note})"

"""Round-robin choice among replicas: each call returns the next one in turn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class RoundRobin(Generic[T]):
    def __init__(self, items: Sequence[T]) -> None:
        if not items:
            raise ValueError("round robin needs at least one item")
        self._items = tuple(items)
        self._next = 0

    def __len__(self) -> int:
        return len(self._items)

    def next(self) -> T:
        item = self._items[self._next]
        self._next = (self._next + 1) % len(self._items)
        return item

    def rotation(self) -> list[T]:
        """Every item once, starting with the next in turn: for retrying a failed call elsewhere."""
        first = self._next
        self.next()
        return [self._items[(first + i) % len(self._items)] for i in range(len(self._items))]

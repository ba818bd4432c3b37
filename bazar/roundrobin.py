"""Round-robin choice among replicas: each call returns the next one in turn; and for writes,
the sequencer first, then the others in turn (``SequencerFirst``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class RoundRobin(Generic[T]):
    def __init__(self, items: Sequence[T]) -> None:
        if not items:
            raise ValueError("round robin needs at least one item")
        self._items = tuple(items)
        self._next = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> tuple[T, ...]:
        return self._items

    def next(self) -> T:
        item = self._items[self._next]
        self._next = (self._next + 1) % len(self._items)
        return item

    def rotation(self) -> list[T]:
        """Every item once, starting with the next in turn: for retrying a failed call elsewhere."""
        first = self._next
        self.next()
        return [self._items[(first + i) % len(self._items)] for i in range(len(self._items))]


class Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


class SequencerFirst(RoundRobin[N]):
    """Where a write goes: the role's sequencer first (any other replica would only forward
    it there, one hop more), then the others in turn, for a retry elsewhere.

    The sequencer is the one named to ``order``, else the one last ``heard`` of; none known,
    it is plain round robin. A replica that ``failed`` is asked last next time: it is no
    longer taken for the sequencer, and the turn moves on past it. Reads use the same turns
    (``rotation``), so reads and retried writes spread over the same replicas.
    """

    def __init__(self, items: Sequence[N]) -> None:
        super().__init__(items)
        self.sequencer: str | None = None  # as last heard of

    def heard(self, name: str | None) -> None:
        """``name`` sequences this role's writes (as an answer said); one not listed is no one."""
        self.sequencer = name if any(item.name == name for item in self._items) else None

    def failed(self, item: N) -> None:
        if item.name == self.sequencer:
            self.sequencer = None
        self._next = (self._items.index(item) + 1) % len(self._items)

    def order(self, sequencer: str | None = None) -> list[N]:
        """Every item once: ``sequencer`` (or the one last heard of) first, then the others
        in turn; uses up one turn, as ``rotation`` does."""
        name = sequencer if sequencer is not None else self.sequencer
        rotation = self.rotation()
        return [r for r in rotation if r.name == name] + [r for r in rotation if r.name != name]

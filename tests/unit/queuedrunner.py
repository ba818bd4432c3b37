"""A store runner that answers later, as adbapi's one-connection pool does in production.

``InlineRunner`` runs each transaction the moment it is submitted, so no write ever arrives
while another commits and the group commit (``bazar.group_commit``) never forms a batch.
``QueuedRunner`` keeps the transactions in submission order until the test runs the next
(``step``), or, given a clock, until the end of the turn (``Clock.advance(0)``, as
``tests.unit.memcluster`` turns it), unless ``paused``. It counts the transactions that
changed the database (``written``): each is one SQLite commit, one fsync in production.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock

from bazar.runners import InlineRunner

T = TypeVar("T")


class QueuedRunner(InlineRunner):
    def __init__(self, clock: Clock | None = None, path: str = ":memory:") -> None:
        super().__init__(path)
        self.clock = clock
        self.waiting: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []
        self.written = 0
        self.paused = False
        self._turn: IDelayedCall | None = None

    def runInteraction(self, interaction: Callable[..., T], *args: Any) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        self.waiting.append((interaction, args, d))
        self._schedule()
        return d

    def step(self) -> None:
        """Run the next transaction and hand its outcome back."""
        interaction, args, d = self.waiting.pop(0)
        before = self._connection.total_changes
        outcome = super().runInteraction(interaction, *args)
        if self._connection.total_changes != before:
            self.written += 1
        outcome.chainDeferred(d)
        self._schedule()

    def run_all(self) -> None:
        while self.waiting:
            self.step()

    def resume(self) -> None:
        self.paused = False
        self._schedule()

    def _schedule(self) -> None:
        if self.clock is not None and self.waiting and not self.paused and self._turn is None:
            self._turn = self.clock.callLater(0, self._at_turn_end)

    def _at_turn_end(self) -> None:
        self._turn = None
        if self.waiting and not self.paused:
            self.step()

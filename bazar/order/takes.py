"""Purchases' takes that arrive while one call to the catalog is under way go in the next call.

A purchase first has the catalog sequencer take its stock, then records its order. Under
load, every purchase making its own call costs the order sequencer and the catalog sequencer
an HTTP (or channel) round trip each, and the catalog a transaction each. ``TakeBatcher``
keeps one call under way: the takes that queue meanwhile go together in the next one
(``BUYS_PATH``, at most ``MAX_BUYS``), which the catalog runs as one batch and answers take by
take. A lone take goes at once, on its own route (``BUY_ROUTE``), as it always did.

Each take carries its purchase's idempotency key, so a batch behaves as its takes would one
by one: a retried take gets the original answer, and a take whose order never gets recorded
(the order sequencer dies between the two) is found by its key (``bazar.order.orphans``).
The answers are handed out inside ``deliver_within`` (the order store's
``GroupCommit.together``), so the orders the purchases then record share one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from bazar.errors import ReplicaError
from bazar.metrics import Sizes
from bazar.protocol.messages import MAX_BUYS, Buys, Purchase

Book = dict[str, Any]


class TakeBatcher:
    """``take(book, body)``: the book as the take left it (a ReplicaError for a refused take)."""

    def __init__(
        self,
        take_one: Callable[[int, dict[str, Any]], Deferred[Book]],
        take_many: Callable[[dict[str, Any]], Deferred[dict[str, Any]]],
        deliver_within: Callable[[], AbstractContextManager[Any]],
        max_takes: int = MAX_BUYS,
    ) -> None:
        """``take_one(book, body)``: one take's call, answered with the book; ``take_many(body)``:
        a ``Buys`` call, answered with ``{"results": [...]}``."""
        self.take_one = take_one
        self.take_many = take_many
        self.deliver_within = deliver_within
        self.max_takes = max_takes
        self.sizes = Sizes()  # takes per call made (``bazar_take_batch_takes`` on /metrics)
        self._queue: list[tuple[int, dict[str, Any], Deferred[Book]]] = []
        self._calling = False

    @property
    def calls(self) -> int:
        """Calls made to the catalog."""
        return self.sizes.count

    def take(self, book: int, body: dict[str, Any]) -> Deferred[Book]:
        d: Deferred[Book] = Deferred()
        self._queue.append((book, body, d))
        if not self._calling:
            self._next()
        return d

    def _next(self) -> None:
        batch = self._queue[: self.max_takes]
        if not batch:
            self._calling = False
            return
        self._calling = True
        del self._queue[: len(batch)]
        self.sizes.record(len(batch))
        if len(batch) == 1:
            book, body, _ = batch[0]
            call: Deferred[Any] = self.take_one(book, body).addCallback(lambda found: [{"book": found}])
        else:
            message = Buys([(book, Purchase.parse(body)) for book, body, _ in batch])
            call = self.take_many(message.body()).addCallback(lambda answer: answer["results"])
        call.addBoth(self._answered, batch)

    def _answered(
        self, results: list[dict[str, Any]] | Failure, batch: list[tuple[int, dict[str, Any], Deferred[Book]]]
    ) -> None:
        with self.deliver_within():
            for number, (_, _, d) in enumerate(batch):
                if isinstance(results, Failure):
                    d.errback(results)  # the call failed: each take is in doubt, as its own would be
                    continue
                result = results[number] if number < len(results) else None
                if result is None:
                    d.errback(ReplicaError(502, "the catalog did not answer for every take"))
                elif "error" in result:
                    d.errback(ReplicaError(result["error"]["code"], result["error"]["message"]))
                else:
                    d.callback(result["book"])
        self._next()

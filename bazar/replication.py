"""Primary-sequenced replication: the sequencer orders every write, followers apply in order.

A write is acknowledged only after every follower has confirmed it. Each follower gets a
``FollowerLink`` that ships entries strictly in sequence order, batching whatever queued up
while the previous request was in flight (one request per follower at a time). When a
follower reports that it is behind (a gap, e.g. after it missed writes while unreachable),
the link resends the missing entries from the sequencer's log before the new ones: catch-up
happens whenever a gap is seen, not only at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from bazar.client import ReplicaClient
from bazar.config import Replica
from bazar.errors import BazarError, Unavailable
from bazar.storage import Entry, ReplicatedStore

REPLICATE_PATH = "/internal/replicate"
MAX_BATCH = 500

log = Logger()


class FollowerLink:
    def __init__(self, follower: Replica, client: ReplicaClient, store: ReplicatedStore) -> None:
        self.follower = follower
        self.client = client
        self.store = store
        self.confirmed = 0  # the follower's last_seq, as far as we know
        self._queue: list[tuple[int, Entry]] = []
        self._waiters: list[tuple[int, Deferred[None]]] = []
        self._sending = False

    def ship(self, seq: int, entry: Entry) -> Deferred[None]:
        """Fires once the follower has applied ``seq`` (and so everything before it)."""
        d: Deferred[None] = Deferred()
        self._queue.append((seq, entry))
        self._waiters.append((seq, d))
        self._pump()
        return d

    def _pump(self) -> None:
        if self._sending or not self._queue:
            return
        self._sending = True
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        self._send(batch).addBoth(self._sent)

    @inlineCallbacks
    def _send(self, batch: list[tuple[int, Entry]]) -> Any:
        if batch[0][0] > self.confirmed + 1:
            # The follower lacks entries before this batch: resend them from the log first.
            missing = yield self.store.entries_after(
                self.confirmed, min(batch[0][0] - self.confirmed - 1, MAX_BATCH)
            )
            batch = missing + batch
        response = yield self.client.request("POST", self.follower, REPLICATE_PATH, {"entries": batch})
        answer = response.json() if response.code in (200, 409) else {}
        if "last_seq" not in answer:
            response.raise_for_error()
        self.confirmed = answer["last_seq"]
        if response.code == 409:  # a gap: requeue what it has not applied, resend from its last_seq
            self._queue[:0] = [e for e in batch if e[0] > self.confirmed]
            log.info(
                "{follower} is behind at {last_seq}; resending from the log",
                follower=self.follower.name,
                last_seq=self.confirmed,
            )

    def _sent(self, result: Failure | None) -> None:
        self._sending = False
        if isinstance(result, Failure):
            # The follower did not confirm: fail every write waiting on it. The entries stay
            # in the sequencer's log; the next batch finds the gap and resends them.
            error = result.value if isinstance(result.value, BazarError) else None
            message = error.message if error else result.getErrorMessage()
            log.warn(
                "replication to {follower} failed: {message}", follower=self.follower.name, message=message
            )
            self._queue.clear()
            waiters, self._waiters = self._waiters, []
            for _, d in waiters:
                d.errback(Unavailable(f"{self.follower.name} did not confirm the write: {message}"))
            return
        done = [d for seq, d in self._waiters if seq <= self.confirmed]
        self._waiters = [(seq, d) for seq, d in self._waiters if seq > self.confirmed]
        for d in done:
            d.callback(None)
        self._pump()


class Sequencer:
    """Runs a write at the sequencer, replicates it to every follower, then runs ``after``."""

    def __init__(
        self,
        store: ReplicatedStore,
        links: list[FollowerLink],
        after: Callable[[Entry], Deferred[Any]] | None = None,
    ) -> None:
        self.store = store
        self.links = links
        self.after = after

    @inlineCallbacks
    def write(self, sequenced: Deferred[tuple[int, Entry]]) -> Any:
        """``sequenced`` is the store's write; the entry, once every follower has it."""
        seq, entry = yield sequenced
        # Wait for every follower, even after one failed: ``after`` must not run while a
        # follower may still be applying the write (a read from it could refill a cache).
        results = yield DeferredList([link.ship(seq, entry) for link in self.links], consumeErrors=True)
        failure: Failure | None = next((result for ok, result in results if not ok), None)
        if self.after is not None:
            # Even a write that some follower missed changed the sequencer's data: drop
            # cached copies of it either way.
            yield self.after(entry)
        if failure is not None:
            failure.raiseException()
        return entry

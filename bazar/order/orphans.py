"""Takes without orders: found by the order sequencer, and given their orders.

A purchase is two writes in turn: the catalog sequencer takes the stock, then the order
sequencer records the order. In between, the order sequencer may be replaced (hung, cut
off, killed and restarted), or its call to the catalog may time out after the catalog took
the stock: the stock is gone and no order says where. Every purchase has an idempotency key
(the client's, or one the front end gave it), and the catalog logs each take with it; an
order is recorded under the same key. So the order sequencer can find every take whose key
has no order, and record that order. Recording by key is idempotent: a purchase still on
its way with the same key is answered with the same order (``Replayed``), never a second.

``Orphans`` does that when its replica starts sequencing orders, before the replica serves
a purchase (``ready``), and every SCAN_INTERVAL seconds after (``tick``): a take whose
purchase was still on its way at one scan is found by the next. It reads the catalog's
log from its *watermark* on, where every keyed take at or below the watermark has its
order here. A take whose purchase is on its way here, under this sequencer, is left to it;
the watermark stays below it until a scan finds it done. Every order entry carries the
watermark (``takes_resolved``), so a replica that takes over starts from its log's newest
one, not from the start of the catalog's log. The catalog answers only with takes a
majority of its replicas has (a read like any other): a take that a catalog failover loses
gets no order.

Without a key a take cannot be tied to an order: takes logged without one (before every
purchase had a key, or bought at the catalog directly) are left alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bazar.client import ReplicaClient
from bazar.config import Replica
from bazar.errors import BazarError, Unavailable
from bazar.order.store import OrderStore
from bazar.protocol import TAKES_PATH
from bazar.replication import Sequencer

MAX_TAKES_PAGE = 1000  # catalog log entries looked at per request
TAKES_TIMEOUT = 5.0  # seconds a catalog replica may take to answer
CHECK_INTERVAL = 1.0  # seconds between looks at whether this replica has started sequencing
SCAN_INTERVAL = 5.0  # seconds between scans while it sequences

log = Logger()


class Orphans:
    """Finds the takes whose orders are missing at this order replica, and records them."""

    def __init__(
        self,
        store: OrderStore,
        client: ReplicaClient,
        catalogs: Callable[[], Sequence[Replica]],
        clock: IReactorTime,
    ) -> None:
        """``catalogs()``: the catalog replicas in the order to ask them (the sequencer first)."""
        self.store = store
        self.client = client
        self.catalogs = catalogs
        self.clock = clock
        # Every keyed take at or below this catalog sequence number has its order here: true
        # for ``_scanned``, the sequencer the last complete scan was made under.
        self.watermark = 0
        self._scanned: Sequencer | None = None
        self._last_scan: float | None = None
        self._lock = DeferredLock()  # one scan at a time
        self._in_flight: Counter[tuple[str, Sequencer]] = Counter()

    # -- what purchases call -------------------------------------------------------------

    def ready(self, writer: Sequencer) -> Deferred[Any]:
        """Fires once a scan under ``writer`` has resolved every take found: at once after
        the first (purchases wait only for their sequencer's first scan)."""
        if self._scanned is writer:
            return succeed(None)
        return self._lock.run(self._first_scan, writer)

    def _first_scan(self, writer: Sequencer) -> Deferred[Any]:
        if self._scanned is writer:  # done while this one waited for the lock
            return succeed(None)
        return self._scan(writer)

    def started(self, key: str, writer: Sequencer) -> None:
        """A purchase with ``key`` is on its way under ``writer``: a scan leaves its take to it."""
        self._in_flight[key, writer] += 1

    def finished(self, key: str, writer: Sequencer) -> None:
        self._in_flight[key, writer] -= 1
        if not self._in_flight[key, writer]:
            del self._in_flight[key, writer]

    # -- scans ---------------------------------------------------------------------------

    def tick(self, writer: Sequencer | None) -> Deferred[Any] | None:
        """Called every CHECK_INTERVAL seconds with this replica's writer (None on a follower):
        scans at once under a new writer, then every SCAN_INTERVAL seconds."""
        if writer is None or writer.retired or self._lock.locked:
            return None
        now = self.clock.seconds()
        if self._scanned is writer and self._last_scan is not None and now - self._last_scan < SCAN_INTERVAL:
            return None
        d = self._lock.run(self._scan, writer)
        d.addErrback(lambda f: log.warn("no scan for takes without orders: {why}", why=f.getErrorMessage()))
        return d

    @inlineCallbacks
    def _scan(self, writer: Sequencer) -> Any:
        """Every keyed take after the watermark that has no order here gets one."""
        self._last_scan = self.clock.seconds()
        if self._scanned is not writer:
            # A new sequencer: what the log says, not what this replica knew when it last led.
            self.watermark = yield self.store.takes_resolved()
        after = self.watermark
        mark: int | None = None  # below a take left to its purchase: the watermark stops there
        recorded = 0
        while True:
            page = yield self._takes_after(after)
            takes, last = page["takes"], page["last_seq"]
            present = yield self.store.recorded_keys([take["key"] for take in takes])
            for take in takes:
                if take["key"] in present:
                    continue
                if (take["key"], writer) in self._in_flight:
                    mark = take["seq"] - 1 if mark is None else mark
                    continue
                if writer.retired:
                    raise Unavailable("this replica no longer sequences orders")
                yield writer.write(
                    self.store.record(
                        take["book_id"],
                        take["title"],
                        take["price"],
                        take["quantity"],
                        take["key"],
                        self.watermark,
                    )
                )
                recorded += 1
                log.info(
                    "recorded the order of take {seq} (key {key}), which had none",
                    seq=take["seq"],
                    key=take["key"],
                )
            if last - after < MAX_TAKES_PAGE:
                break  # the catalog has nothing after ``last`` (yet)
            after = last
        self.watermark = max(self.watermark, last if mark is None else mark)
        self._scanned = writer
        return recorded

    @inlineCallbacks
    def _takes_after(self, after: int) -> Any:
        """One page of takes from the first catalog replica (the sequencer, as last heard of)
        that answers; any replica's is as good (each answers only writes a majority has)."""
        error: BazarError | None = None
        path = f"{TAKES_PATH}?after={after}&limit={MAX_TAKES_PAGE}"
        for catalog in self.catalogs():
            try:
                response = yield self.client.request("GET", catalog, path, timeout=TAKES_TIMEOUT)
                return response.raise_for_error().json()
            except BazarError as e:  # unreachable, or not readable now (503): the next one
                error = e
        raise Unavailable(f"no catalog replica listed its takes ({error.message if error else 'none'})")

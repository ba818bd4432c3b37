"""Which front-end cache entries hold a book, and how a catalog write tells the front end to drop them.

The key scheme lives here alone: the front end caches under these keys, and the catalog
sequencer names the same keys when it pushes an invalidation.

* ``info/<id>``: one book.
* ``info/all?limit=100&offset=0`` and ``search/<topic>?limit=100&offset=0&after=41``: one
  page of a listing (``PageKey``), under the listing's prefix ``info/all`` or
  ``search/<topic>``.

A write to a book names ``info/<id>`` and the prefixes of both listings that contain it;
the front end drops every cached page under a named prefix (and marks every page fill in
flight stale). Finer rules (only the pages whose id range holds the book) would keep more
pages, but every one of them would have to be right; dropping the listing always is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from bazar.client import ReplicaClient
from bazar.config import Replica
from bazar.leases import RENEW_INTERVAL, Grant, Lessor, Now
from bazar.paging import Page
from bazar.protocol import INVALIDATE_PATH
from bazar.protocol.messages import Invalidate
from bazar.storage import Entry

ALL_BOOKS_KEY = "info/all"
# Seconds a push may take before the writes waiting for it fail (503: not acknowledged). Pushes
# go one at a time, so one lost to a partition holds every later write until it times out; the
# front end answers a push in milliseconds. As long as a follower may take (REPLICATION_TIMEOUT).
PUSH_TIMEOUT = 2.0

log = Logger()


class PageKey(str):
    """The cache key of one page of a listing: ``<prefix>?<page query>``, remembering its prefix.

    A ``str``, so it shows as itself wherever keys are listed (``/bazar/cluster``) and
    compares as its text. The text is unambiguous even for a topic that contains ``?``: the
    page query never does, so the last ``?`` separates the two.
    """

    prefix: str

    def __new__(cls, prefix: str, page: Page) -> PageKey:
        key = super().__new__(cls, f"{prefix}?{page.query()}")
        key.prefix = prefix
        return key


def info_key(book_id: int) -> str:
    return f"info/{book_id}"


def search_key(topic: str) -> str:
    """The prefix of every page of ``topic``'s search."""
    return f"search/{topic}"


def all_books_page_key(page: Page) -> PageKey:
    return PageKey(ALL_BOOKS_KEY, page)


def search_page_key(topic: str, page: Page) -> PageKey:
    return PageKey(search_key(topic), page)


def keys_for_book(book: dict[str, Any]) -> list[str]:
    """What a change to ``book`` invalidates: its own key, and the prefixes of both listings it is in."""
    return [info_key(book["id"]), search_key(book["topic"]), ALL_BOOKS_KEY]


class FrontendNotifier:
    """What a sequencer pushes to the front end, before it acknowledges a write.

    ``written``: the cache keys the write changed (``keys(entry)``) and the followers that
    did not confirm it, which the front end must stop reading from; ``caught_up``: a
    follower that has every write again and may be read from.

    Under load, pushes are batched the way replication is: one push at a time, and the
    keys of every write that comes while it is on its way go together in the next one
    (with the newest write's sequence number); each write waits for the push that carries
    its keys. One client alone never waits for a batch. A push naming lagging followers is
    sent on its own, at once: which write it was decided for matters (see ``Health``).
    """

    def __init__(
        self,
        client: ReplicaClient,
        frontend: Replica,
        keys: Callable[[Entry], list[str]],
        epoch: Callable[[], tuple[str, int]] | None = None,
    ) -> None:
        """``epoch()``: the role and epoch this sequencer writes in. The front end learns of a
        new epoch with its first write, before that write is acknowledged, and stops
        reading from replicas still in an older one."""
        self.client = client
        self.frontend = frontend
        self.keys = keys
        self.epoch = epoch
        self._told_epoch: tuple[str, int] | None = None
        self._sending = False
        self._keys: dict[str, None] = {}  # the next push's keys, in order, once each
        self._seq = 0
        self._waiters: list[Deferred[Any]] = []
        # Whether the front end's cache lease is revoked now (``FrontendsNotifier`` sets it):
        # then each push has it drop its whole cache (``Invalidate.flush``), not just its keys.
        self.revoked: Callable[[], bool] = lambda: False

    def written(self, seq: int, entry: Entry, lagging: list[str]) -> Deferred[Any]:
        if lagging:
            return self._push(self.keys(entry), seq, lagging)
        return self.written_many([(seq, entry)])

    def written_many(self, writes: list[tuple[int, Entry]]) -> Deferred[Any]:
        """Writes none of whose followers lagged (one group commit's batch): their keys
        go together, in the next push."""
        keys = [key for _, entry in writes for key in self.keys(entry)]
        epoch = self.epoch() if self.epoch is not None else None
        if not keys and epoch == self._told_epoch:
            return succeed(None)
        self._keys.update(dict.fromkeys(keys))
        self._seq = max(self._seq, *(seq for seq, _ in writes))
        d: Deferred[Any] = Deferred()
        self._waiters.append(d)
        if not self._sending:
            self._send_batch()
        return d

    def _send_batch(self) -> None:
        keys, seq, waiters = list(self._keys), self._seq, self._waiters
        self._keys, self._seq, self._waiters = {}, 0, []
        self._sending = True

        def sent(result: Any) -> None:
            self._sending = False
            for d in waiters:
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(result)
            if self._waiters:
                self._send_batch()

        self._push(keys, seq, []).addBoth(sent)

    def _push(self, keys: list[str], seq: int, lagging: list[str]) -> Deferred[Any]:
        epoch = self.epoch() if self.epoch is not None else None
        role, number = epoch if epoch is not None else (None, None)
        # Flushing, not only dropping ``keys``, while revoked: an earlier push may have been
        # lost, and this one, of a newer write, would raise the cache's floor past it, so that
        # the entries that push named were served again (docs/frontends.md, "A lost push").
        flush = self.revoked()
        message = Invalidate(keys, seq, lagging=lagging, role=role, epoch=number, flush=flush)
        d = self._send(message)

        def told(result: Any) -> Any:
            self._told_epoch = epoch
            return result

        return d.addCallback(told)

    def _send(self, message: Invalidate) -> Deferred[Any]:
        """Every push goes to the front end with PUSH_TIMEOUT as its deadline."""
        return self.client.call("POST", self.frontend, INVALIDATE_PATH, message.body(), timeout=PUSH_TIMEOUT)

    def caught_up(self, follower: str, seq: int) -> Deferred[Any]:
        message = Invalidate([], seq, caught_up=[follower])
        return self._send(message)

    def announce(self, sequencer: str, seq: int) -> Deferred[Any]:
        """A replica just elected: the front end sends writes straight to it from now on (and
        stops reading from replicas of older epochs), without waiting for its next probe."""
        role, epoch = self.epoch() if self.epoch is not None else (None, None)
        message = Invalidate([], seq, role=role, epoch=epoch, sequencer=sequencer)
        return self._send(message)


class FrontendsNotifier:
    """A sequencer's pushes to every front end, each held to its cache lease (``bazar.leases``).

    A write waits, for each front end, until it has dropped the write's keys, or, for one
    that cannot be told (its push failed, or is not answered in time), until its lease has
    run out: then it answers reads as misses until a grant that flushes its cache. ``renew``
    (every ``RENEW_INTERVAL``, while this replica sequences: ``LeaseRenewal``) sends the
    grants."""

    def __init__(
        self,
        client: ReplicaClient,
        frontends: Sequence[Replica],
        keys: Callable[[Entry], list[str]],
        epoch: Callable[[], tuple[str, int]],
        clock: IReactorTime,
        sequencer: str,
        applied: Callable[[], int] = lambda: 0,
        followers: Callable[[], dict[str, dict[str, Any]]] = dict,
        now: Now | None = None,
    ) -> None:
        """``applied()``: the newest write here (a flush grant's floor); ``followers()``: the
        sequencer's followers (``Sequencer.followers``), so that a flushed front end also
        learns which it may read from."""
        self.client = client
        self.frontends = list(frontends)
        self.each = {f.name: FrontendNotifier(client, f, keys, epoch) for f in self.frontends}
        self.epoch = epoch
        self.clock = clock
        self.now = now
        self.sequencer = sequencer
        self.applied = applied
        self.followers = followers
        self.lessor = Lessor(self.each, clock, now)
        for name, notifier in self.each.items():
            notifier.revoked = partial(self._revoked, name)
        self._lessor_epoch: tuple[str, int] | None = None  # the epoch ``lessor`` grants in
        # Whether this sequencer may grant now: no other can have been elected yet
        # (``Sequencer.leads``, set by ``bazar.assembly``).
        self.may_grant: Callable[[], bool] = lambda: True

    def _revoked(self, name: str) -> bool:
        return self.lessor.revoked(name)

    def _current(self) -> Lessor:
        """The lessor of this sequencer's current term: a new one (every lease presumed held,
        every first grant a flush) whenever this replica starts sequencing in a new epoch."""
        epoch = self.epoch()
        if self._lessor_epoch is not None and epoch != self._lessor_epoch:
            self.lessor = Lessor(self.each, self.clock, self.now)
        self._lessor_epoch = epoch
        return self.lessor

    def written(self, seq: int, entry: Entry, lagging: list[str]) -> Deferred[Any]:
        lessor = self._current()
        told = [
            self._within_lease(lessor, name, notifier.written(seq, entry, lagging))
            for name, notifier in self.each.items()
        ]
        return _every(told)

    def written_many(self, writes: list[tuple[int, Entry]]) -> Deferred[Any]:
        """``written`` for one group commit's batch (none lagging): one push per front end."""
        lessor = self._current()
        told = [
            self._within_lease(lessor, name, notifier.written_many(writes))
            for name, notifier in self.each.items()
        ]
        return _every(told)

    def _within_lease(self, lessor: Lessor, name: str, told: Deferred[Any]) -> Deferred[Any]:
        """``told``, or, if that fails or is late, the end of ``name``'s lease."""
        if told.called and not isinstance(told.result, Failure):
            return told
        done: Deferred[Any] = Deferred()
        run_out = lessor.run_out(name)

        def answered(result: Any) -> None:
            if done.called:
                return
            if isinstance(result, Failure):
                lessor.revoke(name)
                log.warn(
                    "could not tell {frontend}: waiting {left:.2f} s for its lease to run out: {error}",
                    frontend=name,
                    left=lessor.left(name),
                    error=result.getErrorMessage(),
                )
                return
            run_out.cancel()
            done.callback(result)

        def ran_out(result: Any) -> None:
            if not done.called:
                done.callback(None)

        run_out.addCallbacks(ran_out, lambda f: f.trap(CancelledError))
        told.addBoth(answered)
        return done

    def caught_up(self, follower: str, seq: int) -> Deferred[Any]:
        return _every([n.caught_up(follower, seq) for n in self.each.values()])

    def announce(self, sequencer: str, seq: int) -> Deferred[Any]:
        return _every([n.announce(sequencer, seq) for n in self.each.values()])

    def renew(self) -> None:
        """Send each front end whose previous grant was answered its next one."""
        for frontend in self.frontends:
            self._grant(frontend)

    def _grant(self, frontend: Replica) -> None:
        if not self.may_grant():
            return
        lessor = self._current()
        grant = lessor.grant(frontend.name)
        if grant is None:
            return
        role, epoch = self.epoch()
        lagging = caught_up = None
        if grant.flush:
            followers = self.followers()
            lagging = [name for name, f in followers.items() if not f["readable"]]
            caught_up = [name for name, f in followers.items() if f["readable"]]
        lease = {**grant.body(), "sequencer": self.sequencer}
        message = Invalidate([], self.applied(), lagging, caught_up, role, epoch, lease=lease)
        d = self.client.call("POST", frontend, INVALIDATE_PATH, message.body(), timeout=RENEW_INTERVAL * 2)
        d.addCallbacks(lambda _: True, lambda _: False).addCallback(self._answered, lessor, frontend, grant)

    def _answered(self, ok: bool, lessor: Lessor, frontend: Replica, grant: Grant) -> None:
        if lessor.answered(frontend.name, grant, ok) and lessor is self.lessor:
            self._grant(frontend)

    def leases(self) -> dict[str, Any]:
        """Each front end's lease, as this sequencer counts it."""
        return {name: self.lessor.state(name) for name in self.each}


def _every(told: list[Deferred[Any]]) -> Deferred[Any]:
    """Fires when every one of ``told`` has (one front end: as that one does)."""
    return told[0] if len(told) == 1 else gatherResults(told, consumeErrors=True)


class LeaseRenewal(TimerService):
    """Renews the front ends' leases every ``RENEW_INTERVAL`` while ``leading()``."""

    def __init__(self, notifier: FrontendsNotifier, leading: Callable[[], bool], clock: IReactorTime) -> None:
        super().__init__(RENEW_INTERVAL, self._beat, notifier, leading)
        self.clock = clock

    @staticmethod
    def _beat(notifier: FrontendsNotifier, leading: Callable[[], bool]) -> None:
        if leading():
            notifier.renew()


def book_keys(entry: Entry) -> list[str]:
    """The cache keys of a catalog write: everything that shows the book it changed."""
    return keys_for_book(entry["book"])

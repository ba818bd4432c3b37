"""One follower's link from the sequencer: ships the log to it in order, in gap-free batches.

``bazar.replication.Sequencer`` has one ``FollowerLink`` per follower and waits, for each
write, for the links of the followers in sync (see that module for the whole scheme).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from bazar.client import ReplicaClient
from bazar.config import Replica
from bazar.errors import BazarError, Unavailable
from bazar.leases import FollowerLease
from bazar.protocol import REPLICATE_PATH
from bazar.protocol.messages import Replicate
from bazar.storage import Entry, ReplicatedStore

MAX_BATCH = 500
# Bytes of entries per request: well under what a replica accepts in one body (jsonio.MAX_BODY).
MAX_BATCH_BYTES = 48 * 1024
REPLICATION_TIMEOUT = 2.0  # seconds a follower may take to confirm before it drops out of sync

log = Logger()


class FollowerLink:
    """Ships the sequencer's log to one follower, in order, one request at a time.

    Every request carries a gap-free run of entries that starts right after the last one the
    follower is known to hold (``confirmed``): the writes queued here when they continue it,
    else entries read from the log (a follower far behind, or one that lost its data), cut to
    MAX_BATCH and MAX_BATCH_BYTES. A follower refuses a batch with a gap, so a batch with one
    would be refused, and resent, forever.

    Liveness: a write waits for a follower at most REPLICATION_TIMEOUT, and then for the
    follower's read lease to run out (``lease``, ``bazar.leases.FollowerLease``: every request
    grants one, to a follower in sync that has every write acknowledged). If the follower has
    not confirmed it by then, whatever it answered meanwhile (nothing, errors, or refusals that
    leave its position where it was), its lease is revoked, and once it has run out (at most
    LEASE_TERM after the follower last answered) it drops out of sync and the write stops
    waiting. A request that moved nothing forward is not sent again before the next heartbeat,
    so a follower that keeps refusing costs one request per heartbeat, not a loop.
    """

    def __init__(
        self,
        follower: Replica,
        client: ReplicaClient,
        store: ReplicatedStore,
        clock: IReactorTime,
        lease: FollowerLease | None = None,
    ) -> None:
        """``lease``: the follower's read lease, counted on a monotonic clock (``Role`` gives
        one; a link built alone grants none)."""
        self.follower = follower
        self.client = client
        self.store = store
        self.clock = clock
        if lease is None:  # alone, it sends no epoch, so grants no lease
            lease = FollowerLease("", clock.seconds)
            lease.none()
        self.lease = lease
        # Whether a follower in sync that confirmed up to a sequence number may be granted a
        # read lease: it has every acknowledged write (``Sequencer`` sets it).
        self.grantable: Callable[[int], bool] = lambda confirmed: True
        self._lease_out: IDelayedCall | None = None  # when a revoked lease has run out
        self.confirmed = 0  # the follower's last_seq, as far as we know
        self.in_sync = True  # presumed until it fails to confirm a write
        self.on_caught_up: Callable[[str, int], object] = lambda follower, seq: None
        # (epoch, sequencer) sent with every call, when the sequencer runs under an epoch.
        self.epoch: tuple[int, str] | None = None
        self.on_stale_epoch: Callable[[int, str], object] = lambda epoch, sequencer: None
        self._queue: list[tuple[int, Entry]] = []  # shipped and not confirmed yet, in seq order
        # (seq, deadline, fired with whether the follower has seq), oldest deadline first.
        self._waiters: list[tuple[int, float, Deferred[bool]]] = []
        self._deadline: IDelayedCall | None = None
        self._sending = False

    def ship(self, seq: int, entry: Entry) -> Deferred[bool]:
        """True once the follower has applied ``seq`` (and so everything before it); False
        for a follower out of sync (once a lease it may hold has run out: ``after_lease``),
        or as soon as it drops out (the write does not wait)."""
        if not self.in_sync:
            return self.after_lease()
        if seq <= self.confirmed:
            return succeed(True)  # a catch-up read it from the log and sent it already
        self._queue.append((seq, entry))
        d = self._wait(seq)
        # While a group commit hands out its batch, at its end: the whole batch in one request.
        self.store.commits.delivery.send(self._pump)
        return d

    def confirm(self, seq: int) -> Deferred[bool]:
        """For a write logged earlier (a keyed retry's original): whether the follower has
        ``seq``. One in sync is waited for as ``ship`` waits, until it confirms or drops out:
        even while a call is in flight, since this link may be new (a new sequencer's knows
        nothing of its followers yet). One out of sync gets one heartbeat (it may be back)."""
        if self.confirmed >= seq:
            return succeed(True)
        if not self.in_sync:
            d = self.heartbeat().addCallback(lambda _: self.confirmed >= seq)
            return d.addCallback(lambda has: True if has else self.after_lease())
        d = self._wait(seq)
        self.heartbeat()  # or, if a call is in flight, its answer (and any catch-up) decides
        return d

    def heartbeat(self) -> Deferred[bool]:
        """Tell the follower the sequencer's last_seq; it answers with its own, and gets
        whatever it lacks. Fires with whether the follower is in sync afterwards."""
        if self._sending:
            return succeed(self.in_sync)
        return self._start(heartbeat=True).addCallback(lambda _: self.in_sync)

    def after_lease(self) -> Deferred[bool]:
        """False, once a read lease this follower may hold has run out: at once, but just
        after an election for a follower that did not vote (its predecessor's lease)."""
        left = self.lease.left()
        if not left:
            return succeed(False)
        d: Deferred[bool] = Deferred()
        self.clock.callLater(left, d.callback, False)
        return d

    def _wait(self, seq: int) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self._waiters.append((seq, self.clock.seconds() + REPLICATION_TIMEOUT, d))
        if self._deadline is None:
            self._deadline = self.clock.callLater(REPLICATION_TIMEOUT, self._check_deadline)
        return d

    def _check_deadline(self) -> None:
        """The oldest waiting write's deadline (or an earlier one's, confirmed since) is here."""
        self._deadline = None
        if not self._waiters:
            return
        seq, deadline, _ = self._waiters[0]
        left = deadline - self.clock.seconds()
        if left > 0:
            self._deadline = self.clock.callLater(left, self._check_deadline)
            return
        self._fall_behind(f"write {seq} not confirmed within {REPLICATION_TIMEOUT:g} s")

    def _fall_behind(self, message: str) -> None:
        """Out of sync: writes stop waiting for it, once its read lease has run out (till then
        it is granted no more); the entries stay in the log for when it is back."""
        self.lease.revoke()
        left = self.lease.left()
        if self.in_sync and left:
            if self._lease_out is None:
                self._lease_out = self.clock.callLater(left, self._lease_ran_out, message)
            return
        if self.in_sync:
            log.warn("{follower} is out of sync: {message}", follower=self.follower.name, message=message)
        self.in_sync = False
        self._queue.clear()
        self._settle(lambda seq: False)

    def _lease_ran_out(self, message: str) -> None:
        self._lease_out = None
        if self.lease.revoked_until is not None:
            self._fall_behind(message)

    def _restore(self) -> None:
        """Answered in time after all: its lease is renewed again."""
        self.lease.restore()
        if self._lease_out is not None:
            self._lease_out.cancel()
            self._lease_out = None

    def _settle(self, has: Callable[[int], bool | None]) -> None:
        """Fire every waiter whose write is settled: True if confirmed, False if it is given up
        on (``has`` says which: True, False, or None to keep waiting)."""
        waiting: list[tuple[int, float, Deferred[bool]]] = []
        settled: list[tuple[Deferred[bool], bool]] = []
        for waiter in self._waiters:
            outcome = has(waiter[0])
            if outcome is None:
                waiting.append(waiter)
            else:
                settled.append((waiter[2], outcome))
        self._waiters = waiting
        if not waiting and self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        for d, outcome in settled:
            d.callback(outcome)

    def _pump(self) -> None:
        if self._sending or not self._queue:
            return
        self._start(heartbeat=False)

    def _start(self, heartbeat: bool) -> Deferred[None]:
        """Send the next request: one at a time, ``_sending`` until its answer is handled."""
        self._sending = True
        return self._send(heartbeat).addBoth(self._sent)

    @inlineCallbacks
    def _next_batch(self, heartbeat: bool) -> Any:
        """The entries the follower lacks next, in one gap-free run (none: it has them all)."""
        if heartbeat:
            # What the follower must have is what the log holds, whatever a write still on
            # its way has or has not reported yet.
            logged = yield self.store.last_seq()
            self.store.applied_seq = max(self.store.applied_seq, logged)
        run = _run_from(self.confirmed + 1, self._queue[:MAX_BATCH])
        if not run and self.confirmed < self.store.applied_seq:
            run = yield self.store.entries_after(self.confirmed, MAX_BATCH)
        return _within_budget(run)

    @inlineCallbacks
    def _send(self, heartbeat: bool) -> Any:
        """One request; fires with whether another should follow at once (more to send, and
        this one moved the follower's known position, or was only a heartbeat)."""
        batch = yield self._next_batch(heartbeat)
        before = self.confirmed
        epoch, sequencer = self.epoch if self.epoch is not None else (None, None)
        lease = None
        if sequencer is not None:
            lease = self.lease.call(self.in_sync and self.grantable(self.confirmed), sequencer)
        message = Replicate(batch, self.store.applied_seq, epoch, sequencer, lease)
        response = yield self.client.request(
            "POST", self.follower, REPLICATE_PATH, message.body(), timeout=REPLICATION_TIMEOUT
        )
        answer = response.json() if response.code in (200, 409) else {}
        if "stale_epoch" in answer:
            # The follower knows a newer epoch: another replica sequences writes now. No write
            # here can be acknowledged: none waits for its lease.
            self.lease.none()
            self.lease.revoke()
            self.on_stale_epoch(answer["stale_epoch"], answer["sequencer"])
            raise Unavailable(
                f"{self.follower.name} follows epoch {answer['stale_epoch']}: this sequencer was replaced"
            )
        if "last_seq" not in answer:
            response.raise_for_error()
        if lease is not None:
            self.lease.heard(lease["grant"])
        self.confirmed = answer["last_seq"]
        self._queue = [e for e in self._queue if e[0] > self.confirmed]
        more = bool(self._queue) or self.confirmed < self.store.applied_seq
        return more and (self.confirmed != before or not batch)

    def _sent(self, result: bool | Failure) -> None:
        self._sending = False
        if isinstance(result, Failure):
            error = result.value if isinstance(result.value, BazarError) else None
            self._fall_behind(error.message if error else result.getErrorMessage())
            return
        self._settle(lambda seq: True if seq <= self.confirmed else None)
        renew = self.lease.renew_now()
        if self.in_sync and self.lease.revoked_until is not None and not self._overdue():
            self._restore()
        if not self.in_sync and not self._queue and self.confirmed >= self.store.applied_seq:
            log.info("{follower} is back in sync at {seq}", follower=self.follower.name, seq=self.confirmed)
            self.in_sync = True
            self._restore()
            renew = self.epoch is not None  # its read lease, at once (a Role's link grants one)
            self.on_caught_up(self.follower.name, self.confirmed)
        if result or renew:
            self._start(heartbeat=False)

    def _overdue(self) -> bool:
        """Whether a write has waited for this follower past its deadline."""
        return bool(self._waiters) and self._waiters[0][1] <= self.clock.seconds()


def _run_from(start: int, entries: list[tuple[int, Entry]]) -> list[tuple[int, Entry]]:
    """The longest prefix of ``entries`` numbered ``start``, ``start + 1``, ... (perhaps none)."""
    for i, (seq, _) in enumerate(entries):
        if seq != start + i:
            return entries[:i]
    return entries


def _within_budget(batch: list[tuple[int, Entry]]) -> list[tuple[int, Entry]]:
    """The first entries of ``batch`` that fit in MAX_BATCH_BYTES (one at least)."""
    size = 0
    for i, (_, entry) in enumerate(batch):
        size += len(json.dumps(entry)) + 16
        if size > MAX_BATCH_BYTES and i > 0:
            return batch[:i]
    return batch

"""Cache leases: a front end answers from its cache only while its role's sequencer has
promised to tell it of every write first, so a write never waits for ever on a front end
that hangs, and a front end that missed a write never serves it stale.

The design follows leases (Gray and Cheriton, "Leases: An Efficient Fault-Tolerant Mechanism
for Distributed File Cache Consistency", SOSP 1989): a cache may use its copy only while it
holds an unexpired lease; the writer waits for every holder to drop the copy, or, for a
holder it cannot reach, until that holder's lease has run out. Invalidation across many
caches, sent by the writer before it answers (not by a TTL), is the one Facebook's memcache
uses ("Scaling Memcache at Facebook", NSDI 2013, section 3.2: mcsqueal's deletes).

How a lease is counted, each side on its own monotonic clock, with no clock compared across
processes:

* The sequencer (``Lessor``) sends each front end numbered *grants*, one at a time (the next
  once the previous is answered or given up), every ``RENEW_INTERVAL``. It counts the front
  end's lease as running until ``LEASE_TERM`` after it received the answer to the newest
  grant answered (which is after the front end received that grant, and before the
  sequencer sent any grant based on it); grants that are never answered extend nothing.
* Each grant names the newest grant whose answer the sequencer had received when it sent
  it (``based_on``). The front end (``LeaseHolder``) trusts its cache until ``HOLDER_TERM``
  (the term less a margin for clock-rate drift) after it RECEIVED that earlier grant. It
  received it before it answered it, so before the sequencer received the answer: its
  lease ends before the sequencer's count of it does, however long any message took. (Counting
  from the receipt of the new grant itself would not be safe: a grant that waited in the
  socket of a process that was stopped for 5 s would be trusted when it is read.)
* A write that cannot tell a front end its keys (the push failed, or has not been answered
  when the lease runs out) *revokes* that front end's lease: the write is acknowledged
  once the lease has run out, and every later grant carries ``flush``: the front end drops
  its whole cache and stores no answer older than the grant's sequence number before it
  trusts its cache again. A flush grant answered also ends the wait (the front end has
  dropped the keys). Until then every push carries ``flush`` too: a later write's push,
  reaching the front end while its lease still holds, would otherwise end the guard that
  keeps it from serving an entry that the lost push named (``ReadThroughCache.fresh``).
* A sequencer that starts (at start-up, or elected) presumes every front end holds a lease
  (from its predecessor) for one term, and its first grant to each flushes.

A front end whose lease has lapsed answers reads as misses, never errors, from any replica
that will answer: followers serve reads only under read leases of their own (below), so
none can show a write older than one acknowledged.

Two more leases close what the front ends' leases leave open (docs/frontends.md):

* **Follower read leases** (``FollowerLease``, the sequencer's side, one per follower; the
  follower holds a ``LeaseHolder``). Every replication call and heartbeat is a grant, counted
  as above: the follower serves reads only until ``HOLDER_TERM`` after it received the call
  whose answer the sequencer had when it sent this one. A follower that does not confirm a
  write in time is *revoked* (no later call extends its lease), and dropped out of sync, so
  that writes stop waiting for it, only once the lease it may hold has run out. So a front
  end may read from any follower that answers: none whose lease counts lacks an
  acknowledged write. A new sequencer presumes every follower that did not vote for it
  holds a lease from its predecessor for one term (all but that predecessor, which granted
  leases and held none).
* **The sequencer's own lease** (``leader_lease``): a replica refuses to vote for a new
  epoch within ``VOTE_GUARD`` of last hearing from its sequencer (``bazar.endpoints``), so
  no other sequencer can be elected until ``LEADER_TERM`` after the send time of the latest
  call that enough followers answered (enough that every majority holds one of them). A
  sequencer grants front-end leases, and answers reads itself, only within that time: one
  that was replaced without knowing it (paused, or cut off from its followers) renews
  nothing, and the leases it granted before had run out by the time its successor started
  plus a term, which its successor waits for.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

LEASE_TERM = 2.0  # seconds a grant lasts, counted by the sequencer from when it sent it
CLOCK_DRIFT = 0.05  # the largest difference in clock rate allowed for: 5 %
HOLDER_TERM = LEASE_TERM * (1 - CLOCK_DRIFT)  # what the front end counts, from an earlier receipt
RENEW_INTERVAL = 0.5  # seconds between grants to each front end
KEPT_RECEIPTS = 16  # the front end remembers when it received its latest grants
# A replica refuses to vote for a new epoch for this long after it last heard from its
# sequencer: half of bazar.failover.ELECTION_TIMEOUT, so that a follower that heard the last
# heartbeat just after the candidate did still votes.
VOTE_GUARD = 0.3
# How long after sending a call that enough followers answered a sequencer may count on not
# having been replaced: VOTE_GUARD less twice the drift allowed (both clocks may err).
LEADER_TERM = VOTE_GUARD * (1 - 2 * CLOCK_DRIFT)

Now = Callable[[], float]


@dataclass(frozen=True)
class Grant:
    """One grant, as sent in the ``lease`` field of an invalidation push."""

    lessor: str  # this sequencer's run (a random token): grant numbers count per run
    number: int
    based_on: int  # the newest grant whose answer the lessor had when it sent this one (0: none)
    flush: bool  # the front end must drop its cache first (it may have missed a write)

    def body(self) -> dict[str, Any]:
        return {"lessor": self.lessor, "grant": self.number, "based_on": self.based_on, "flush": self.flush}


@dataclass
class _Lease:
    """The sequencer's record of one front end's lease."""

    expiry: float
    sent: int = 0
    answered: int = 0
    based_on: int = 0  # what the latest grant sent was based on
    in_flight: bool = False
    in_flight_at: float = float("-inf")  # when the grant in flight was sent
    based_on_at: float = float("-inf")  # when the grant it is based on was sent
    answered_at: float = float("-inf")  # when the newest answered grant was sent
    flush_from: int | None = 1  # grants numbered from here flush, until one is answered
    waiters: list[_Waiter] = field(default_factory=list)  # writes waiting for the lease to run out
    timer: IDelayedCall | None = None
    timer_due: float = 0.0  # when ``timer`` fires, on ``Lessor.now``'s clock


@dataclass
class _Waiter:
    """A write that could not tell a front end (yet)."""

    sent: int  # grants sent to it when the write started waiting
    done: Deferred[None]
    # When every lease granted before the front end may have missed the write has run out:
    # fixed when it is revoked (later grants flush); None until then.
    deadline: float | None = None


class Lessor:
    """The sequencer's side: grants, revocations, and waiting a lease out."""

    def __init__(
        self, holders: Iterable[str], clock: IReactorTime, now: Now | None = None, term: float = LEASE_TERM
    ) -> None:
        self.clock = clock
        self.now = now if now is not None else clock.seconds
        self.term = term
        self.token = uuid.uuid4().hex[:16]
        start = self.now() + term  # a predecessor's grant may run until then
        self._leases = {name: _Lease(start) for name in holders}

    def grant(self, holder: str) -> Grant | None:
        """The next grant for ``holder``; None while the previous one is unanswered."""
        lease = self._leases[holder]
        if lease.in_flight:
            return None
        now = self.now()
        lease.in_flight = True
        lease.sent += 1
        lease.in_flight_at, lease.based_on_at = now, lease.answered_at
        lease.based_on = lease.answered
        flush = lease.flush_from is not None and lease.sent >= lease.flush_from
        return Grant(self.token, lease.sent, lease.based_on, flush)

    def answered(self, holder: str, grant: Grant, ok: bool) -> bool:
        """The front end answered ``grant`` (``ok``) or the call failed; whether to send the
        next grant now: the one just answered was based on a grant sent long ago (or none),
        so the lease the front end counts from it is short or nothing, and the next one,
        based on this one, gives it a full term."""
        lease = self._leases[holder]
        lease.in_flight = False
        if not ok:
            # It may not have the grant, or may read it much later: no write counts on it.
            self.revoke(holder)
            return False
        lease.answered = max(lease.answered, grant.number)
        lease.answered_at = lease.in_flight_at
        # The front end received this grant before it answered, so before now: a later grant
        # based on this one gives it a term from then, which ends before ours from now.
        lease.expiry = max(lease.expiry, self.now() + self.term)
        if grant.flush and lease.flush_from is not None and grant.number >= lease.flush_from:
            lease.flush_from = None
            # Every write that waited since before this grant was sent is dropped there now.
            self._fire(lease, [w for w in lease.waiters if w.sent < grant.number])
        return self.now() - lease.based_on_at > self.term / 2

    def revoke(self, holder: str) -> None:
        """``holder`` may have missed a write: its next grant flushes its cache, and the writes
        waiting for it wait for the grants sent so far to run out, no later ones."""
        lease = self._leases[holder]
        if lease.flush_from is None:
            lease.flush_from = lease.sent + 1
        for waiter in lease.waiters:
            if waiter.deadline is None:
                waiter.deadline = lease.expiry
        if lease.waiters:
            self._arm(holder)

    def revoked(self, holder: str) -> bool:
        return self._leases[holder].flush_from is not None

    def left(self, holder: str) -> float:
        """Seconds until ``holder``'s lease has surely run out (0: it has)."""
        return max(0.0, self._leases[holder].expiry - self.now())

    def run_out(self, holder: str) -> Deferred[None]:
        """Fires once ``holder`` surely serves nothing from its cache that it was not told of:
        its lease has run out (then it is revoked), or it answered a flush grant sent after
        this call. Cancel it when the front end was told after all."""
        lease = self._leases[holder]

        def cancel(d: Deferred[None]) -> None:
            if waiter in lease.waiters:
                lease.waiters.remove(waiter)

        revoked = lease.flush_from is not None
        waiter = _Waiter(lease.sent, Deferred(cancel), lease.expiry if revoked else None)
        lease.waiters.append(waiter)
        self._arm(holder)
        return waiter.done

    def _arm(self, holder: str) -> None:
        lease = self._leases[holder]
        if not lease.waiters:
            return
        due = min(w.deadline if w.deadline is not None else lease.expiry for w in lease.waiters)
        if lease.timer is not None and lease.timer.active():
            if lease.timer_due <= due:
                return  # it fires first, and re-arms (one timer per front end, not per write)
            lease.timer.cancel()
        lease.timer_due = due
        lease.timer = self.clock.callLater(max(0.0, due - self.now()), self._due, holder)

    def _due(self, holder: str) -> None:
        lease = self._leases[holder]
        lease.timer = None
        now = self.now()
        if lease.expiry <= now and any(w.deadline is None for w in lease.waiters):
            self.revoke(holder)  # they could not tell it in time: it may miss their writes
        self._fire(lease, [w for w in lease.waiters if w.deadline is not None and w.deadline <= now])
        self._arm(holder)

    def _fire(self, lease: _Lease, done: list[_Waiter]) -> None:
        for waiter in done:
            lease.waiters.remove(waiter)
        for waiter in done:
            waiter.done.callback(None)

    def state(self, holder: str) -> dict[str, Any]:
        lease = self._leases[holder]
        return {"left": round(self.left(holder), 3), "revoked": lease.flush_from is not None}


class FollowerLease:
    """The sequencer's side of one follower's read lease: every call to the follower is a
    grant, based on the newest call it answered, unless the lease is revoked."""

    def __init__(self, token: str, now: Now, term: float = LEASE_TERM) -> None:
        self.token = token  # the sequencer's run: call numbers count per run
        self.now = now
        self.term = term
        self.sent = 0
        self.answered = 0
        self._sent_at = float("-inf")  # when the call in flight was sent (one at a time)
        self.heard_at = float("-inf")  # when the newest call it answered was sent
        self._short = False  # whether the call in flight grants little or nothing (``renew_now``)
        # Until when the follower may serve reads, as far as we know: at the start, a lease
        # from a predecessor (or this replica's previous run) may run for a term.
        self.expiry = now() + term
        self.revoked_until: float | None = None  # set while revoked: it runs out then

    def call(self, granting: bool, sequencer: str) -> dict[str, Any]:
        """The ``lease`` of the next call: a grant if ``granting`` and not revoked."""
        self.sent += 1
        now = self._sent_at = self.now()
        granting = granting and self.revoked_until is None
        based_on = self.answered if granting else 0
        # Based on nothing, or on a call sent long ago: the lease it gives is short or none.
        self._short = granting and now - self.heard_at > self.term / 2
        return {**Grant(self.token, self.sent, based_on, False).body(), "sequencer": sequencer}

    def heard(self, number: int) -> None:
        """The follower answered call ``number`` (the latest sent): it received the call
        before now, so a grant based on it ends before a term from now."""
        if number == self.sent:
            self.heard_at = self._sent_at
        self.answered = max(self.answered, number)
        self.expiry = max(self.expiry, self.now() + self.term)

    def renew_now(self) -> bool:
        """Whether the call just answered gave little or no lease: the next one, based on it,
        should go at once rather than with the next heartbeat (at start-up, or after a pause)."""
        return self._short and self.revoked_until is None

    def revoke(self) -> None:
        """Grant nothing more: the follower's lease runs out by ``revoked_until``."""
        if self.revoked_until is None:
            self.revoked_until = self.expiry

    def restore(self) -> None:
        self.revoked_until = None

    def left(self) -> float:
        """Seconds until a revoked lease has surely run out (0: it has, or is not revoked)."""
        return 0.0 if self.revoked_until is None else max(0.0, self.revoked_until - self.now())

    def none(self) -> None:
        """The follower holds no lease of ours or a predecessor's (it was that predecessor), or
        none that matters (it follows a newer epoch, so no write of ours can be acknowledged):
        a revocation waits for nothing."""
        self.expiry = float("-inf")
        if self.revoked_until is not None:
            self.revoked_until = self.expiry


def leader_lease(heard_at: Iterable[float], replicas: int, quorum: int) -> float:
    """Until when (on the sequencer's clock) no other sequencer can have been elected: every
    majority holds one of the ``replicas - quorum`` followers heard from last (``heard_at``:
    when each sent the call it answered last), and each refuses to vote until VOTE_GUARD
    after it received that call."""
    needed = replicas - quorum
    if needed <= 0:
        return float("inf")  # a new epoch needs this replica's own vote
    latest = sorted(heard_at, reverse=True)
    return latest[needed - 1] + LEADER_TERM if len(latest) >= needed else float("-inf")


class LeaseHolder:
    """The front end's side, for one role: whether it may answer from its cache now."""

    def __init__(self, now: Now, term: float = HOLDER_TERM) -> None:
        self.now = now
        self.term = term
        self.lessor: str | None = None
        self.sequencer = ""  # the replica that sent the latest grant
        self.epoch = 0
        self.expires = float("-inf")
        self._receipts: dict[int, float] = {}

    def received(self, grant: Grant, epoch: int, sequencer: str = "") -> None:
        """A grant from ``sequencer``, of ``epoch`` (the current one: the caller checked)."""
        now = self.now()
        self.sequencer = sequencer
        if grant.lessor != self.lessor or epoch != self.epoch:
            self.lessor, self.epoch, self._receipts = grant.lessor, epoch, {}
        self._receipts[grant.number] = now
        if len(self._receipts) > KEPT_RECEIPTS:
            del self._receipts[min(self._receipts)]
        earlier = self._receipts.get(grant.based_on)
        if earlier is not None:
            self.expires = max(self.expires, earlier + self.term)

    def lapse(self) -> None:
        """Trust nothing cached until the next lease (another sequencer took over)."""
        self.expires = float("-inf")
        self._receipts = {}
        self.lessor = None
        self.sequencer = ""

    def valid(self) -> bool:
        return self.now() < self.expires

    def state(self) -> dict[str, Any]:
        left = self.expires - self.now()
        return {"valid": left > 0, "left": round(max(0.0, left), 3), "epoch": self.epoch}


class Leases:
    """The front end's leases, one per role."""

    def __init__(self, now: Now, roles: Iterable[str] = ("catalog", "order")) -> None:
        self.holders = {role: LeaseHolder(now) for role in roles}

    def valid(self, role: str) -> bool:
        return self.holders[role].valid()

    def state(self) -> dict[str, Any]:
        return {role: holder.state() for role, holder in self.holders.items()}

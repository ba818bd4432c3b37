"""Primary-sequenced replication: the sequencer orders every write, followers apply in order.

A write is acknowledged once every follower that is *in sync* has confirmed it. Each
follower gets a ``FollowerLink`` that ships entries strictly in sequence order, batching
whatever queued up while the previous request was in flight (one request per follower at a
time). A follower that has not confirmed a write within REPLICATION_TIMEOUT, whatever it
answered meanwhile, drops *out of sync*: writes stop waiting for it, and before such a write
is acknowledged the front end is told not to read from that follower
(``FrontendNotice.written(..., lagging)``), so no client can read the old value from it.
The sequencer heartbeats every follower; a follower that answers again is sent what it
missed, from the sequencer's log, by sequence number (a follower that reports a gap gets
the same), and once it has everything it is back in sync and the front end is told it may
read from it again. So catch-up happens whenever a gap is seen, not only at start-up.

A write that misses its majority (the sequencer is cut off from its followers) is not
acknowledged. Until a majority has it, the sequencer serves no reads (``Sequencer.settled``):
a replica that takes over may never have had it. A follower that lacks only such writes has
every acknowledged one, so the front end may go on reading from it (``readable`` in
``Sequencer.followers``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from bazar.client import ReplicaClient
from bazar.config import Replica
from bazar.errors import BazarError, Unavailable
from bazar.protocol import REPLICATE_PATH
from bazar.protocol.messages import Replicate
from bazar.storage import Entry, Replayed, ReplicatedStore

MAX_BATCH = 500
# Bytes of entries per request: well under what a replica accepts in one body (web.MAX_BODY).
MAX_BATCH_BYTES = 48 * 1024
REPLICATION_TIMEOUT = 2.0  # seconds a follower may take to confirm before it drops out of sync
HEARTBEAT_INTERVAL = 0.1  # seconds between heartbeats to each follower (see failover.ELECTION_TIMEOUT)

log = Logger()


class FrontendNotice(Protocol):
    """What the sequencer tells the front end: writes (with lagging followers), recoveries,
    and, from a replica just elected, that it sequences writes now."""

    def written(self, seq: int, entry: Entry, lagging: list[str]) -> Deferred[Any]: ...

    def written_many(self, writes: list[tuple[int, Entry]]) -> Deferred[Any]:
        """``written`` for one batch's writes (none lagging), told in one push."""
        ...

    def caught_up(self, follower: str, seq: int) -> Deferred[Any]: ...

    def announce(self, sequencer: str, seq: int) -> Deferred[Any]: ...


class FollowerLink:
    """Ships the sequencer's log to one follower, in order, one request at a time.

    Every request carries a gap-free run of entries that starts right after the last one the
    follower is known to hold (``confirmed``): the writes queued here when they continue it,
    else entries read from the log (a follower far behind, or one that lost its data), cut to
    MAX_BATCH and MAX_BATCH_BYTES. A follower refuses a batch with a gap, so a batch with one
    would be refused, and resent, forever.

    Liveness: a write waits for a follower at most REPLICATION_TIMEOUT. If the follower has
    not confirmed it by then, whatever it answered meanwhile (nothing, errors, or refusals that
    leave its position where it was), it drops out of sync and the write stops waiting. A
    request that moved nothing forward is not sent again before the next heartbeat, so a
    follower that keeps refusing costs one request per heartbeat, not a loop.
    """

    def __init__(
        self, follower: Replica, client: ReplicaClient, store: ReplicatedStore, clock: IReactorTime
    ) -> None:
        self.follower = follower
        self.client = client
        self.store = store
        self.clock = clock
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
        at once for a follower out of sync, or as soon as it drops out (the write does not wait)."""
        if not self.in_sync:
            return succeed(False)
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
            return self.heartbeat().addCallback(lambda _: self.confirmed >= seq)
        d = self._wait(seq)
        self.heartbeat()  # or, if a call is in flight, its answer (and any catch-up) decides
        return d

    def heartbeat(self) -> Deferred[bool]:
        """Tell the follower the sequencer's last_seq; it answers with its own, and gets
        whatever it lacks. Fires with whether the follower is in sync afterwards."""
        if self._sending:
            return succeed(self.in_sync)
        return self._start(heartbeat=True).addCallback(lambda _: self.in_sync)

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
        """Out of sync: writes stop waiting for it; the entries stay in the log for when it is back."""
        if self.in_sync:
            log.warn("{follower} is out of sync: {message}", follower=self.follower.name, message=message)
        self.in_sync = False
        self._queue.clear()
        self._settle(lambda seq: False)

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
        message = Replicate(batch, self.store.applied_seq, epoch, sequencer)
        response = yield self.client.request(
            "POST", self.follower, REPLICATE_PATH, message.body(), timeout=REPLICATION_TIMEOUT
        )
        answer = response.json() if response.code in (200, 409) else {}
        if "stale_epoch" in answer:
            # The follower knows a newer epoch: another replica sequences writes now.
            self.on_stale_epoch(answer["stale_epoch"], answer["sequencer"])
            raise Unavailable(
                f"{self.follower.name} follows epoch {answer['stale_epoch']}: this sequencer was replaced"
            )
        if "last_seq" not in answer:
            response.raise_for_error()
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
        if not self.in_sync and not self._queue and self.confirmed >= self.store.applied_seq:
            log.info("{follower} is back in sync at {seq}", follower=self.follower.name, seq=self.confirmed)
            self.in_sync = True
            self.on_caught_up(self.follower.name, self.confirmed)
        if result:
            self._start(heartbeat=False)


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


class Sequencer:
    """Runs a write at the sequencer, replicates it to the followers in sync, tells the front end."""

    def __init__(
        self,
        store: ReplicatedStore,
        links: list[FollowerLink],
        notice: FrontendNotice | None = None,
        quorum: int = 1,
    ) -> None:
        """``quorum``: how many replicas, this one included, must have a write before it is
        acknowledged (a majority, so that a replaced sequencer cannot acknowledge one)."""
        self.store = store
        self.links = links
        self.notice = notice
        self.quorum = quorum
        self.retired = False  # set when another replica took over: start no new write
        # The newest write a majority is known to have (Raft's commit index): at the start, as
        # far as anyone can tell, all this replica holds; then each acknowledged write.
        self.committed = store.applied_seq
        # The newest write that missed its majority here (0: none), until a majority has it.
        self.unconfirmed = 0
        # Writes of the batch being handed out (``bazar.group_commit``), to tell the front end
        # of in one push at its end: (seq, entry, fired when told).
        self._untold: list[tuple[int, Entry, Deferred[Any]]] = []
        self._running: list[Deferred[None]] = []  # one per write not finished yet, fired when it is
        for link in links:
            link.on_caught_up = self._caught_up

    def write(self, sequenced: Deferred[tuple[int, Entry]]) -> Deferred[Entry]:
        """``sequenced`` is the store's write, just submitted; the entry, once every follower
        in sync has it and the front end has dropped its cached copies and stopped reading
        from the rest (see ``_write``). Until then the write counts as running (``running``)."""
        finished: Deferred[None] = Deferred()
        self._running.append(finished)

        def done(result: Any) -> Any:
            self._running.remove(finished)
            finished.callback(None)
            return result

        return self._write(sequenced).addBoth(done)

    def running(self) -> Deferred[None] | None:
        """None if no write is running; else fires once every write running now has finished
        (acknowledged or not), whatever starts meanwhile."""
        if not self._running:
            return None
        waits: list[Deferred[None]] = []
        for finished in self._running:
            wait: Deferred[None] = Deferred()
            finished.addCallback(wait.callback)  # fires ``wait`` with None, passes None on
            waits.append(wait)
        return gatherResults(waits).addCallback(lambda _: None)

    @inlineCallbacks
    def _write(self, sequenced: Deferred[tuple[int, Entry]]) -> Any:
        """What ``write`` waits for.

        The front end is told which keys changed while the followers apply the write, not
        after: it stores no answer older than the write from then on (see
        ``bazar.readthrough``), so both take one round trip instead of two. Only a follower
        that failed to confirm costs a second message, before the acknowledgement."""
        try:
            seq, entry = yield sequenced
        except Replayed as replay:
            # A retry of a keyed write: answer with the original, once the followers in sync
            # are known to have it (the original's acknowledgement may never have been sent).
            seq, entry = replay.seq, replay.entry
            told = self._tell(seq, entry, [])
            confirmed = yield gatherResults([link.confirm(seq) for link in self.links])
        else:
            told = self._tell_written(seq, entry)
            confirmed = yield gatherResults([link.ship(seq, entry) for link in self.links])
        lagging = [link.follower.name for link, ok in zip(self.links, confirmed, strict=True) if not ok]
        have_it = 1 + len(self.links) - len(lagging)
        if have_it < self.quorum:
            self.unconfirmed = max(self.unconfirmed, seq)  # no read here shows it from now on
        else:
            self.committed = max(self.committed, seq)
        yield told
        if have_it < self.quorum:
            raise Unavailable(
                f"only {have_it} of {len(self.links) + 1} replicas have the write (a majority must): "
                "not acknowledged (it takes effect only if a majority gets it later)"
            )
        if lagging:
            yield self._tell(seq, entry, lagging)
        return entry

    def settled(self) -> bool:
        """Whether a majority has every write this sequencer committed that missed its majority.

        Such a write is in this replica's database, but if another replica takes over it
        may never have it: reads here could show a write that then never happened. So the
        sequencer is not ready for reads (``/internal/status``) and refuses them until its
        followers catch up (the heartbeats resend it) or another replica replaces it."""
        if self.unconfirmed:
            have_it = 1 + sum(1 for link in self.links if link.confirmed >= self.unconfirmed)
            if have_it >= self.quorum:
                self.committed = max(self.committed, self.unconfirmed)
                self.unconfirmed = 0
        return not self.unconfirmed

    def _tell(self, seq: int, entry: Entry, lagging: list[str]) -> Deferred[Any]:
        if self.notice is None:
            return succeed(None)
        return self.notice.written(seq, entry, lagging)

    def _tell_written(self, seq: int, entry: Entry) -> Deferred[Any]:
        """``_tell`` for a new write: with the rest of its group commit's batch, in one push."""
        if self.notice is None:
            return succeed(None)
        told: Deferred[Any] = Deferred()
        self._untold.append((seq, entry, told))
        self.store.commits.delivery.send(self._tell_untold)
        return told

    def _tell_untold(self) -> None:
        untold, self._untold = self._untold, []
        if not untold or self.notice is None:
            return
        if len(untold) == 1:
            seq, entry, _ = untold[0]
            d = self.notice.written(seq, entry, [])
        else:
            d = self.notice.written_many([(seq, entry) for seq, entry, _ in untold])

        def fan_out(result: Any) -> None:
            for _, _, told in untold:
                if isinstance(result, Failure):
                    told.errback(result)
                else:
                    told.callback(result)

        d.addBoth(fan_out)

    def heartbeat(self) -> Deferred[Any]:
        """Heartbeat every follower (which also starts any catch-up)."""
        return gatherResults([link.heartbeat() for link in self.links])

    def _caught_up(self, follower: str, seq: int) -> None:
        """Tell the front end it may read from ``follower`` again (its status probe would, too)."""
        if self.notice is not None:
            d = self.notice.caught_up(follower, seq)
            d.addErrback(
                lambda f: log.warn("could not tell the front end: {error}", error=f.getErrorMessage())
            )

    def followers(self) -> dict[str, dict[str, Any]]:
        """Each follower's confirmed sequence number, whether writes wait for it, and whether
        it may be read from: it has every acknowledged write (``committed``). One out of sync
        has them when only writes no majority has passed it by (this sequencer is cut off);
        one in sync may not, just after a takeover: it voted for this sequencer while behind,
        and is being caught up (writes wait for it meanwhile)."""
        self.settled()  # brings ``committed`` up to date
        return {
            link.follower.name: {
                "confirmed": link.confirmed,
                "in_sync": link.in_sync,
                "readable": link.confirmed >= self.committed,
            }
            for link in self.links
        }


class Heartbeats(TimerService):
    """Runs ``Sequencer.heartbeat`` every ``interval`` seconds while the sequencer runs."""

    def __init__(
        self, sequencer: Sequencer, clock: IReactorTime, interval: float = HEARTBEAT_INTERVAL
    ) -> None:
        super().__init__(interval, self._beat, sequencer)
        self.clock = clock
        self.interval = interval

    @staticmethod
    def _beat(sequencer: Sequencer) -> None:
        # Not returned: the loop must not wait for the slowest follower (up to its deadline),
        # or the others' heartbeats, and their catch-up, would wait too. A link whose request
        # is still in flight skips the beat by itself.
        sequencer.heartbeat().addErrback(lambda f: log.failure("heartbeat failed", f))

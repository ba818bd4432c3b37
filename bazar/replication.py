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
every acknowledged one (``readable`` in ``Sequencer.followers``).

Reads are served under leases (``bazar.leases``): a follower only while its read lease, renewed
by every call of its ``FollowerLink``, runs (one drops out of sync only once it has run out),
and the sequencer only while no other can have been elected (``Sequencer.leads``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from bazar.errors import Unavailable
from bazar.follower_link import FollowerLink
from bazar.leases import leader_lease
from bazar.storage import Entry, Replayed, ReplicatedStore

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


class Sequencer:
    """Runs a write at the sequencer, replicates it to the followers in sync, tells the front end."""

    def __init__(
        self,
        store: ReplicatedStore,
        links: list[FollowerLink],
        notice: FrontendNotice | None = None,
        quorum: int = 1,
        now: Callable[[], float] | None = None,
        from_disk: bool = False,
    ) -> None:
        """``quorum``: how many replicas, this one included, must have a write before it is
        acknowledged (a majority, so that a replaced sequencer cannot acknowledge one);
        ``now``: the monotonic clock the followers' leases are counted on (``leads``).
        ``from_disk``: this replica sequences because its disk says so (it restarted), not
        because it was just elected; its newest writes may be ones it never sent (it stopped
        first), which a replica elected meanwhile never had, so it serves no read until a
        majority has them all (``settled``)."""
        self.store = store
        self.links = links
        self.notice = notice
        self.quorum = quorum
        self.retired = False  # set when another replica took over: start no new write
        self.now = now if now is not None else (lambda: float("-inf"))  # no Role: always leads
        # The newest write a majority is known to have (Raft's commit index): at the start, as
        # far as anyone can tell, all this replica holds; then each acknowledged write.
        self.committed = store.applied_seq
        # The newest write that missed its majority here (0: none), until a majority has it.
        self.unconfirmed = store.applied_seq if from_disk else 0
        # Writes of the batch being handed out (``bazar.group_commit``), to tell the front end
        # of in one push at its end: (seq, entry, fired when told).
        self._untold: list[tuple[int, Entry, Deferred[Any]]] = []
        self._running: list[Deferred[None]] = []  # one per write not finished yet, fired when it is
        for link in links:
            link.on_caught_up = self._caught_up
            # A follower is granted a read lease only while it has every acknowledged write.
            link.grantable = lambda confirmed: confirmed >= self.committed

    def leads(self) -> bool:
        """Whether no other sequencer can have been elected yet (``bazar.leases.leader_lease``):
        only then may this one answer reads or grant the front ends cache leases."""
        heard = [link.lease.heard_at for link in self.links]
        return self.now() < leader_lease(heard, len(self.links) + 1, self.quorum)

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

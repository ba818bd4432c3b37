"""Which replica of a role sequences its writes, in which epoch, and how another takes over.

Every replica records the current *epoch* and its sequencer durably (``meta`` table). The
sequencer sends the epoch with every replication call and heartbeat; a follower refuses a
call from an older epoch, which tells a sequencer that came back from the dead (or from a
network cut) that it has been replaced: it steps down, forgets its writes (some may never
have been acknowledged) and is sent everything again by the new sequencer. A write is
acknowledged only when a majority of the role's replicas has it, so a replaced sequencer
can never acknowledge one: that is the fencing.

A follower that has heard nothing from the sequencer for ``ELECTION_TIMEOUT`` seconds asks
its peers for their status. If the sequencer answers, nothing happens. Otherwise the
reachable replicas (with this one, at least a majority) are ranked by last sequence
number, then by their order in the config: that is the deterministic choice, and only the
winner acts. It proposes epoch + 1 to the others; once a majority (itself included)
accepted, it is the sequencer. Having the highest sequence number of a majority, it has
every acknowledged write. A follower that joins a new epoch checks that its last entry is
also the new sequencer's; if not, it forgets its writes and is sent them again. A replica
that forgot its writes votes as if it still held them, and stands for no epoch, until a
sequencer has sent it everything again (``Role.holds``).
"""

from __future__ import annotations

import json
import uuid
from random import Random
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, DeferredList, DeferredLock, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bazar.client import ReplicaClient
from bazar.config import Replica
from bazar.follower_link import FollowerLink
from bazar.leases import VOTE_GUARD, FollowerLease, LeaseHolder, Now
from bazar.protocol import ELECT_PATH, STATUS_PATH, log_path
from bazar.protocol.messages import Elect
from bazar.replication import FrontendNotice, Heartbeats, Sequencer
from bazar.storage import ReplicatedStore

# Seconds without a word from the sequencer (it heartbeats every 0.1 s: HEARTBEAT_INTERVAL)
# before a follower tries to replace it: each follower waits a random time from this to 1.5
# times this, drawn anew after every try, so that two rarely try at once (etcd and Raft do
# the same with 100 ms heartbeats and a 1 s timeout).
ELECTION_TIMEOUT = 0.6
ELECTION_CHECK = 0.1  # how often a follower looks
# Seconds a peer may take to answer during an election. The silent sequencer is asked too,
# and an answer from it calls the election off: loaded, it still answers in milliseconds.
PEER_TIMEOUT = 0.3
# Until a sequencer has reached it once, a replica waits this long instead: seven processes
# starting at once on two cores can take longer than ELECTION_TIMEOUT to reach each other, and
# replacing a sequencer that is only starting up is an election no fault caused.
STARTUP_GRACE = 3.0

log = Logger()


def majority(replicas: int) -> int:
    return replicas // 2 + 1


class Role:
    """This replica's view of its role: the epoch, its sequencer, and whether that is us."""

    def __init__(
        self,
        replica: Replica,
        replicas: tuple[Replica, ...],
        store: ReplicatedStore,
        client: ReplicaClient,
        notice: FrontendNotice | None,
        clock: IReactorTime,
        now: Now | None = None,
    ) -> None:
        """``now``: the monotonic clock leases are counted on (``bazar.leases``; by default
        ``clock``'s)."""
        self.replica = replica
        self.replicas = replicas
        self.store = store
        self.client = client
        self.notice = notice
        self.clock = clock
        self.epoch = store.epoch or 1
        self.sequencer = self._named(store.epoch_sequencer or replicas[0].name)
        self.writer: Sequencer | None = None
        self.heartbeats: Heartbeats | None = None
        self.now = now if now is not None else clock.seconds
        self.last_heard = clock.seconds()
        # When it last heard from its sequencer, on ``now``: it votes for no new epoch within
        # VOTE_GUARD of that (a restart takes longer).
        self.heard_at = float("-inf")
        # This replica's read lease, as a follower, from its sequencer (``bazar.leases``).
        self.read_lease = LeaseHolder(self.now)
        self.heard_once = False  # whether a sequencer (perhaps this one) has run since start-up
        # The newest epoch whose sequencer's log this replica's log is known to be part of.
        self.verified_epoch = self.epoch
        # From the moment a replaced sequencer steps down until it has forgotten its writes:
        # it may hold writes no majority has, and is no follower (whose writes a majority
        # has), so it serves no read (``ReplicaApp.check_readable``) and is not ready.
        self.forgetting = False
        self.electing = False
        self._lock = DeferredLock()  # one change of role at a time
        # Held while applying a sequencer's entries and while voting: a vote reports what we
        # hold, and no entry of the old epoch may be confirmed after we voted for a new one.
        self.votes = DeferredLock()

    def _named(self, name: str) -> Replica:
        return next((r for r in self.replicas if r.name == name), self.replicas[0])

    # -- leading ---------------------------------------------------------------------------

    def start(self) -> None:
        """At start-up: lead if the recorded epoch says so (a majority will tell us otherwise)."""
        if self.sequencer == self.replica:
            self._lead()

    def stop(self) -> None:
        self._stop_leading()

    def _lead(
        self,
        voters: frozenset[str] | None = None,
        previous: str | None = None,
        asked_at: float = float("-inf"),
    ) -> None:
        """Start sequencing writes. With ``voters`` (we were just elected), the followers that
        did not vote are presumed out of sync: the old sequencer, silent, is the usual one, and
        writes must not wait out a deadline for it. The heartbeats bring each back, and until
        then every write names it lagging to the front end. Each other non-voter may hold a
        read lease from the ``previous`` sequencer, which writes wait out (one term at most).
        A voter refuses other votes as if it had heard from us when we asked (``asked_at``):
        this sequencer's own lease runs from then (``Sequencer.leads``). Without ``voters`` (we
        lead because our disk says so), no read is served until a majority has every write we
        hold."""
        self.read_lease.lapse()  # a sequencer answers reads under its own lease (``Sequencer.leads``)
        token = uuid.uuid4().hex[:16]
        links = [
            FollowerLink(r, self.client, self.store, self.clock, FollowerLease(token, self.now))
            for r in self.replicas
            if r != self.replica
        ]
        for link in links:
            link.epoch = (self.epoch, self.replica.name)
            link.on_stale_epoch = self.superseded
            link.in_sync = voters is None or link.follower.name in voters
            if voters is not None and link.in_sync:
                link.lease.heard_at = asked_at
            if not link.in_sync:
                if link.follower.name == previous:
                    link.lease.none()  # it granted leases, and held none
                link.lease.revoke()
        quorum = majority(len(self.replicas))
        self.writer = Sequencer(
            self.store, links, self.notice, quorum=quorum, now=self.now, from_disk=voters is None
        )
        self.heard_once = True  # it has been a sequencer: its followers are up
        self.heartbeats = Heartbeats(self.writer, self.clock)
        self.heartbeats.startService()
        log.info("{replica} sequences writes in epoch {epoch}", replica=self.replica.name, epoch=self.epoch)
        if self.notice is not None and voters is not None:
            # The front end learns at once where writes go now, rather than from its next probe.
            self.notice.announce(self.replica.name, self.store.applied_seq).addErrback(
                lambda f: log.info("could not tell the front end: {error}", error=f.getErrorMessage())
            )

    def _stop_leading(self) -> None:
        if self.heartbeats is not None and self.heartbeats.running:
            self.heartbeats.stopService()
        if self.writer is not None:
            self.writer.retired = True
        self.heartbeats = None
        self.writer = None

    # -- learning of a newer epoch -----------------------------------------------------------

    def superseded(self, epoch: int, sequencer: str) -> Deferred[None]:
        return self.adopt(epoch, sequencer)

    def adopt(
        self,
        epoch: int,
        sequencer: str,
        voters: frozenset[str] | None = None,
        asked_at: float = float("-inf"),
    ) -> Deferred[None]:
        """Join ``epoch``, whose sequencer is ``sequencer`` (perhaps us, elected by ``voters``,
        asked for their votes at ``asked_at``), if it is newer."""
        return self._lock.run(self._adopt, epoch, sequencer, voters, asked_at)

    @inlineCallbacks
    def _adopt(
        self,
        epoch: int,
        sequencer: str,
        voters: frozenset[str] | None = None,
        asked_at: float = float("-inf"),
    ) -> Any:
        if epoch <= self.epoch:
            return
        replaced = self.writer is not None and sequencer != self.replica.name
        if replaced:
            self.forgetting = True  # before its writer is gone: no read in between
        self._stop_leading()
        previous = self.sequencer.name
        self.epoch, self.sequencer = epoch, self._named(sequencer)
        self.last_heard = self.clock.seconds()
        yield self.store.save_epoch(epoch, sequencer)
        log.info(
            "{replica}: epoch {epoch}, sequencer {sequencer}",
            replica=self.replica.name,
            epoch=epoch,
            sequencer=sequencer,
        )
        if replaced:
            # We may hold writes that no majority ever had: forget them all and be sent
            # everything by the new sequencer.
            log.warn("{replica} was replaced as sequencer: resynchronizing", replica=self.replica.name)
            self.read_lease.lapse()
            yield self.store.wipe()
            self.forgetting = False
            self.verified_epoch = epoch
        if sequencer == self.replica.name:
            self.verified_epoch = epoch
            self._lead(voters, previous, asked_at)

    @inlineCallbacks
    def verify(self, epoch: int) -> Any:
        """Before following a new epoch's sequencer: is our log part of its log? If not
        (we hold a write it does not), forget our writes and let it send them all."""
        if epoch <= self.verified_epoch:
            return
        seq = self.store.applied_seq
        if seq > 0:
            mine = yield self.store.entry_at(seq)
            response = yield self.client.request(
                "GET", self.sequencer, log_path(after=seq - 1, limit=1), timeout=PEER_TIMEOUT
            )
            theirs = response.json().get("entries", []) if response.code == 200 else None
            if theirs is None:
                return  # ask again with the next heartbeat
            if not theirs or theirs[0][0] != seq or _canonical(theirs[0][1]) != _canonical(mine):
                log.warn(
                    "{replica}'s log diverged from the sequencer's: resynchronizing",
                    replica=self.replica.name,
                )
                self.read_lease.lapse()
                yield self.store.wipe()
        self.verified_epoch = epoch

    def holds(self) -> int:
        """The last sequence number this replica counts as holding when it votes: the one it
        held before it last forgot its writes (a replaced sequencer, a diverged log), until
        a sequencer has caught it up again. Its empty log says nothing of what was
        acknowledged, and it may have been one of the two replicas that held a write: voting
        for a candidate that lacks it would lose the write (found by the simulator)."""
        return max(self.store.applied_seq, self.store.forgot_up_to)

    def heard(self) -> None:
        self.last_heard = self.clock.seconds()
        self.heard_at = self.now()
        self.heard_once = True

    def heard_lately(self) -> bool:
        """Whether this replica heard from its sequencer within VOTE_GUARD: then it votes for
        no new epoch, nor stands in one (``bazar.leases.leader_lease`` counts on it)."""
        return self.writer is None and self.now() - self.heard_at < VOTE_GUARD

    # -- replacing a silent sequencer --------------------------------------------------------

    @inlineCallbacks
    def elect(self) -> Any:
        """Called on a follower that has not heard from the sequencer for a while."""
        if self.electing or self.writer is not None:
            return
        self.electing = True
        try:
            yield self._elect()
        finally:
            self.electing = False

    @inlineCallbacks
    def _elect(self) -> Any:
        peers = [r for r in self.replicas if r != self.replica]
        before = (self.epoch, self.last_heard)
        answers = yield DeferredList(
            [self.client.request("GET", p, STATUS_PATH, timeout=PEER_TIMEOUT) for p in peers],
            consumeErrors=True,
        )
        if (self.epoch, self.last_heard) != before:
            # While we asked, a sequencer was heard from, or we joined a newer epoch (we voted
            # for it): the answers may describe the cluster before that, so act on none.
            return
        alive = {}
        for peer, (ok, response) in zip(peers, answers, strict=True):
            if ok and response.code == 200:
                alive[peer.name] = response.json()
        newest = max(
            [(self.epoch, self.sequencer.name)] + [(s["epoch"], s["sequencer"]) for s in alive.values()]
        )
        if newest[0] > self.epoch:
            yield self.adopt(*newest)  # someone already knows a newer sequencer
            return
        current = alive.get(self.sequencer.name)
        if current is not None and current.get("sequencer") == self.sequencer.name:
            self.heard()  # it is alive; we just did not hear from it
            return
        order = {r.name: i for i, r in enumerate(self.replicas)}
        reachable = [(self.store.applied_seq, self.store.forgot_up_to, self.replica.name)] + [
            (status["last_seq"], status.get("forgot_up_to", 0), name)
            for name, status in alive.items()
            if name != self.sequencer.name
        ]
        if len(reachable) < majority(len(self.replicas)):
            return  # no majority reachable: no writes until there is one
        # A replica that forgot writes it was not sent again stands for no epoch (``holds``).
        candidates = [(seq, name) for seq, forgot, name in reachable if seq >= forgot]
        if not candidates:
            return
        best = max(candidates, key=lambda c: (c[0], -order[c[1]]))[1]
        if best != self.replica.name:
            return  # the best candidate takes over; we follow when it tells us
        if self.heard_lately():
            return
        epoch = self.epoch + 1
        voters = [p for p in peers if p.name in alive]
        asked_at = self.now()
        votes = yield DeferredList(
            [
                self.client.request(
                    "POST",
                    p,
                    ELECT_PATH,
                    Elect(epoch, self.replica.name, self.store.applied_seq).body(),
                    timeout=PEER_TIMEOUT,
                )
                for p in voters
            ],
            consumeErrors=True,
        )
        granted = frozenset(
            p.name for p, (ok, response) in zip(voters, votes, strict=True) if ok and response.code == 200
        )
        if len(granted) + 1 < majority(len(self.replicas)):
            log.info("{replica} was not elected for epoch {epoch}", replica=self.replica.name, epoch=epoch)
            return
        yield self.adopt(epoch, self.replica.name, granted, asked_at)


class Watchdog(TimerService):
    """On every replica: if the sequencer has been silent too long, try to replace it.

    How long is drawn at random from ELECTION_TIMEOUT to 1.5 times that (``random``: a seeded
    ``Random`` in tests), anew after every try; STARTUP_GRACE until a sequencer has reached
    this replica (or it was one) once."""

    def __init__(self, role: Role, clock: IReactorTime, random: Random | None = None) -> None:
        super().__init__(ELECTION_CHECK, self.check)
        self.clock = clock
        self.role = role
        self.random = random or Random()
        self.timeout = self._draw()

    def _draw(self) -> float:
        return ELECTION_TIMEOUT * (1 + 0.5 * self.random.random())

    def check(self) -> None:
        role = self.role
        timeout = self.timeout if role.heard_once else max(self.timeout, STARTUP_GRACE)
        if role.writer is None and role.clock.seconds() - role.last_heard > timeout:
            self.timeout = self._draw()
            role.elect().addErrback(lambda f: log.failure("election failed", f))


def _canonical(entry: Any) -> str:
    return json.dumps(entry, sort_keys=True)

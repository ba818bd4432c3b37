"""Which replicas the front end may use, from active probes, from every call, and from the sequencers.

A replica is *up* when its last probe of ``/internal/status`` answered 200 with ``ready``
(a follower is ready only while the sequencer recently confirmed it has every write); a
call that cannot reach it marks it down at once, and only a probe brings it back. One a
probe found down is probed again sooner than the next round (``HealthProbe``), so one that
was merely not listening or not ready yet at start-up is used again about ``RETRY_AFTER``
after it is, not a whole ``probe_interval`` later. A follower is *lagging* when its
sequencer says so: pushed before the sequencer acknowledges a write that follower missed,
and read from the sequencer's own status in every probe. Each such report carries the
sequencer's sequence number, so an older report (a probe answer that was on its way while a
newer push arrived) never overrides a newer one.

Reads go only to replicas that are up and not lagging; writes to replicas that are up, the
role's sequencer first (as the probes last saw it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from bazar.client import ReplicaClient, ReplicaResponse
from bazar.config import Replica
from bazar.errors import NotSent
from bazar.protocol import STATUS_PATH

# Why the front end does not read from a replica, in words for people watching the cluster
# (``/bazar/cluster``); the log adds the technical detail (the error, the status).
NO_CONNECTION = "unreachable: no connection could be made"
STOPPED_ANSWERING = "unreachable: it stopped answering"
CATCHING_UP = "not ready: catching up with its sequencer"
# The sequence number of a lagging mark no sequencer has made (after a takeover): any report wins.
UNKNOWN_SEQ = -1
NO_MAJORITY = "not ready: its latest writes are not yet on a majority of its role"
OLD_EPOCH = "in an old epoch: another replica has taken over its role's writes"
STATUS_FAILED = "not ready: its status check failed"
TURNED_A_READ_AWAY = "not ready: it could not serve a read"
NOT_PROBED = "not up yet: no probe has found it ready yet"

# Seconds from a probe that found a replica down to its first quick re-probe; each further
# one waits twice as long, until the wait would reach the probe interval (then only the
# rounds probe it). So a replica that was not ready at the first probe is used again a
# tenth of a second after it is, in the first few tenths, and a replica that stays down
# costs log2(probe_interval / 0.1) quick probes, 4 by default (a refused connection, or a
# status call of a few milliseconds).
RETRY_AFTER = 0.1

log = Logger()


def unreachable(failure: Failure) -> str:
    """The plain reason for a call that failed: it never connected, or it got no answer."""
    return NO_CONNECTION if failure.check(NotSent) else STOPPED_ANSWERING


class Health:
    """The front end's view of every replica; unknown ones count as up until shown otherwise."""

    def __init__(self, replicas: Iterable[Replica]) -> None:
        replicas = list(replicas)
        self._roles: dict[str, str] = {r.name: r.role for r in replicas}
        self._seen_up: set[str] = set()  # replicas once marked up (by a probe that found them ready)
        self._down: dict[str, str] = {}  # the replicas marked down -> why
        # name -> (the sequencer's seq, lagging?, pushed, or shown to have that seq?)
        self._lagging: dict[str, tuple[int, bool, bool]] = {}
        self._epochs: dict[str, int] = {}  # role -> the newest epoch any of its replicas reported
        self._sequencers: dict[str, tuple[int, str]] = {}  # role -> (epoch, replica that sequences in it)
        self._all_up_said = False  # whether the log said every replica is up (once)
        # Called with (role, previous epoch, new epoch) when a newer epoch is first reported.
        self.on_new_epoch: Callable[[str, int, int], object] = lambda role, previous, epoch: None

    def current_epoch(self, role: str, reported: int) -> bool:
        """Note that a replica of ``role`` is in epoch ``reported``: is that the newest one? A
        replica in an older epoch (a replaced sequencer, or a follower that has not heard of
        the new one) may lack acknowledged writes, so it is not read from."""
        newest = self._epochs.get(role, 0)
        if reported > newest:
            self._epochs[role] = reported
            if newest:
                # What the replaced sequencer said of its followers no longer counts. Nor can
                # a replica be read from before the new sequencer says it may: one that voted
                # for it may lack writes acknowledged before the takeover (it was behind, and
                # the new sequencer is only catching it up). Each stays unread until the new
                # sequencer reports it readable (probe or push; any report beats UNKNOWN_SEQ)
                # or it turns out to be that sequencer.
                for name in [n for n, r in self._roles.items() if r == role]:
                    self._lagging[name] = (UNKNOWN_SEQ, True, False)
            self.on_new_epoch(role, newest, reported)
            return True
        return reported == newest

    def report_sequencer(self, role: str, epoch: int, name: str) -> None:
        """``name`` said it sequences ``role``'s writes in ``epoch``."""
        if epoch >= self._sequencers.get(role, (0, ""))[0]:
            self._sequencers[role] = (epoch, name)

    def sequencer(self, role: str) -> str | None:
        """The replica that sequences ``role``'s writes in the newest epoch, if one said so."""
        epoch, name = self._sequencers.get(role, (0, ""))
        return name if name and epoch == self._epochs.get(role, 0) else None

    def is_up(self, replica: Replica) -> bool:
        return replica.name not in self._down

    def readable(self, replica: Replica) -> bool:
        return self.is_up(replica) and not self.is_lagging(replica.name)

    def unreported(self, replica: Replica) -> bool:
        """Up, but in a new epoch whose sequencer has not reported on it yet (it may be that
        sequencer: only an answer that says so is used)."""
        return self.is_up(replica) and self._lagging.get(replica.name, (0, False))[0] == UNKNOWN_SEQ

    def is_lagging(self, name: str) -> bool:
        return self._lagging.get(name, (0, False))[1]

    def why_unreadable(self, replica: Replica) -> str | None:
        """Why reads skip ``replica`` (None: they do not), for people watching the cluster."""
        if not self.is_up(replica):
            return self._down[replica.name] or self._down_state(replica.name)
        if self.is_lagging(replica.name):
            seq = self._lagging[replica.name][0]
            if seq == UNKNOWN_SEQ:
                return "not known to have every write yet: a new sequencer has not reported on it"
            return f"lagging: its sequencer reported it behind at write {seq}"
        return None

    def why_unhealthy(self, replica: Replica) -> str | None:
        """Why ``/bazar/cluster`` calls ``replica`` unhealthy (None: it does not): why reads skip
        it, or that no probe has found it ready yet. Calls go to a replica nothing is known of
        (there is nothing better to do), but until a probe has answered, its first one may yet
        find it refusing or not ready: it is not called healthy, so whoever waits for a
        healthy cluster (``bazar.launch``) waits for every front end's probes."""
        why = self.why_unreadable(replica)
        if why is None and replica.name not in self._seen_up:
            return NOT_PROBED
        return why

    def _down_state(self, name: str) -> str:
        return "down" if name in self._seen_up else "not up yet"

    def mark(self, replica: Replica, up: bool, why: str = "", detail: str = "") -> None:
        """Up or down from now on; ``why`` (plain words) is what ``why_unreadable`` shows, and
        the log adds ``detail``. The log says "not up yet" for a replica never seen up (at
        start-up, before its sequencer has reached it), and "down" only for one that was."""
        if self.is_up(replica) != up:
            state = "up" if up else self._down_state(replica.name)
            log.info(
                "{replica} is {state}{why}{detail}",
                replica=replica.name,
                state=state,
                why=f": {why}" if why else "",
                detail=f" ({detail})" if detail else "",
            )
        if up:
            self._seen_up.add(replica.name)
            self._down.pop(replica.name, None)
            if not self._all_up_said and not self._down and self._seen_up == set(self._roles):
                # The line to wait for after a start (its later losses and returns are above).
                self._all_up_said = True
                log.info("every replica is up: this front end is ready")
        else:
            self._down[replica.name] = why

    def report_lagging(
        self, name: str, lagging: bool, seq: int, *, pushed: bool, confirmed: int = -1
    ) -> None:
        """A sequencer's word on a follower at sequence number ``seq``. A push (sent before
        an acknowledgement) wins over a probe answer of the same ``seq``, which may be older,
        unless that answer says the follower ``confirmed`` ``seq``: then it has everything up
        to ``seq``, however old the answer. Of two pushes of the same ``seq``, a caught-up one
        wins for the same reason: the write ``seq``'s lagging push was decided before the
        follower caught up (the two race, and either may arrive first)."""
        known_seq, _, known_pushed = self._lagging.get(name, (-1, False, False))
        has_everything = not lagging and confirmed >= seq
        if seq > known_seq or (
            seq == known_seq and (has_everything or (pushed and (not known_pushed or not lagging)))
        ):
            if self.is_lagging(name) != lagging:
                log.info("{name} is {state}", name=name, state="lagging" if lagging else "in sync again")
            self._lagging[name] = (seq, lagging, pushed or has_everything)


class HealthProbe(TimerService):
    """Probes every replica every ``interval`` seconds, and one a probe found down sooner.

    A probe that finds a replica down (refused, not ready, in an old epoch, ...) probes it
    again ``retry_after`` seconds later, then twice as long after each further such probe,
    while the wait is shorter than ``interval``. At start-up a front end's first probe may
    come before a replica listens (or is ready); without this it stayed down a whole
    interval after it was ready, and the role's writes answered 503 while none of its
    replicas was up. The waits grow because a replica that stays down (dead, or hung: each
    probe then waits ``interval`` for its answer) needs no more than the rounds. At most one
    quick re-probe per replica is scheduled or under way; the first probe that finds it up
    starts the waits over. Failure detection is not touched: a failed call still marks a
    replica down at once, and only a probe brings it back.
    """

    def __init__(
        self,
        health: Health,
        replicas: Iterable[Replica],
        client: ReplicaClient,
        clock: IReactorTime,
        interval: float,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        super().__init__(interval, self.probe_all)
        self.clock = clock  # TimerService's, typed Optional there
        self._time = clock
        self.health = health
        self.replicas = list(replicas)
        self.client = client
        self.interval = interval
        self.retry_after = retry_after
        self._waits: dict[str, float] = {}  # replica -> the wait before its next quick re-probe
        # replica -> its quick re-probe's call, kept until that probe has answered (at most one)
        self._retries: dict[str, IDelayedCall] = {}

    def stopService(self) -> Deferred[None] | None:
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()
        return super().stopService()

    def probe_all(self) -> Deferred[Any]:
        return DeferredList([self.probe(r) for r in self.replicas], consumeErrors=True)

    def probe(self, replica: Replica, retry: bool = False) -> Deferred[bool | Failure]:
        """Probe ``replica``; its Deferred fires with whether it found it up. ``retry``: this
        is its quick re-probe."""
        d = self.client.request("GET", replica, STATUS_PATH, timeout=self.interval)
        d.addCallbacks(self._answered, self._unreachable, callbackArgs=(replica,), errbackArgs=(replica,))
        d.addBoth(self._then, replica, retry)
        return d

    def _then(self, result: bool | Failure, replica: Replica, retry: bool) -> bool | Failure:
        """After a probe (``result``: whether it found ``replica`` up, or how reading its answer
        failed): when, if at all, to probe it again before the next round."""
        name = replica.name
        up = result is True
        if retry:
            self._retries.pop(name, None)
        if up:
            self._waits.pop(name, None)
        elif name not in self._retries and self.running:
            wait = self._waits.get(name, self.retry_after)
            if wait < self.interval:
                self._waits[name] = 2 * wait
                self._retries[name] = self._time.callLater(wait, self.probe, replica, True)
        return result

    def _answered(self, response: ReplicaResponse, replica: Replica) -> bool:
        try:
            status = response.json() if response.code == 200 else {}
        except ValueError:
            status = {}
        ready = bool(status.get("ready", False))
        epoch = int(status.get("epoch", 1))
        current = self.health.current_epoch(replica.role, epoch)
        if not status:
            why = STATUS_FAILED
        elif not current:
            why = OLD_EPOCH
        elif not ready:
            why = NO_MAJORITY if status.get("sequencer") == replica.name else CATCHING_UP
        else:
            why = ""
        detail = f"status {response.code}, ready {ready}, epoch {epoch}" if why else ""
        self.health.mark(replica, not why, why, detail)
        if not current:
            return False
        if status.get("sequencer") == replica.name:
            # The sequencer has every write by definition (after a failover, perhaps one that
            # was reported lagging before it took over).
            self.health.report_lagging(replica.name, False, status["last_seq"], pushed=True)
            self.health.report_sequencer(replica.role, int(status.get("epoch", 1)), replica.name)
        for name, follower in status.get("followers", {}).items():
            self.health.report_lagging(
                name,
                not follower["readable"],
                status["last_seq"],
                pushed=False,
                confirmed=follower.get("confirmed", -1),
            )
        return not why

    def _unreachable(self, failure: Failure, replica: Replica) -> bool:
        self.health.mark(replica, False, unreachable(failure), failure.getErrorMessage())
        return False

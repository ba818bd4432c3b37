"""Which replicas the front end may use, from active probes, from every call, and from the sequencers.

A replica is *up* when its last probe of ``/internal/status`` answered 200 with ``ready``
(a follower is ready only while the sequencer recently confirmed it has every write); a
call that cannot reach it marks it down at once, and only a probe brings it back. A
follower is *lagging* when its sequencer says so: pushed before the sequencer acknowledges a
write that follower missed, and read from the sequencer's own status in every probe. Each
such report carries the sequencer's sequence number, so an older report (a probe answer that
was on its way while a newer push arrived) never overrides a newer one.

Reads go only to replicas that are up and not lagging; writes to replicas that are up, the
role's sequencer first (as the probes last saw it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
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
    """Probes every replica every ``interval`` seconds."""

    def __init__(
        self,
        health: Health,
        replicas: Iterable[Replica],
        client: ReplicaClient,
        clock: IReactorTime,
        interval: float,
    ) -> None:
        super().__init__(interval, self.probe_all)
        self.clock = clock
        self.health = health
        self.replicas = list(replicas)
        self.client = client
        self.interval = interval

    def probe_all(self) -> Deferred[Any]:
        return DeferredList([self.probe(r) for r in self.replicas], consumeErrors=True)

    def probe(self, replica: Replica) -> Deferred[None]:
        d = self.client.request("GET", replica, STATUS_PATH, timeout=self.interval)
        d.addCallbacks(self._answered, self._unreachable, callbackArgs=(replica,), errbackArgs=(replica,))
        return d

    def _answered(self, response: ReplicaResponse, replica: Replica) -> None:
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
            return
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

    def _unreachable(self, failure: Failure, replica: Replica) -> None:
        self.health.mark(replica, False, unreachable(failure), failure.getErrorMessage())

"""Which replica the front end reads from and writes to, and what it does when one fails.

Reads go to the next readable replica of the role in turn, writes to the role's sequencer
first (``bazar.roundrobin.SequencerFirst``); a replica that cannot be reached is marked down
in ``Health`` (its probe says when it may be used again) and the call goes on to the next.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from bazar.client import ReplicaClient, ReplicaResponse
from bazar.config import Config, Replica
from bazar.errors import NotSent, Unavailable
from bazar.health import OLD_EPOCH, TURNED_A_READ_AWAY, Health, unreachable
from bazar.roundrobin import SequencerFirst

log = Logger()

READ_TIMEOUT = 2.0  # seconds before a read is retried on the next replica (reads take milliseconds)


class Replicas:
    """The front end's view of the replicas: their health, and the turn of each role's."""

    def __init__(self, config: Config, client: ReplicaClient) -> None:
        self.client = client
        self.all = [*config.catalog, *config.order]
        self.catalogs = SequencerFirst(config.catalog)
        self.orders = SequencerFirst(config.order)
        self.health = Health(self.all)

    def call(
        self, method: str, replica: Replica, path: str, body: Any = None, timeout: float | None = None
    ) -> Deferred[ReplicaResponse]:
        """Every call to a replica goes through here: one that cannot reach it marks it down."""

        def failed(failure: Failure) -> Failure:
            failure.trap(Unavailable)
            self.health.mark(replica, False, unreachable(failure), failure.getErrorMessage())
            return failure

        return self.client.request(method, replica, path, body, timeout=timeout).addErrback(failed)

    @inlineCallbacks
    def write(self, replicas: SequencerFirst[Replica], method: str, path: str, body: Any) -> Any:
        """Send a write to the sequencer, or else the next replica in turn, that is up. Only
        a write that never left (the connection was refused) is sent on to the next one: a
        write that may have arrived is never sent twice."""
        error: Unavailable | None = None
        role = replicas.items[0].role
        order = replicas.order(self.health.sequencer(role))
        for replica in order:
            if not self.health.is_up(replica):
                continue
            try:
                return (yield self.call(method, replica, path, body))
            except NotSent as e:
                error = e
        raise none_can_answer(role, f"{method} {path}", "take it", error, NotSent)

    @inlineCallbacks
    def read(
        self, replicas: SequencerFirst[Replica], path: str, at_least: Callable[[], int] = lambda: 0
    ) -> Any:
        """GET from the next readable replica in turn; from the one after if it cannot be
        reached, cannot serve reads now (503: e.g. a sequencer holding a write no majority
        has), or answers from an older epoch than the newest one known (it may lack writes
        acknowledged since the takeover). Its probe says when it may be read again. Just after
        a takeover, before the new sequencer has reported on anyone, only an answer from the
        sequencer itself is used. (A replica answers reads only under a lease,
        ``bazar.leases``: whichever answers has every acknowledged write.)

        ``at_least()``: the newest write an earlier answer showed (the cache's ``observed``).
        A follower shows a write as soon as it has it, before the sequencer acknowledges it;
        if the sequencer dies then, another follower still under its lease may lack that
        write, and its answer would take a later read back in time (simulator seed
        2784048756). An answer from a replica behind ``at_least()`` is not used: the next
        replica is asked (the one that showed the write, or the sequencer, has it)."""
        error: Unavailable | None = None
        rotation = replicas.rotation()
        for replica in rotation:
            if not self.health.readable(replica) and not self.health.unreported(replica):
                continue
            try:
                response = yield self.call("GET", replica, path, timeout=READ_TIMEOUT)
            except Unavailable as e:
                error = e
                continue
            if response.code == 503:
                error, why = Unavailable(response.error_message()), TURNED_A_READ_AWAY
            elif response.epoch and not self.health.current_epoch(replica.role, response.epoch):
                error = Unavailable(f"{replica.name} answered from epoch {response.epoch}, an old one")
                why = OLD_EPOCH
            elif response.seq < (shown := at_least()):
                error = Unavailable(
                    f"{replica.name} is at write {response.seq}, behind write {shown} that an answer showed"
                )
                continue  # not down: it catches up
            elif self.health.readable(replica):
                return response
            elif response.sequencer == replica.name:
                # A new epoch's sequencer, which has every write, before it reported on itself.
                self.health.report_lagging(replica.name, False, response.seq, pushed=True)
                return response
            else:
                # A follower of a new epoch, which may have voted while behind
                # (``Health.current_epoch``): not used until its sequencer reports on it. (It
                # answers only under a read lease, granted only with every acknowledged
                # write: this is the front end's own check of the same.)
                error = Unavailable(
                    f"{replica.name} is in epoch {response.epoch}, not yet known to be in sync"
                )
                continue
            self.health.mark(replica, False, why, error.message)
        raise none_can_answer(rotation[0].role, f"GET {path}", "answer", error)


def none_can_answer(
    role: str,
    call: str,
    verb: str,
    error: Unavailable | None,
    kind: type[Unavailable] = Unavailable,
) -> Unavailable:
    """The 503 for a call no replica of a role could serve, in the client's words; which
    replica failed how (``error``, the last one) goes to the log and ``/bazar/cluster``."""
    log.warn(
        "{call}: no {role} replica could {verb}: {why}",
        call=call,
        role=role,
        verb=verb,
        why=error.message if error is not None else "none is up",
    )
    return kind(f"no {role} replica can answer right now; try again shortly")

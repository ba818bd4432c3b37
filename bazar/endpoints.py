"""What is in front of every catalog and order replica, and its internal endpoints.

* ``RequireSecret``: wraps a replica's whole resource, since nothing on a replica is public,
  and hands ``/internal/...`` to the internal endpoints.
* ``ReplicaEndpoints``: the internal endpoints through which the sequencer replicates
  (``/internal/replicate``), a candidate asks for votes (``/internal/elect``), a follower
  compares logs (``/internal/log``) and anyone inspects a replica (``/internal/status``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.defer import inlineCallbacks
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from bazar.channel import Stamp
from bazar.completion import runs_to_completion
from bazar.config import Replica
from bazar.errors import BazarError, Conflict
from bazar.failover import Role
from bazar.json_errors import install_json_errors
from bazar.jsonio import json_reply, parse_json, read_body, read_json, respond, respond_json, respond_reply
from bazar.leases import VOTE_GUARD, Grant
from bazar.protocol import (
    ELECT_PATH,
    EPOCH_HEADER,
    INTERNAL_PREFIX,
    LOG_PATH,
    REPLICA_HEADER,
    REPLICATE_PATH,
    SEQ_HEADER,
    SEQUENCER_HEADER,
    STATUS_PATH,
    internal_route,
)
from bazar.protocol.messages import Elect, Replicate
from bazar.secret import check_secret
from bazar.storage import ReplicatedStore, SequenceGap
from bazar.validation import query_id

INTERNAL_SEGMENT = INTERNAL_PREFIX.strip("/").encode()  # the first segment of every internal path


class RequireSecret(Resource):
    """Refuses every request without the cluster secret before the app sees it, and hands
    ``/internal/...`` straight to the internal endpoints (``internal``): the replicate calls
    of every write need no second Klein routing through the role's app."""

    isLeaf = True

    def __init__(
        self, inner: IResource, internal: IResource, secret: str, stamp: Callable[[], Stamp]
    ) -> None:
        super().__init__()
        self.inner = inner
        self.internal = internal
        self.secret = secret
        self.stamp = stamp

    def render(self, request: IRequest) -> Any:
        # Taken before the request's reads are queued behind any write still being applied:
        # what they read is at least this new, perhaps newer, never older.
        stamp = self.stamp()
        request.setHeader(REPLICA_HEADER, stamp.replica)
        try:
            check_secret(request, self.secret)
        except BazarError as e:
            return respond(request, e.body(), e.code)
        request.setHeader(SEQ_HEADER, str(stamp.seq))
        request.setHeader(SEQUENCER_HEADER, stamp.sequencer or "")
        request.setHeader(EPOCH_HEADER, str(stamp.epoch))
        if request.postpath[:1] == [INTERNAL_SEGMENT] and len(request.postpath) > 1:
            request.prepath.append(request.postpath.pop(0))  # as a Klein branch route would
            return self.internal.render(request)
        return self.inner.render(request)


class ReplicaEndpoints:
    app = Klein()
    install_json_errors(app)

    def __init__(self, replica: Replica, store: ReplicatedStore, role: Role) -> None:
        """Who sequences writes, and in which epoch, is the ``role``'s to say (it changes
        when another replica takes over)."""
        self.replica = replica
        self.store = store
        self.role = role
        # Whether the sequencer's last call left this follower with everything it had (not
        # since start-up, or a gap since). A follower is ready to serve reads once that has
        # happened: a restarted one only after it caught up. It stays ready if the sequencer
        # then dies (no write can be acknowledged without it, so nothing newer exists); one
        # that falls behind while the sequencer lives is reported lagging by the sequencer
        # before any write it missed is acknowledged.
        self.synced = False

    def ready(self) -> bool:
        """Whether reads here show every acknowledged write and only writes a majority has."""
        writer = self.role.writer
        if writer is not None:
            return writer.settled()
        # Not since it forgot its writes (a replaced sequencer, a diverged log), until its
        # sequencer has sent it everything again: ``synced`` may date from before.
        return self.synced and not self.role.forgetting and not self.store.forgot_up_to

    @app.route(internal_route(REPLICATE_PATH), methods=["POST"])
    @runs_to_completion
    def replicate(self, request: IRequest) -> Any:
        return respond_reply(request, self.replicate_call(read_body(request)))

    @inlineCallbacks
    def replicate_call(self, raw: bytes) -> Any:
        """Apply the sequencer's entries in order; 409 with our last_seq when some are missing.
        (Over HTTP or the channel: ``REPLICATE_PATH``.)"""
        message = Replicate.parse(parse_json(raw))
        # Not while we vote in an election: what we confirm and what we tell a candidate
        # we hold must not cross.
        answer, code = yield self.role.votes.run(self._apply, message)
        return json_reply(answer, code)

    @inlineCallbacks
    def _apply(self, message: Replicate) -> Any:
        role = self.role
        epoch, sequencer = message.epoch, message.sequencer
        if epoch is not None and sequencer is not None:
            if epoch == role.epoch <= role.verified_epoch and sequencer == role.sequencer.name:
                role.heard()  # the usual case: our sequencer, in the epoch we follow and checked
            else:
                stale = yield self._check_epoch(epoch, sequencer)
                if stale is not None:
                    return stale, 409
        if message.lease is not None and epoch is not None and sequencer == role.sequencer.name:
            lease = message.lease
            grant = Grant(lease["lessor"], lease["grant"], lease["based_on"], False)
            role.read_lease.received(grant, epoch, sequencer)
        try:
            last_seq = yield self.store.apply(message.entries)
        except SequenceGap as gap:
            self.synced = False
            return {"last_seq": gap.last_seq, "error": {"code": 409, "message": gap.message}}, 409
        self.synced = last_seq >= message.last_seq
        ours = epoch == role.epoch and sequencer == role.sequencer.name
        if self.synced and ours and self.store.forgot_up_to:
            # Our log is now our sequencer's: it holds every acknowledged write, as that does.
            yield self.store.caught_up()
        return {"last_seq": last_seq}, 200

    @inlineCallbacks
    def _check_epoch(self, epoch: int, sequencer: str) -> Any:
        """A call from a sequencer: refuse an older epoch; join a newer one (checking that our
        log is part of its log). Returns the refusal, or None to go on."""
        role = self.role
        if epoch < role.epoch:
            message = f"epoch {epoch} is over: {role.sequencer.name} sequences writes in epoch {role.epoch}"
            return {
                "stale_epoch": role.epoch,
                "sequencer": role.sequencer.name,
                "error": {"code": 409, "message": message},
            }
        yield role.adopt(epoch, sequencer)
        yield role.verify(epoch)
        role.heard()
        return None

    @app.route(internal_route(ELECT_PATH), methods=["POST"])
    @runs_to_completion
    @inlineCallbacks
    def elect(self, request: IRequest) -> Any:
        """A candidate asks us to join its epoch: yes if that epoch is newer than ours and the
        candidate holds at least every write we hold (else an acknowledged one could be lost)."""
        message = Elect.parse(read_json(request))
        answer = yield self.role.votes.run(self._vote, message.epoch, message.sequencer, message.last_seq)
        return respond_json(request, answer)

    @inlineCallbacks
    def _vote(self, epoch: int, sequencer: str, last_seq: int) -> Any:
        role = self.role
        if epoch <= role.epoch:
            raise Conflict(f"epoch {epoch} is not newer than {role.epoch}")
        if role.heard_lately():
            raise Conflict(f"{role.sequencer.name} was heard from less than {VOTE_GUARD:g} s ago")
        if last_seq < role.holds():
            raise Conflict(f"{sequencer} holds writes up to {last_seq}, we hold (or forgot) {role.holds()}")
        yield role.adopt(epoch, sequencer)
        role.heard()  # no vote for another epoch within VOTE_GUARD (the candidate counts on it)
        return {"last_seq": self.store.applied_seq, "epoch": role.epoch}

    @app.route(internal_route(LOG_PATH), methods=["GET"])
    @inlineCallbacks
    def log_entries(self, request: IRequest) -> Any:
        """Entries after ``after`` (at most ``limit``, up to 1000): what a follower compares or lacks."""
        after = query_id(request, "after", 0)
        limit = min(query_id(request, "limit", 100), 1000)
        entries = yield self.store.entries_after(after, limit)
        return respond_json(request, {"entries": entries})

    @app.route(internal_route(STATUS_PATH), methods=["GET"])
    @inlineCallbacks
    def status(self, request: IRequest) -> Any:
        state = yield self.store.status()
        writer = self.role.writer
        return respond_json(
            request,
            {
                "name": self.replica.name,
                "role": self.replica.role,
                "sequencer": self.role.sequencer.name,
                "epoch": self.role.epoch,
                "ready": self.ready(),
                **state,
                "forgot_up_to": self.store.forgot_up_to,
                **({"followers": writer.followers()} if writer is not None else {}),
            },
        )

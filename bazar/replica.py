"""What every catalog and order replica has in common.

* ``ReplicaEndpoints``: the internal endpoints through which the sequencer replicates
  (``/internal/replicate``) and anyone inspects a replica (``/internal/status``).
* ``RequireSecret``: wraps a replica's whole resource, since nothing on a replica is public.
* ``forward``: a write that reaches a follower is sent on to the sequencer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from klein import Klein
from prometheus_client.core import Metric
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from bazar.channel import ChannelServer, Handler, Stamp
from bazar.client import ReplicaClient
from bazar.completion import runs_to_completion
from bazar.config import Config, ConfigError, Replica
from bazar.errors import BadRequest, BazarError, Conflict, Unavailable
from bazar.failover import Role, Watchdog
from bazar.http_limits import make_site
from bazar.invalidation import FrontendNotifier
from bazar.json_errors import install_json_errors
from bazar.jsonio import (
    Reply,
    json_reply,
    parse_json,
    read_body,
    read_json,
    respond,
    respond_json,
    respond_reply,
)
from bazar.metrics import MeasuredResource, Metrics, gauge
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
from bazar.replication import Sequencer
from bazar.secret import check_secret
from bazar.service import (
    CallOnStop,
    channel_service,
    check_ports_free,
    fail,
    load_config,
    replica_client,
    role_service,
    web_service,
)
from bazar.storage import Entry, ReplicatedStore, SeedMismatch, SequenceGap, open_store
from bazar.validation import query_id

S = TypeVar("S", bound=ReplicatedStore)
INTERNAL_SEGMENT = INTERNAL_PREFIX.strip("/").encode()  # the first segment of every internal path
T = TypeVar("T")

FORWARD_TIMEOUT = 5.0  # seconds


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

    def __init__(
        self,
        replica: Replica,
        store: ReplicatedStore,
        sequencer: Replica,
        writer: Sequencer | None,
        role: Role | None = None,
    ) -> None:
        """With a ``role``, who sequences writes can change (epochs, failover); without one,
        ``sequencer`` and ``writer`` are fixed."""
        self.replica = replica
        self.store = store
        self._sequencer = sequencer
        self._writer = writer
        self.role = role
        # Whether the sequencer's last call left this follower with everything it had (not
        # since start-up, or a gap since). A follower is ready to serve reads once that has
        # happened: a restarted one only after it caught up. It stays ready if the sequencer
        # then dies (no write can be acknowledged without it, so nothing newer exists); one
        # that falls behind while the sequencer lives is reported lagging by the sequencer
        # before any write it missed is acknowledged.
        self.synced = False

    @property
    def sequencer(self) -> Replica:
        return self.role.sequencer if self.role is not None else self._sequencer

    @property
    def writer(self) -> Sequencer | None:
        return self.role.writer if self.role is not None else self._writer

    def epoch(self) -> int:
        """The epoch this replica is in (1 for a replica whose sequencer is fixed)."""
        return self.role.epoch if self.role is not None else 1

    def ready(self) -> bool:
        """Whether reads here show every acknowledged write and only writes a majority has."""
        if self.writer is not None:
            return self.writer.settled()
        return self.synced

    @app.route(internal_route(REPLICATE_PATH), methods=["POST"])
    @runs_to_completion
    def replicate(self, request: IRequest) -> Any:
        return respond_reply(request, self.replicate_call(read_body(request)))

    @inlineCallbacks
    def replicate_call(self, raw: bytes) -> Any:
        """Apply the sequencer's entries in order; 409 with our last_seq when some are missing.
        (Over HTTP or the channel: ``REPLICATE_PATH``.)"""
        message = Replicate.parse(parse_json(raw))
        if self.role is None:
            answer, code = yield self._apply(message)
        else:
            # Not while we vote in an election: what we confirm and what we tell a candidate
            # we hold must not cross.
            answer, code = yield self.role.votes.run(self._apply, message)
        return json_reply(answer, code)

    @inlineCallbacks
    def _apply(self, message: Replicate) -> Any:
        role = self.role
        epoch, sequencer = message.epoch, message.sequencer
        if role is not None and epoch is not None and sequencer is not None:
            if epoch == role.epoch <= role.verified_epoch and sequencer == role.sequencer.name:
                role.heard()  # the usual case: our sequencer, in the epoch we follow and checked
            else:
                stale = yield self._check_epoch(epoch, sequencer)
                if stale is not None:
                    return stale, 409
        try:
            last_seq = yield self.store.apply(message.entries)
        except SequenceGap as gap:
            self.synced = False
            return {"last_seq": gap.last_seq, "error": {"code": 409, "message": gap.message}}, 409
        self.synced = last_seq >= message.last_seq
        return {"last_seq": last_seq}, 200

    @inlineCallbacks
    def _check_epoch(self, epoch: int, sequencer: str) -> Any:
        """A call from a sequencer: refuse an older epoch; join a newer one (checking that our
        log is part of its log). Returns the refusal, or None to go on."""
        role = self.role
        assert role is not None
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
        body = read_json(request)
        if self.role is None:
            raise BadRequest("this replica takes no part in elections")
        message = Elect.parse(body)
        answer = yield self.role.votes.run(self._vote, message.epoch, message.sequencer, message.last_seq)
        return respond_json(request, answer)

    @inlineCallbacks
    def _vote(self, epoch: int, sequencer: str, last_seq: int) -> Any:
        role = self.role
        assert role is not None
        if epoch <= role.epoch:
            raise Conflict(f"epoch {epoch} is not newer than {role.epoch}")
        if last_seq < self.store.applied_seq:
            raise Conflict(f"{sequencer} holds writes up to {last_seq}, we hold {self.store.applied_seq}")
        yield role.adopt(epoch, sequencer)
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
        return respond_json(
            request,
            {
                "name": self.replica.name,
                "role": self.replica.role,
                "sequencer": self.sequencer.name,
                "epoch": self.epoch(),
                "ready": self.ready(),
                **state,
                **({"followers": self.writer.followers()} if self.writer is not None else {}),
            },
        )


class ReplicaApp:
    """What the catalog's and the order's Klein classes share: their state, the cluster secret
    in front of everything, and the internal endpoints (``RequireSecret`` hands ``/internal/``
    to ``self.endpoints``)."""

    app: ClassVar[Klein]

    def __init__(
        self,
        replica: Replica,
        store: ReplicatedStore,
        client: ReplicaClient,
        sequencer: Replica,
        writer: Sequencer | None,
        secret: str,
        role: Role | None = None,
    ) -> None:
        """``writer`` is given on the sequencer only; followers forward writes to ``sequencer``.
        With a ``role``, both follow it (they change when another replica takes over)."""
        self.replica = replica
        self.store = store
        self.client = client
        self.secret = secret
        self.endpoints = ReplicaEndpoints(replica, store, sequencer, writer, role)
        self.internal_resource = self.endpoints.app.resource()  # what /internal/... goes to

    @property
    def sequencer(self) -> Replica:
        return self.endpoints.sequencer

    @property
    def writer(self) -> Sequencer | None:
        return self.endpoints.writer

    def check_readable(self) -> None:
        """A sequencer that holds a write no majority has refuses reads (see
        ``Sequencer.settled``); the front end reads from another replica."""
        writer = self.writer
        if writer is not None and not writer.settled():
            raise Unavailable(
                f"{self.replica.name} holds a write no majority has confirmed yet; read from another replica"
            )

    def read_committed(self, now: Callable[[], Any], queued: Callable[[], Deferred[T]] | None = None) -> Any:
        """Every data read goes through here, so that none shows a write no majority has.

        A follower holds only writes the sequencer sent it, which with the sequencer's own
        copy make two of three replicas: it reads at once (``now``). So does a sequencer
        with no write running. A sequencer with writes running reads behind them in its
        database queue (``queued``, by default ``now`` for a read that always goes through
        the queue: their results and no later write's), and answers once they have
        finished: 503 if one of them missed its majority (Raft's read index)."""
        writer = self.writer
        if writer is None:
            return now()
        self.check_readable()
        running = writer.running()
        if running is None:
            return now()
        return self._when_committed((queued or now)(), running)

    def respond_committed(
        self, now: Callable[[], T], queued: Callable[[], Deferred[T]], respond: Callable[[T], bytes]
    ) -> Any:
        """``read_committed``, answered with ``respond``: at once if the read was (a point read
        on a replica with no write running), else once it is done."""
        found = self.read_committed(now, queued)
        if isinstance(found, Deferred):
            return found.addCallback(respond)
        return respond(found)

    @inlineCallbacks
    def _when_committed(self, read: Deferred[T], running: Deferred[None]) -> Any:
        result = yield read
        yield running
        self.check_readable()
        return result

    def stamp(self) -> Stamp:
        """What this replica says about itself on every answer, over HTTP or the channel."""
        return Stamp(self.replica.name, self.store.applied_seq, self.sequencer.name, self.endpoints.epoch())

    def channel_handlers(self) -> dict[str, Handler]:
        """The carried routes this replica serves over the channel (the same handlers as HTTP)."""
        return {REPLICATE_PATH: self.endpoints.replicate_call}

    def services(self, clock: IReactorTime) -> list[IService]:
        """What runs beside the role's apps in its process (started after the ``Role``)."""
        return []

    def resource(self) -> IResource:
        return RequireSecret(self.app.resource(), self.internal_resource, self.secret, self.stamp)


@inlineCallbacks
def forward(client: ReplicaClient, sequencer: Replica, method: str, path: str, body: Any) -> Any:
    """Send a write on to the sequencer; its answer, whatever it was. A sequencer that does
    not answer in FORWARD_TIMEOUT seconds is probably gone: the client gets a 503 (with
    Retry-After) sooner, and a retry goes to whichever replica took over."""
    response = yield client.request(method, sequencer, path, body, timeout=FORWARD_TIMEOUT)
    return Reply(response.code, response.body)


def replica_service(
    role: str,
    options: Mapping[str, Any],
    store_type: type[S],
    make_app: Callable[[Config, Replica, S, ReplicaClient, Sequencer | None, Role], Any],
    keys: Callable[[Entry], list[str]] = lambda entry: [],
    reactor: Any = None,
) -> MultiService:
    """Everything one catalog or order replica process runs: its store, its client, its site."""
    if reactor is None:
        from twisted.internet import reactor
    config = load_config(role, options["config"])
    try:
        replica = config.replica(role, options["replica"])
    except ConfigError as e:
        raise fail(role, str(e)) from None
    check_ports_free(role, replica)
    try:
        store = open_store(store_type, config.database_path(replica), reactor, **store_type.options(config))
    except SeedMismatch as e:
        raise fail(role, f"{config.database_path(replica)}: {e}") from None
    except (OSError, sqlite3.Error) as e:
        raise fail(role, f"cannot open {config.database_path(replica)}: {e}") from None
    client, close_client = replica_client(reactor, config, channel=True)
    replicas = config.catalog if role == "catalog" else config.order
    notifier = FrontendNotifier(client, config.frontend, keys, epoch=lambda: (role, leadership.epoch))
    leadership = Role(replica, replicas, store, client, notifier, reactor)
    app = make_app(config, replica, store, client, None, leadership)
    resource = measured(app.resource(), replica, store, lambda: leadership.writer, config.secret)
    channel = ChannelServer(app.channel_handlers(), config.secret, app.stamp, resource.metrics.observe_call)
    return role_service(
        web_service(replica.listen, make_site(resource), reactor),
        *channel_service(replica, channel, reactor),
        RoleService(leadership),
        Watchdog(leadership, reactor),
        *app.services(reactor),
        CallOnStop(close_client, store.close),
    )


class RoleService(Service):
    """Starts leading at start-up if the recorded epoch says this replica sequences writes."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def startService(self) -> None:
        super().startService()
        self.role.start()

    def stopService(self) -> None:
        super().stopService()
        self.role.stop()


def measured(
    resource: IResource,
    replica: Replica,
    store: ReplicatedStore,
    writer: Callable[[], Sequencer | None],
    secret: str,
) -> MeasuredResource:
    """A replica's resource with request metrics and its replication figures at ``/metrics``
    (``writer()``: the sequencer's machinery, while this replica is the sequencer)."""
    metrics = Metrics(replica.role, replica.name)
    metrics.collect_with(lambda: replication_metrics(store, writer()))
    return MeasuredResource(resource, metrics, secret)


def replication_metrics(store: ReplicatedStore, writer: Sequencer | None) -> list[Metric]:
    """This replica's last sequence number; on the sequencer, each follower's and its lag."""
    out = [
        gauge(
            "bazar_replication_last_seq", "Last sequence number committed here", [], [([], store.applied_seq)]
        )
    ]
    if writer is not None:
        links = writer.links
        out.append(
            gauge(
                "bazar_replication_follower_seq",
                "Last sequence number each follower confirmed",
                ["follower"],
                [([link.follower.name], link.confirmed) for link in links],
            )
        )
        out.append(
            gauge(
                "bazar_replication_lag",
                "Writes a follower has not confirmed yet",
                ["follower"],
                [([link.follower.name], store.applied_seq - link.confirmed) for link in links],
            )
        )
    return out

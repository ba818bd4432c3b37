"""What every catalog and order replica's app has in common.

* ``ReplicaApp``: the state the catalog's and the order's Klein classes share, the read policy
  (``read_committed``: no read shows a write no majority has) and what the replica says about
  itself on every answer (``stamp``).
* ``forward``: a write that reaches a follower is sent on to the sequencer.

The internal endpoints and the secret check in front of everything are in ``bazar.endpoints``;
how a replica process is put together, in ``bazar.assembly``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from klein import Klein
from twisted.application.service import IService
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource

from bazar.channel import Handler, Stamp
from bazar.client import ReplicaClient
from bazar.config import Replica
from bazar.endpoints import ReplicaEndpoints, RequireSecret
from bazar.errors import Unavailable
from bazar.failover import Role
from bazar.jsonio import Reply
from bazar.protocol import REPLICATE_PATH
from bazar.replication import Sequencer
from bazar.storage import ReplicatedStore

T = TypeVar("T")

FORWARD_TIMEOUT = 5.0  # seconds


class ReplicaApp:
    """What the catalog's and the order's Klein classes share: their state, the cluster secret
    in front of everything, and the internal endpoints (``RequireSecret`` hands ``/internal/``
    to ``self.endpoints``)."""

    app: ClassVar[Klein]

    def __init__(
        self, replica: Replica, store: ReplicatedStore, client: ReplicaClient, secret: str, role: Role
    ) -> None:
        """Writes go to the ``role``'s sequencer: through ``writer`` on the sequencer itself,
        forwarded from a follower (both change when another replica takes over)."""
        self.replica = replica
        self.store = store
        self.client = client
        self.secret = secret
        self.role = role
        self.endpoints = ReplicaEndpoints(replica, store, role)
        self.internal_resource = self.endpoints.app.resource()  # what /internal/... goes to

    @property
    def sequencer(self) -> Replica:
        return self.role.sequencer

    @property
    def writer(self) -> Sequencer | None:
        """The sequencer's machinery while this replica sequences writes, else None."""
        return self.role.writer

    def check_readable(self) -> None:
        """A follower serves reads only under a read lease from its sequencer (which waits for
        it, or for the lease to run out, before acknowledging a write); a sequencer only while
        no other can have been elected (``Sequencer.leads``) and a majority has every write it
        holds (``Sequencer.settled``); a replaced sequencer not until it has forgotten its writes
        (``Role.forgetting``). Else the front end reads from another replica."""
        writer = self.writer
        name = self.replica.name
        if self.role.forgetting:
            raise Unavailable(
                f"{name} was replaced as sequencer and is forgetting its writes; read from another replica"
            )
        if writer is None:
            if not self.role.read_lease.valid():
                raise Unavailable(f"{name} holds no read lease from its sequencer; read from another replica")
        elif not writer.settled():
            raise Unavailable(
                f"{name} holds a write no majority has confirmed yet; read from another replica"
            )
        elif not writer.leads():
            raise Unavailable(f"{name} has not heard from a majority lately; read from another replica")

    def read_committed(self, now: Callable[[], Any], queued: Callable[[], Deferred[T]] | None = None) -> Any:
        """Every data read goes through here, so that none shows a write no majority has.

        A follower holds only writes the sequencer sent it, which with the sequencer's own
        copy make two of three replicas: it reads at once (``now``). So does a sequencer
        with no write running. A sequencer with writes running reads behind them in its
        database queue (``queued``, by default ``now`` for a read that always goes through
        the queue: their results and no later write's), and answers once they have
        finished: 503 if one of them missed its majority (Raft's read index). A replaced
        sequencer is no follower until it has forgotten its own writes (``Role.forgetting``):
        until then it reads nothing."""
        self.check_readable()
        writer = self.writer
        if writer is None:
            return now()
        running = writer.running()
        if running is None:
            return now()
        return self._when_committed((queued or now)(), running, writer)

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
    def _when_committed(self, read: Deferred[T], running: Deferred[None], writer: Sequencer) -> Any:
        """The read's result once the writes it waited for have finished, if they reached a
        majority. Asked of the sequencer that ran them, not of the role's writer now: one
        that stepped down meanwhile has none, and wipes those writes."""
        result = yield read
        yield running
        if writer.retired:
            raise Unavailable(
                f"{self.replica.name} stopped sequencing writes while a read waited for them; "
                "read from another replica"
            )
        self.check_readable()  # of ``writer``, still the role's
        return result

    def stamp(self) -> Stamp:
        """What this replica says about itself on every answer, over HTTP or the channel."""
        return Stamp(self.replica.name, self.store.applied_seq, self.role.sequencer.name, self.role.epoch)

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

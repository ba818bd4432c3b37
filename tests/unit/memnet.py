"""The in-memory network under ``MemCluster`` and the failover tests' ``Trio``.

* ``MemNetwork``: every app of a cluster behind ONE production ``Site`` (``make_site``: its
  request class, limits and error pages), reached through real Twisted Web HTTP over
  in-memory connections (``SiteAgent``); its root (``HostDispatch``) hands each request to
  the app that the config gives the request's ``Host``. ``add_replica`` builds a replica
  with ``bazar.assembly.build_replica``, as the taps do, and puts it on the network.
* A request can be held (``Held``: answered now, delivered later), delayed (``Delayed``: it
  reaches the app later, or never), refused (an unreachable app drops the connection, as a
  dead process would) or parked (a paused app reads it when it resumes).

treq.testing's ``StubTreq`` does the same with a plain ``Site`` of its own, which cannot be
given production's; so ``SiteAgent`` plays its ``RequestTraversalAgent`` with ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random
from typing import Any, Protocol
from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IConsumer,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.web.client import URI, Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IRequest, IResponse
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from bazar.assembly import ReplicaProcess, build_replica
from bazar.client import ReplicaClient
from bazar.config import Config, Replica
from bazar.http_limits import make_site
from bazar.jsonio import respond_json
from bazar.storage import ReplicatedStore

CLIENT = IPv4Address("TCP", "127.0.0.1", 31337)


class Flushes(Protocol):
    def flush(self) -> None: ...


@implementer(IBodyProducer)
class BytesProducer:
    """A request body produced at once (treq's default producer waits for the reactor)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def stopProducing(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


@implementer(IAgent)
class SiteAgent:
    """Each request is a new in-memory connection to ``site``, whose bytes move on ``flush``.

    Twisted's own ``Agent`` writes and parses the HTTP (over a ``MemoryReactorClock`` that
    never connects anything itself): this is the endpoint it connects through. As with
    treq's ``RequestTraversalAgent``, a request reaches the site at once; its answer comes
    back at once if the site answers at once, else on a later ``flush``."""

    def __init__(self, site: Any) -> None:
        self.site = site
        self.pumps: list[iosim.IOPump] = []  # in the order the connections were made
        self.agent = Agent.usingEndpointFactory(MemoryReactorClock(), self)

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        before = len(self.pumps)
        d = self.agent.request(method, uri, headers, bodyProducer)
        for pump in self.pumps[before:]:
            pump.flush()
        return d

    def flush(self) -> bool:
        """Move what can move on every connection; whether any is still open."""
        pumps, self.pumps = self.pumps, []
        for pump in pumps:
            pump.flush()
            if not (pump.clientIO.disconnected and pump.serverIO.disconnected):
                self.pumps.append(pump)
        return bool(self.pumps)

    def endpointForURI(self, uri: URI) -> SiteEndpoint:
        return SiteEndpoint(self, IPv4Address("TCP", "127.0.0.1", uri.port))


@implementer(IStreamClientEndpoint)
class SiteEndpoint:
    """A connection to the agent's site, which sees it arrive at ``address``."""

    def __init__(self, agent: SiteAgent, address: IPv4Address) -> None:
        self.agent = agent
        self.address = address

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        client = factory.buildProtocol(self.address)
        server = self.agent.site.buildProtocol(CLIENT)
        assert client is not None and server is not None
        self.agent.pumps.append(
            iosim.connect(
                server,
                iosim.FakeTransport(server, isServer=True, hostAddress=self.address, peerAddress=CLIENT),
                client,
                iosim.FakeTransport(client, isServer=False, hostAddress=CLIENT, peerAddress=self.address),
                greet=False,
            )
        )
        return succeed(client)


@dataclass
class Seen:
    """One request as a replica (or the front end) received it."""

    name: str
    method: str
    path: str
    query: str = ""  # after the "?", if any: which ids a lookup names, say


def _seen(name: str, request: IRequest) -> Seen:
    _, _, query = request.uri.decode().partition("?")
    return Seen(name, request.method.decode(), request.path.decode(), query)


class Held:
    """An answer a replica has computed but not sent yet (see ``MemCluster.hold_next``)."""

    def __init__(self, cluster: Flushes, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.request: IRequest | None = None
        self._writes: list[bytes] = []
        self._finished = False

    @property
    def arrived(self) -> bool:
        """The held request reached the replica and the replica has answered it (into the hold)."""
        return self.request is not None and self._finished

    def capture(self, request: IRequest, resource: IResource) -> Any:
        """Render ``request`` now, but keep what it writes instead of sending it."""
        self.request = request
        request.write = self._writes.append  # type: ignore[method-assign]
        request.finish = self._finish  # type: ignore[method-assign]
        body = resource.render(request)
        if body is not NOT_DONE_YET:
            self._writes.append(body)
            self._finished = True
        return NOT_DONE_YET

    def _finish(self) -> None:
        self._finished = True

    def release(self) -> None:
        """Send the answer the replica gave when the request arrived, and deliver it."""
        if not self.arrived:
            raise AssertionError(f"{self.name} has not answered a held request")
        request, self.request = self.request, None
        assert request is not None
        del request.write, request.finish  # type: ignore[attr-defined]
        for chunk in self._writes:
            request.write(chunk)
        request.finish()
        self.cluster.flush()


class Delayed:
    """A request that has reached a replica's host but not the replica yet (``delay_next``)."""

    def __init__(self, cluster: Flushes, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.request: IRequest | None = None
        self.resource: IResource | None = None

    @property
    def arrived(self) -> bool:
        return self.request is not None

    def capture(self, request: IRequest, resource: IResource) -> Any:
        self.request, self.resource = request, resource
        return NOT_DONE_YET

    def drop(self) -> None:
        """Never hand it over: the connection drops, as if the replica had died meanwhile."""
        if self.request is None:
            raise AssertionError(f"no request for {self.name} has been delayed")
        request, self.request = self.request, None
        request.transport.abortConnection()  # type: ignore[attr-defined]
        self.cluster.flush()

    def deliver(self) -> None:
        """Hand the request to the replica now, and its answer back to the caller."""
        if self.request is None or self.resource is None:
            raise AssertionError(f"no request for {self.name} has been delayed")
        request, self.request = self.request, None
        body = self.resource.render(request)
        if body is not NOT_DONE_YET:
            request.write(body)
            request.finish()
        self.cluster.flush()


class HostDispatch(Resource):
    """The root of the network's site: hands each request to the app whose URL has its Host."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.by_host: dict[str, str] = {}
        self.resources: dict[str, IResource] = {}
        self.seen: list[Seen] = []
        self.holds: dict[str, Held | Delayed] = {}
        self.unreachable: set[str] = set()
        self.refused: list[Seen] = []  # requests to an unreachable app, which it never saw
        # Apps that are paused (SIGSTOP): what reaches them waits here, unread, until resume().
        self.paused: dict[str, list[IRequest]] = {}

    def add(self, replica: Replica, resource: IResource) -> None:
        self.by_host[urlsplit(replica.url).netloc] = replica.name
        self.resources[replica.name] = resource

    def render(self, request: IRequest) -> Any:
        host = (request.getHeader("host") or "").lower()
        name = self.by_host.get(host)
        if name is None:
            # Not an app's answer: the shape tells a test that dispatch itself failed.
            return respond_json(request, {"dispatch": f"no app at host {host!r}"}, 599)
        if name in self.unreachable:
            # As if the process had died: the connection drops before any answer, which the
            # client sees as a transport error (ReplicaClient: Unavailable).
            self.refused.append(_seen(name, request))
            request.transport.abortConnection()  # type: ignore[attr-defined]
            return NOT_DONE_YET
        if name in self.paused:
            self.paused[name].append(request)
            return NOT_DONE_YET
        self.seen.append(_seen(name, request))
        held = self.holds.pop(name, None)
        if held is not None:
            return held.capture(request, self.resources[name])
        return self.resources[name].render(request)

    def resume(self, name: str) -> None:
        """A paused app reads what reached it meanwhile, in order; what its callers gave up on
        (their connection is gone) it never answers."""
        for request in self.paused.pop(name, []):
            if getattr(request, "_disconnected", False):
                continue
            body = self.render(request)
            if body is not NOT_DONE_YET:
                request.write(body)
                request.finish()


class MemNetwork:
    """Every app of an in-memory cluster, reached by host through one production ``Site``."""

    def __init__(self) -> None:
        self.dispatch = HostDispatch()
        site = make_site(self.dispatch)
        site.reactor = MemoryReactorClock()  # its idle timeouts: never due
        self.agent = SiteAgent(site)
        self.http = HTTPClient(self.agent, data_to_body_producer=BytesProducer)

    def flush(self) -> bool:
        """Move what can move between every client and server; whether a connection is still open."""
        return self.agent.flush()

    def add(self, replica: Replica, resource: IResource) -> None:
        self.dispatch.add(replica, resource)

    def add_replica(
        self,
        config: Config,
        name: str,
        store: ReplicatedStore,
        client: ReplicaClient,
        clock: IReactorTime,
        random: Random | None = None,
    ) -> ReplicaProcess:
        """Replica ``name``, built as the taps build it, answering at its URL (not started)."""
        process = build_replica(config, name, store, client, clock, random)
        self.dispatch.add(process.role.replica, process.resource)
        return process

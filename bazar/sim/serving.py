"""The serving side of a simulated process: a call that reaches it is served through its real
resource, as production serves it.

An HTTP request goes through Twisted Web with production's request class and limits (an
in-memory agent that keeps its connections in the order they were made), a channel call
through its ``ChannelServer``; the caller gets what ``ReplicaClient`` would have given it,
and an outside client a ``PublicAnswer``. ``bazar.sim.network`` carries the calls here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import treq
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent, _SynchronousProducer
from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource

from bazar.channel import ChannelServer
from bazar.client import NoCookies, ReplicaClient, ReplicaResponse
from bazar.config import Replica
from bazar.http_limits import make_site

FAR = 1e9  # a deadline that never comes (the caller's own deadline is the network's)


class _NoClock:
    """For ``ReplicaClient._over_http`` on the callee's side: its deadline is the caller's."""

    class _Call:
        def active(self) -> bool:
            return False

        def cancel(self) -> None:
            pass

    def seconds(self) -> float:
        return 0.0

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> Any:
        return self._Call()


class _Pumps(list):  # type: ignore[type-arg]
    """treq.testing keeps its connections in a set, whose order is the objects' ids: a list
    keeps them in the order they were made, so a run does not depend on memory layout."""

    def add(self, pump: Any) -> None:
        self.append(pump)


class _OrderedAgent(RequestTraversalAgent):
    def __init__(self, resource: IResource) -> None:
        super().__init__(resource)
        self._pumps = _Pumps()  # type: ignore[assignment]
        production = make_site(resource)
        site = self._serverFactory
        site.requestFactory = production.requestFactory  # type: ignore[method-assign]
        site.protocol = production.protocol  # type: ignore[method-assign]
        site.displayTracebacks = production.displayTracebacks

    def flush(self) -> None:
        pumps, self._pumps = self._pumps, _Pumps()  # type: ignore[assignment]
        for pump in pumps:
            pump.flush()
            if not (pump.clientIO.disconnected and pump.serverIO.disconnected):
                self._pumps.add(pump)


@dataclass(frozen=True)
class PublicAnswer:
    """An answer to an outside client: status, headers (lower-case names) and the body."""

    code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Endpoint:
    """The serving side of one incarnation of one process: its resource and channel server."""

    def __init__(
        self, replica: Replica, resource: IResource, channel: ChannelServer | None, secret: str
    ) -> None:
        self.replica = replica
        self.agent = _OrderedAgent(resource)
        # A body is produced at once, not by a cooperator on the real reactor (as StubTreq does).
        self.http = HTTPClient(self.agent, cookiejar=NoCookies(), data_to_body_producer=_SynchronousProducer)
        self.internal = ReplicaClient(self.http, secret, _NoClock())  # type: ignore[arg-type]
        self.channel = channel
        self.secret = secret

    def flush(self) -> None:
        self.agent.flush()

    def serve_http(self, method: str, path: str, data: bytes | None) -> Deferred[ReplicaResponse]:
        return self.internal._over_http(method, self.replica, path, data, FAR)

    def serve_channel(self, method: str, path: str, data: bytes) -> Deferred[ReplicaResponse]:
        assert self.channel is not None
        answer = self.channel.answer(self.secret, method, path, data)
        return answer.addCallback(
            lambda a: ReplicaResponse(
                a["code"], a["body"], a["replica"], {}, a["seq"], a["sequencer"], a["epoch"]
            )
        )

    def serve_public(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str]
    ) -> Deferred[PublicAnswer]:
        sent = Headers({name: [value] for name, value in headers.items()})
        d = self.http.request(method, self.replica.url + path, headers=sent, data=data, allow_redirects=False)

        def read(response: Any) -> Deferred[PublicAnswer]:
            kept = {k.decode().lower(): v[-1].decode() for k, v in response.headers.getAllRawHeaders()}
            return treq.content(response).addCallback(lambda body: PublicAnswer(response.code, kept, body))

        return d.addCallback(read)

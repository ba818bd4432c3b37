"""The serving side of a simulated process: a call that reaches it is served through its real
resource, as production serves it.

An HTTP request is handed to production's request class (``bazar.http_limits.make_site``'s
``BoundedRequest``, on production's ``Site`` and resource) as Twisted's ``HTTPChannel``
hands it over once it has parsed the bytes: its headers, its body, then ``requestReceived``;
what the request writes back (status, headers, body) is the answer. The bytes themselves
are neither written nor parsed, on either side: an in-memory HTTP client and server (treq's
``RequestTraversalAgent``) cost about twice what serving the request costs, and each call is
its own connection here anyway. A channel call is served through its ``ChannelServer``; the
caller gets what ``ReplicaClient`` would have given it (``bazar.client.replica_response``),
and an outside client a ``PublicAnswer``. ``bazar.sim.network`` carries the calls here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource
from twisted.web.server import Request

from bazar import wire
from bazar.channel import ChannelServer, channel_response
from bazar.client import ReplicaResponse, replica_response
from bazar.config import Replica
from bazar.errors import Unavailable
from bazar.http_limits import make_site

CLIENT = IPv4Address("TCP", "127.0.0.1", 31337)  # every caller, as a server sees it
# What treq adds to every request's own headers (it would decode a gzipped answer).
CLIENT_HEADERS = ((b"Accept-Encoding", b"gzip"),)

Header = tuple["str | bytes", "str | bytes"]


@dataclass
class HttpAnswer:
    code: int
    headers: Headers
    body: bytes


class _Connection:
    """What a request sees of the ``HTTPChannel`` it came in on: the connection of one call.

    Its answer fires when the request is done, with what the request wrote; with a failure
    if the request dropped the connection instead (an error after it began answering)."""

    def __init__(self, site: Any, address: IPv4Address) -> None:
        self.site = site
        self.factory = site
        self.address = address
        self.transport = None
        self.answer: Deferred[HttpAnswer] = Deferred()
        self.request: Request | None = None
        self._body: list[bytes] = []

    def getPeer(self) -> IPv4Address:
        return CLIENT

    def getHost(self) -> IPv4Address:
        return self.address

    def isSecure(self) -> bool:
        return False

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Headers) -> None:
        pass  # the request keeps its code and headers: read at requestDone

    def write(self, data: bytes) -> None:
        assert self.request is not None
        if not self.request.chunked:  # chunked, a write is the last chunk's marker
            self._body.append(data)

    def writeSequence(self, chunk: list[bytes]) -> None:
        self._body.append(chunk[1])  # a chunk: its length, its data, CRLF (``http.toChunk``)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def requestDone(self, request: Request) -> None:
        if not self.answer.called:
            self.answer.callback(HttpAnswer(request.code, request.responseHeaders, b"".join(self._body)))

    def loseConnection(self) -> None:
        if not self.answer.called:
            self.answer.errback(Failure(ResponseFailed([Failure(ConnectionLost())])))


@dataclass(frozen=True)
class PublicAnswer:
    """An answer to an outside client: status, headers (lower-case names) and the body."""

    code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Endpoint:
    """The serving side of one incarnation of one process: its site and channel server."""

    def __init__(
        self, replica: Replica, resource: IResource, channel: ChannelServer | None, secret: str
    ) -> None:
        self.replica = replica
        self.site = make_site(resource)
        netloc = urlsplit(replica.url)
        self.address = IPv4Address("TCP", "127.0.0.1", netloc.port or 80)
        self.host_header = netloc.netloc.encode()  # as treq's agent sends it
        self.channel = channel
        self.secret = secret

    def serve(
        self, method: str, path: str, headers: Iterable[Header], data: bytes | None
    ) -> Deferred[HttpAnswer]:
        """One HTTP request, as ``HTTPChannel`` would hand it to the request once parsed."""
        connection = _Connection(self.site, self.address)
        request = connection.request = self.site.requestFactory(connection)
        received = request.requestHeaders
        received.addRawHeader(b"Host", self.host_header)
        for name, value in headers:
            received.addRawHeader(name, value)
        if data is not None:
            received.addRawHeader(b"Content-Length", b"%d" % len(data))
        for name, value in CLIENT_HEADERS:
            received.addRawHeader(name, value)
        request.parseCookies()
        request.gotLength(None if data is None else len(data))
        if data:
            request.handleContentChunk(data)
        request.requestReceived(method.encode("ascii"), path.encode("utf-8"), b"HTTP/1.1")
        return connection.answer

    def serve_http(
        self, method: str, path: str, headers: Iterable[Header], data: bytes | None
    ) -> Deferred[ReplicaResponse]:
        """A replica's call over HTTP, answered as ``ReplicaClient`` reads an answer."""

        def lost(failure: Failure) -> ReplicaResponse:
            failure.trap(ResponseFailed)
            raise Unavailable(f"{self.replica.name} is unreachable: ResponseFailed")

        answered = self.serve(method, path, headers, data)
        return answered.addCallbacks(
            lambda a: replica_response(self.replica, a.code, a.headers, a.body), lost
        )

    def serve_channel(self, method: str, path: str, data: bytes) -> Deferred[ReplicaResponse]:
        assert self.channel is not None
        answer = self.channel.answer(wire.Request(self.secret, method, path, data))
        return answer.addCallback(channel_response)

    def serve_public(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str]
    ) -> Deferred[PublicAnswer]:
        def read(answer: HttpAnswer) -> PublicAnswer:
            kept = {k.decode().lower(): v[-1].decode() for k, v in answer.headers.getAllRawHeaders()}
            return PublicAnswer(answer.code, kept, answer.body)

        return self.serve(method, path, headers.items(), data).addCallback(read)

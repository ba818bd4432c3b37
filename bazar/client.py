"""How a Bazar process calls the others: one treq HTTPClient on one persistent pool.

The pool keeps connections open between calls (treq's module default keeps only two per
host, which throttles a replica under concurrency), every call carries the cluster
secret, has a deadline, and transport failures become ``Unavailable`` naming the replica,
so callers deal with one exception type rather than Twisted's many. A replica's client
also has the internal channel (``bazar.channel``): the calls on a write's path go over it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import treq
from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectingCancelledError, ConnectionClosed, TimeoutError
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseFailed,
    _HTTP11ClientFactory,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory
from zope.interface import implementer

from bazar.config import Replica
from bazar.errors import NotSent, ReplicaError, Unavailable
from bazar.jsonio import JSON
from bazar.protocol import (
    EPOCH_HEADER,
    NEXT_AFTER_HEADER,
    REPLICA_HEADER,
    SECRET_HEADER,
    SEQ_HEADER,
    SEQUENCER_HEADER,
    TOTAL_HEADER,
)

POOL_SIZE_PER_HOST = 64
MAX_KNOWN_ENDPOINTS = 64  # far more than a cluster has replicas; a bound all the same
TRANSPORT_ERRORS = (ConnectError, ConnectionClosed, ResponseFailed, TimeoutError, CancelledError)
# A replica's answer headers that the caller gets to see (a page's total and successor).
KEPT_HEADERS = (TOTAL_HEADER, NEXT_AFTER_HEADER)


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False  # no "Starting factory" log line for every new pooled connection


class _QuietPool(HTTPConnectionPool):
    _factory = _QuietClientFactory


def make_pool(reactor: IReactorTime) -> HTTPConnectionPool:
    pool = _QuietPool(reactor, persistent=True)
    pool.maxPersistentPerHost = POOL_SIZE_PER_HOST
    pool.cachedConnectionTimeout = 60
    pool.retryAutomatically = False  # a write must not be sent twice behind our back
    return pool


@implementer(IAgentEndpointFactory)
class KnownEndpoints:
    """One endpoint per replica address, made once.

    Agent's default makes a new endpoint for every request, pooled connection or not, and
    IDNA-encodes the host each time: about 5 % of a call's CPU time, measured, for
    addresses that never change (the replicas in the config)."""

    def __init__(self, reactor: IReactorTCP) -> None:
        self.reactor = reactor
        self._endpoints: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = HostnameEndpoint(self.reactor, uri.host, uri.port)
            if uri.scheme == b"https":
                tls = BrowserLikePolicyForHTTPS().creatorForNetloc(uri.host, uri.port)
                endpoint = wrapClientTLS(tls, endpoint)
            if len(self._endpoints) < MAX_KNOWN_ENDPOINTS:
                self._endpoints[key] = endpoint
        return endpoint


def make_agent(reactor: IReactorTCP, pool: HTTPConnectionPool) -> IAgent:
    """(``reactor`` also keeps time, as every reactor does, for the agent's timeouts.)"""
    return Agent.usingEndpointFactory(reactor, KnownEndpoints(reactor), pool=pool)


class NoCookies(IndexableCookieJar):
    """Replicas set no cookies: skipping the jar saves treq's per-request cookie handling
    (with no redirects followed, about a tenth of a call's CPU time, measured)."""

    def add_cookie_header(self, request: Any) -> None:
        pass

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass


def make_http(reactor: IReactorTCP, pool: HTTPConnectionPool) -> HTTPClient:
    """treq's client on ``pool``, without a cookie jar."""
    return HTTPClient(make_agent(reactor, pool), cookiejar=NoCookies())


@dataclass(frozen=True)
class ReplicaResponse:
    code: int
    body: bytes
    replica: str
    # The answer's headers among KEPT_HEADERS (at the front end: the headers to send on).
    headers: dict[str, str] = field(default_factory=dict)
    # The replica's last applied sequence number when it took the request (SEQ_HEADER): the
    # answer reflects at least every write up to it. 0 when the replica did not say.
    seq: int = 0
    # The replica its role's writes go to, as the answering replica knows it (SEQUENCER_HEADER).
    sequencer: str | None = None
    # The epoch the answering replica is in (EPOCH_HEADER); 0 when it did not say.
    epoch: int = 0

    def json(self) -> Any:
        return json.loads(self.body)

    def error_message(self) -> str:
        """The message of a replica's JSON error (or, for a body that is none, the status)."""
        try:
            return str(self.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            return f"{self.replica} answered {self.code}"

    def raise_for_error(self) -> ReplicaResponse:
        """Turn a replica's JSON error into a ReplicaError with the same status and message."""
        if self.code < 400:
            return self
        raise ReplicaError(self.code, self.error_message())


def replica_response(replica: Replica, code: int, headers: Headers, content: bytes) -> ReplicaResponse:
    """A replica's HTTP answer as its caller sees it (the simulator reads its answers so too)."""
    name = headers.getRawHeaders(REPLICA_HEADER, [replica.name])[0]
    kept = {}
    for header in KEPT_HEADERS:
        values = headers.getRawHeaders(header)
        if values:
            kept[header] = values[0]
    seq = headers.getRawHeaders(SEQ_HEADER, ["0"])[0]
    sequencer = headers.getRawHeaders(SEQUENCER_HEADER, [None])[0]
    epoch = headers.getRawHeaders(EPOCH_HEADER, ["0"])[0]
    return ReplicaResponse(
        code,
        content,
        name,
        kept,
        int(seq) if seq.isdigit() else 0,
        sequencer,
        int(epoch) if epoch.isdigit() else 0,
    )


class Carrier(Protocol):
    """What ``ReplicaClient`` needs of the internal channel (``bazar.channel.Channel``),
    named here so that the channel, which answers with ``ReplicaResponse``, is not imported."""

    def carries(self, replica: Replica, method: str, path: str, body: bytes) -> bool: ...

    def request(
        self, replica: Replica, secret: str, method: str, path: str, body: bytes, timeout: float
    ) -> Deferred[Any]: ...


class ReplicaClient:
    def __init__(
        self,
        http: HTTPClient,
        secret: str,
        clock: IReactorTime,
        timeout: float = 10.0,
        channel: Carrier | None = None,
    ) -> None:
        """With a ``channel``, the calls it carries go over it (to replicas that have one)."""
        self.http = http
        self.secret = secret
        self.clock = clock
        self.timeout = timeout
        self.channel = channel

    def request(
        self, method: str, replica: Replica, path: str, body: Any = None, timeout: float | None = None
    ) -> Deferred[Any]:
        """Send ``body`` as JSON to ``replica``; the answer (a ``ReplicaResponse``), whatever its status."""
        data = json.dumps(body).encode() if body is not None else None
        deadline = self.timeout if timeout is None else timeout
        channel = self.channel
        if channel is not None and channel.carries(replica, method, path, data or b""):
            return channel.request(replica, self.secret, method, path, data or b"", deadline)
        return self._over_http(method, replica, path, data, deadline)

    @inlineCallbacks
    def _over_http(self, method: str, replica: Replica, path: str, data: bytes | None, timeout: float) -> Any:
        headers = self.http_headers(data)
        # No redirects (a replica never sends one) and no buffering layer (the body is read
        # once, just below): each would cost every call a wrapper.
        d = self.http.request(
            method, replica.url + path, headers=headers, data=data, allow_redirects=False, unbuffered=True
        )
        d.addTimeout(timeout, self.clock)
        try:
            response = yield d
            content = yield treq.content(response)
        except (ConnectError, ConnectingCancelledError) as e:
            raise NotSent(f"{replica.name} is unreachable: {type(e).__name__}") from None
        except TRANSPORT_ERRORS as e:
            raise Unavailable(f"{replica.name} is unreachable: {type(e).__name__}") from None
        return replica_response(replica, response.code, response.headers, content)

    def http_headers(self, data: bytes | None) -> dict[str | bytes, str | bytes]:
        """The headers of a call over HTTP with body ``data`` (the simulator sends them too)."""
        headers: dict[str | bytes, str | bytes] = {SECRET_HEADER: self.secret, "Accept": JSON}
        if data is not None:
            headers["Content-Type"] = JSON
        return headers

    def call(
        self, method: str, replica: Replica, path: str, body: Any = None, timeout: float | None = None
    ) -> Deferred[Any]:
        """Like ``request``, but the decoded JSON of a success, and ReplicaError for an error."""
        d = self.request(method, replica, path, body, timeout=timeout)
        d.addCallback(lambda r: r.raise_for_error().json())
        return d

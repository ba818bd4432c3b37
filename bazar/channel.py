"""The internal channel: the calls on a write's path, over one persistent connection per peer.

Why: a purchase makes seven internal calls (the front end's to the order sequencer, the buy
at the catalog sequencer, each sequencer's replication to its two followers, the push of the
catalog write's cache keys to the front end), and waits for five of them in turn. Over HTTP
each call cost its two ends 0.6-0.7 ms of CPU in treq and twisted.web; an AMP call cost
about a third of that, and a call in the channel's own frames (``bazar.wire``) less again
(measured; see docs/benchmark.md). The front end's reads stay on HTTP with treq (round
robin over the replicas): only writes take the channel.

The channel keeps HTTP's shape, so that nothing above it changes: a call is a method, a
path, a JSON body and the cluster secret; its answer a status, a JSON body and what the
``X-Bazar-*`` headers would have said (``Stamp``). ``ReplicaClient`` sends a call on a
route in ``CARRIED`` this way when the replica has a channel address, and everything else
(reads, elections, status) over HTTP. A process serves each carried route with one handler
(``Handler``) behind both transports, so both give the same answers.

Failures read as they do over HTTP: a call that could not connect fails with ``NotSent``
(it never left); one whose connection drops, or that outlives its deadline, fails with
``Unavailable``. A call past its deadline on a connection that has been silent since the
call was sent also aborts that connection (a peer cut off sends nothing, and TCP could take
minutes to notice); the next call connects anew. If anything arrived meanwhile, the peer is
alive and only this call was slow: the connection, and the other calls on it, go on.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IReactorTCP, IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from bazar.client import ReplicaResponse
from bazar.config import Replica
from bazar.errors import BazarError, NotFound, NotSent, Unavailable, error_body
from bazar.jsonio import Reply
from bazar.protocol import (
    BUY_ROUTE,
    BUYS_PATH,
    INVALIDATE_PATH,
    PRICE_ROUTE,
    PURCHASE_ROUTE,
    QUANTITY_ROUTE,
    REPLICATE_PATH,
)
from bazar.secret import verify_secret
from bazar.wire import MAX_BODY, Answer, Frames, Request

log = Logger()

# The routes the channel carries: every write's, each with its one method. Each route is
# also the key of its handler.
CARRIED_ROUTES = {
    REPLICATE_PATH: "POST",
    INVALIDATE_PATH: "POST",
    BUY_ROUTE: "POST",
    BUYS_PATH: "POST",
    PURCHASE_ROUTE: "POST",  # the front end's writes, and a follower forwarding them
    PRICE_ROUTE: "PUT",
    QUANTITY_ROUTE: "PUT",
}
CARRIED_METHODS = frozenset(CARRIED_ROUTES.values())
CARRIED = Map([Rule(route, endpoint=route, methods=[method]) for route, method in CARRIED_ROUTES.items()])
MAX_CHANNEL_BODY = MAX_BODY  # a larger body goes over HTTP; no carried answer comes near it
_ROUTES = CARRIED.bind("localhost")


@functools.lru_cache(maxsize=4096)
def carried_route(method: str, path: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """The carried route a call belongs to, with its path arguments; None for one not carried.
    Remembered, because matching costs werkzeug several microseconds and every write asks
    again for the same few paths (about 4 % of a sequencer's CPU, measured)."""
    try:
        route, arguments = _ROUTES.match(path, method)
    except HTTPException:
        return None
    return route, tuple(arguments.items())


def channel_response(answer: Answer) -> ReplicaResponse:
    """A channel call's answer, as ``ReplicaClient`` gives one over HTTP."""
    return ReplicaResponse(
        answer.code, answer.body, answer.replica, {}, answer.seq, answer.sequencer, answer.epoch
    )


# A carried route's handler: the raw JSON body and the route's path arguments, to the answer.
Handler = Callable[..., "Reply | Deferred[Reply]"]


@dataclass(frozen=True)
class Stamp:
    """What a process says about itself on every answer: over HTTP, the ``X-Bazar-*`` headers."""

    replica: str
    seq: int = 0  # its last applied sequence number when the call arrived
    sequencer: str | None = None  # who sequences its role's writes, as far as it knows
    epoch: int = 0


# -- the serving side ----------------------------------------------------------------------


class ChannelServer(Factory):
    """Serves one process's carried routes (``handlers``, by route) over the channel's frames."""

    noisy = False

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        secret: str,
        stamp: Callable[[], Stamp],
        observe: Callable[[str, int, float], object] = lambda path, status, seconds: None,
    ) -> None:
        """``observe(path, status, seconds)`` is told of every call answered (metrics)."""
        self.handlers = handlers
        self.secret = secret
        self.stamp = stamp
        self.observe = observe

    def buildProtocol(self, addr: Any) -> Frames:
        return ChannelReceiver(self)

    def answer(self, request: Request) -> Deferred[Answer]:
        stamp = self.stamp()  # taken before the call runs, as over HTTP
        started = time.perf_counter()
        d: Deferred[Reply] = maybeDeferred(
            self._dispatch, request.secret, request.method, request.path, request.body
        )
        d.addErrback(self._failed, request.method, request.path)
        return d.addCallback(self._encode, stamp, request.path, started)

    def _dispatch(self, secret: str, method: str, path: str, body: bytes) -> Any:
        verify_secret(secret, self.secret)
        found = carried_route(method, path)
        handler = self.handlers.get(found[0]) if found is not None else None
        if found is None or handler is None:
            raise NotFound(f"no such path on the channel: {method} {path}")
        return handler(body, **dict(found[1]))

    @staticmethod
    def _failed(failure: Failure, method: str, path: str) -> Reply:
        if isinstance(failure.value, BazarError):
            return Reply(failure.value.code, failure.value.body())
        log.failure("unexpected error on channel call {method} {path}", failure, method=method, path=path)
        return Reply(500, error_body(500, "internal error; see the server's log"))

    def _encode(self, reply: Reply, stamp: Stamp, path: str, started: float) -> Answer:
        body = reply.body
        if len(body) > MAX_CHANNEL_BODY:  # no carried answer is near this; say so if one ever is
            log.error("answer to {path} too large for the channel: {size} bytes", path=path, size=len(body))
            reply = Reply(500, error_body(500, "answer too large for the internal channel"))
        self.observe(path, reply.code, time.perf_counter() - started)
        return Answer(reply.code, reply.body, stamp.replica, stamp.seq, stamp.sequencer, stamp.epoch)


class ChannelReceiver(Frames):
    def __init__(self, server: ChannelServer) -> None:
        super().__init__()
        self.server = server

    def answer(self, request: Request) -> Deferred[Answer]:
        # Nothing cancels a call when its caller goes away: a write runs to its end.
        return self.server.answer(request)


# -- the calling side ----------------------------------------------------------------------


class ChannelCaller(Frames):
    def __init__(self, on_lost: Callable[[ChannelCaller], None]) -> None:
        super().__init__()
        self.on_lost = on_lost
        self.lost: Deferred[None] = Deferred()

    def tcp(self) -> ITCPTransport:
        return cast(ITCPTransport, self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)  # fails every call still waiting for its answer
        self.on_lost(self)
        self.lost.callback(None)


class _CallerFactory(Factory):
    noisy = False  # no "Starting factory" line for every connection

    def __init__(self, on_lost: Callable[[ChannelCaller], None]) -> None:
        self.on_lost = on_lost

    def buildProtocol(self, addr: Any) -> ChannelCaller:
        return ChannelCaller(self.on_lost)


class Channel:
    """The calling side: one connection per peer, opened at the first call to it and
    again after it drops. Calls share it, each waiting for its own answer."""

    def __init__(self, reactor: IReactorTCP, clock: IReactorTime | None = None) -> None:
        self.reactor = reactor
        # A real reactor keeps time too; a test gives a Clock.
        self.clock: IReactorTime = clock if clock is not None else cast(IReactorTime, reactor)
        self._connected: dict[str, ChannelCaller] = {}
        # By address: the connection being made, and the callers waiting for it.
        self._connecting: dict[str, tuple[Deferred[ChannelCaller], list[Deferred[ChannelCaller]]]] = {}

    def carries(self, replica: Replica, method: str, path: str, body: bytes) -> bool:
        """Whether this call goes over the channel (else over HTTP)."""
        return (
            method in CARRIED_METHODS  # first, so that reads cost nothing here
            and replica.channel is not None
            and len(body) <= MAX_CHANNEL_BODY
            and carried_route(method, path) is not None
        )

    @inlineCallbacks
    def request(
        self, replica: Replica, secret: str, method: str, path: str, body: bytes, timeout: float
    ) -> Any:
        """The answer to one call, whatever its status, as ``ReplicaClient.request`` gives it."""
        deadline = self.clock.seconds() + timeout
        try:
            protocol = yield self._connection(replica, timeout)
        except Exception as e:
            raise NotSent(f"{replica.name} is unreachable: {type(e).__name__}") from None
        answer = yield self._call(
            protocol, replica, deadline - self.clock.seconds(), Request(secret, method, path, body)
        )
        return channel_response(answer)

    def _connection(self, replica: Replica, timeout: float) -> Deferred[ChannelCaller]:
        address = replica.channel
        assert address is not None
        connected = self._connected.get(address)
        if connected is not None:
            return succeed(connected)
        waiter: Deferred[ChannelCaller] = Deferred()
        waiter.addTimeout(timeout, self.clock)
        if address in self._connecting:
            self._connecting[address][1].append(waiter)
            return waiter
        factory = _CallerFactory(lambda lost: self._lost(address, lost))
        attempt = clientFromString(self.reactor, address).connect(factory)
        attempt.addTimeout(timeout, self.clock)
        self._connecting[address] = (attempt, [waiter])
        attempt.addBoth(self._settled, address)
        return waiter

    def _settled(self, result: ChannelCaller | Failure, address: str) -> None:
        _, waiters = self._connecting.pop(address)
        if not isinstance(result, Failure):
            self._connected[address] = result
        for waiter in waiters:
            if not waiter.called:  # else it gave up waiting already
                waiter.callback(result)  # a Failure goes on as one

    def _lost(self, address: str, protocol: ChannelCaller) -> None:
        if self._connected.get(address) is protocol:
            del self._connected[address]

    def _call(
        self, protocol: ChannelCaller, replica: Replica, timeout: float, request: Request
    ) -> Deferred[Answer]:
        answer: Deferred[Answer] = Deferred()
        received = protocol.received

        def expire() -> None:
            answer.errback(Unavailable(f"{replica.name} did not answer within {timeout:.3g} s"))
            if protocol.received == received:  # silent since: perhaps cut off
                protocol.tcp().abortConnection()
            # Either way its answer, if it ever comes, goes nowhere (``settle``).

        def settle(result: Any) -> None:
            if not timer.active():
                return  # expired, and the caller told so: a late answer or failure goes nowhere
            timer.cancel()
            if isinstance(result, Failure) and not result.check(BazarError):
                result = Failure(Unavailable(f"{replica.name} is unreachable: {type(result.value).__name__}"))
            answer.callback(result)

        timer = self.clock.callLater(max(timeout, 0), expire)
        maybeDeferred(protocol.call, request).addBoth(settle)
        return answer

    def close(self) -> Deferred[Any]:
        """Close every connection, and give up those being made; fires once all are closed."""
        for attempt, _ in list(self._connecting.values()):
            attempt.cancel()  # its callers get NotSent
        lost = []
        for protocol in list(self._connected.values()):
            lost.append(protocol.lost)
            protocol.tcp().loseConnection()
        return DeferredList(lost)

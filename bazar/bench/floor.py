"""``python -m bazar.bench.floor``: one process of a purchase's message chain, doing no work.

A purchase is a chain of messages between seven processes:

    client -> front end -> order sequencer -> catalog sequencer -> 2 catalog followers
                                                                 + the front end (invalidation)
                           order sequencer -> 2 order followers  (once the catalog answered)

On a small machine the chain has a cost of its own, whatever each process does: every hop
wakes a Python process, parses a message and answers, and seven processes share the cores.
This module runs the same chain over the same transports (the client's HTTP to a
``twisted.web`` resource at the front end; the internal channel's frames (``bazar.wire``) on one
persistent connection per peer, for every hop after it: the front end's purchase to the order sequencer
too, as Bazar's front end sends its writes over the internal channel) with each process doing
nothing else, or with ``--durable``, committing one
SQLite row per write at every replica, in WAL mode with ``synchronous=FULL`` through a
one-connection adbapi pool as Bazar's stores do: the least a write that must survive a crash
costs. ``bazar-bench`` (experiment 7, ``floor``) times purchases through it next to Bazar's
own: the difference is Bazar's work (routing, JSON, the stock check, the digest, the
idempotency table, the log, metrics).

Each role is told its peers' ports. The sequencers connect to their peers before they
listen, so the chain is started from its ends: followers first, then the front end, the catalog
sequencer, the order sequencer. The front end connects to the order sequencer at its first
purchase, as Bazar's channel connects at a peer's first call.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from bazar import wire
from bazar.reactors import IClientReactor, IServerReactor
from bazar.wire import Answer, Frames

log = Logger()

ROLES = ("follower", "catalog", "order", "front")
ANSWER = Answer(200, b"{}", "floor")
ORDER = Answer(200, b'{"ok":true}', "floor")  # the order sequencer's answer, passed on to the client


class Durable:
    """One SQLite row committed per write, as a Bazar replica commits its log entry; or nothing."""

    def __init__(self, directory: Path | None) -> None:
        self.pool: adbapi.ConnectionPool | None = None
        if directory is not None:
            from bazar.runners import open_pool  # WAL and synchronous=FULL, one connection

            self.pool = open_pool(directory / "floor.sqlite")

    def setup(self) -> Deferred[Any]:
        if self.pool is None:
            return succeed(None)
        return self.pool.runOperation("CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, entry TEXT)")

    def write(self) -> Deferred[Any]:
        if self.pool is None:
            return succeed(None)
        return self.pool.runOperation("INSERT INTO log (entry) VALUES ('{}')")


class Peers:
    """One channel connection per peer port, made before the process listens."""

    def __init__(self, reactor: IClientReactor) -> None:
        self.reactor = reactor
        self.connections: dict[int, Frames] = {}
        self._waiting: dict[int, list[Deferred[Frames]]] = {}  # for a connection under way

    async def connect(self, ports: Sequence[int]) -> None:
        for port in ports:
            self.connections[port] = await self._connect(port)

    def _connect(self, port: int) -> Deferred[Frames]:
        return connectProtocol(TCP4ClientEndpoint(self.reactor, "127.0.0.1", port), Frames())

    def call(self, port: int, body: bytes = b"{}") -> Deferred[Answer]:
        """A call to ``port``; the first connects, and the calls made meanwhile wait for it."""
        connection = self.connections.get(port)
        if connection is not None:
            return connection.call(wire.Request("", "POST", "/", body))
        connected: Deferred[Frames] = Deferred()
        if port not in self._waiting:
            self._waiting[port] = []
            self._connect(port).addBoth(self._connected, port)
        self._waiting[port].append(connected)
        return connected.addCallback(lambda _: self.call(port, body))

    def _connected(self, result: Frames | Failure, port: int) -> None:
        if not isinstance(result, Failure):
            self.connections[port] = result
        for waiter in self._waiting.pop(port):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def call_all(self, ports: Sequence[int]) -> Deferred[Any]:
        return gatherResults([self.call(port) for port in ports])


class Responder(Frames):
    """A follower, the catalog sequencer, or the front end's invalidation endpoint: one call in,
    its write and calls out (all at once), then the answer."""

    def __init__(self, durable: Durable, peers: Peers, downstream: Sequence[int]) -> None:
        super().__init__()
        self.durable = durable
        self.peers = peers
        self.downstream = downstream

    def answer(self, request: wire.Request) -> Deferred[Answer]:
        d = self.durable.write()
        if self.downstream:
            d.addCallback(lambda _: self.peers.call_all(self.downstream))
        return d.addCallback(lambda _: ANSWER)


class OrderSequencer(Frames):
    """A purchase: the buy at the catalog sequencer, then its own write, then its two followers."""

    def __init__(self, durable: Durable, peers: Peers, catalog: int, followers: Sequence[int]) -> None:
        super().__init__()
        self.durable = durable
        self.peers = peers
        self.catalog = catalog
        self.followers = followers

    def answer(self, request: wire.Request) -> Deferred[Answer]:
        d = self.peers.call(self.catalog)
        d.addCallback(lambda _: self.durable.write())
        d.addCallback(lambda _: self.peers.call_all(self.followers))
        return d.addCallback(lambda _: ORDER)


class FrontEnd(Resource):
    """POST: sent on to the order sequencer over the channel, its answer's body passed back."""

    isLeaf = True

    def __init__(self, peers: Peers, order: int) -> None:
        super().__init__()
        self.peers = peers
        self.order = order

    def render_POST(self, request: Request) -> Any:
        d = self.peers.call(self.order, b'{"quantity":1}')
        return _respond(request, d.addCallback(lambda answer: answer.body))


def _respond(request: Request, body: Deferred[bytes]) -> object:
    """Answer with ``body`` once it fires; a failure (a peer gone) as a 500, logged."""

    def send(content: bytes, code: int = 200) -> None:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", b"%d" % len(content))
        request.write(content)
        request.finish()

    def failed(failure: Failure) -> None:
        log.failure("a purchase through the floor failed", failure)
        send(b'{"error":"the floor failed"}', 500)

    body.addCallbacks(send, failed)
    return NOT_DONE_YET


def quiet_site(resource: Resource) -> Site:
    site = Site(resource)
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]  # Bazar logs no requests either
    return site


def listen(reactor: IServerReactor, port: int, factory: IProtocolFactory) -> Deferred[Any]:
    return serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1").listen(factory)


async def serve(reactor: IServerReactor, args: argparse.Namespace) -> None:
    """Connect to the peers, then listen (both ports, for the front end)."""
    durable = Durable(args.durable)
    await durable.setup()
    peers = Peers(reactor)
    await peers.connect(args.peer if args.role in ("catalog", "order") else [])
    if args.role == "order":
        catalog, *followers = args.peer
        sequencer = Factory.forProtocol(lambda: OrderSequencer(durable, peers, catalog, followers))
        await listen(reactor, args.port, sequencer)
    elif args.role == "front":
        (order,) = args.peer
        await listen(reactor, args.port, quiet_site(FrontEnd(peers, order)))
        await listen(reactor, args.channel_port, Factory.forProtocol(lambda: Responder(durable, peers, [])))
    else:
        downstream = args.peer if args.role == "catalog" else []
        await listen(reactor, args.port, Factory.forProtocol(lambda: Responder(durable, peers, downstream)))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bazar.bench.floor", description=__doc__)
    parser.add_argument("role", choices=ROLES)
    parser.add_argument(
        "--port", type=int, required=True, help="port on 127.0.0.1: HTTP (front) or the channel (the rest)"
    )
    parser.add_argument(
        "--peer",
        type=int,
        action="append",
        default=[],
        help="a peer's port, in order: catalog: its 2 followers and the front end's channel; "
        "order: the catalog sequencer, then its 2 followers; front: the order sequencer",
    )
    parser.add_argument("--channel-port", type=int, help="front: the channel port for invalidations")
    parser.add_argument("--durable", type=Path, help="commit one SQLite row per write, in this directory")
    args = parser.parse_args(argv)
    wanted = {"follower": 0, "catalog": 3, "order": 3, "front": 1}[args.role]
    if len(args.peer) != wanted:
        parser.error(f"{args.role} takes {wanted} --peer, not {len(args.peer)}")
    if (args.role == "front") != (args.channel_port is not None):
        parser.error("--channel-port is for the front end, and it needs one")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from twisted.internet import task

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])  # the bench keeps it in a file

    def started(_: None) -> Deferred[None]:
        gc.freeze()  # as Bazar's processes do after start-up
        log.info("floor: {role} on {port}", role=args.role, port=args.port)
        return Deferred()  # serve until stopped (SIGTERM)

    task.react(lambda reactor: Deferred.fromCoroutine(serve(reactor, args)).addCallback(started))
    return 0


if __name__ == "__main__":
    sys.exit(main())

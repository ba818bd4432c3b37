"""``python -m bazar.bench.ceiling --port N --size B``: the fastest Twisted can serve B bytes here.

A cache hit at the front end is "send bytes we already have", so the best it could ever do
on this machine is a bare ``twisted.web`` resource sending the same number of bytes, on the
same reactor, with the same per-request work left out (no routing, no access log). The
benchmark reports hit throughput as a fraction of this server's. With ``--reuse-port``, several
of them share one port as several front ends do (``bazar.shared_port``): the ceiling of N front
ends is N of these.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from bazar.reactors import IServerReactor
from bazar.shared_port import SharedPortService

log = Logger()


def body_of_size(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes (at least 2), like the front end's answers."""
    if size < 2:
        raise ValueError(f"a JSON body needs at least 2 bytes, not {size}")
    if size < 10:
        return b"{}".ljust(size)
    body = json.dumps({"pad": "x" * (size - 10)}, separators=(",", ":")).encode()
    assert len(body) == size
    return body


class FixedBody(Resource):
    """Every GET (any path) gets the same JSON bytes, with a Content-Length like the front end's."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body
        self.length = b"%d" % len(body)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", self.length)
        return self.body


def make_site(body: bytes) -> Site:
    site = Site(FixedBody(body))
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]  # the front end logs no requests either
    return site


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bazar.bench.ceiling", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 to listen on")
    parser.add_argument("--size", type=int, default=128, help="bytes of JSON to answer with (default 128)")
    parser.add_argument(
        "--reuse-port", action="store_true", help="share the port with other processes (SO_REUSEPORT)"
    )
    args = parser.parse_args(argv)
    from twisted.internet import task

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])  # the bench keeps it in a file
    site = make_site(body_of_size(args.size))

    async def serve(reactor: IServerReactor) -> None:
        endpoint = f"tcp:{args.port}:interface=127.0.0.1"
        if args.reuse_port:
            SharedPortService(endpoint, site, reactor).startService()
        else:
            await serverFromString(reactor, endpoint).listen(site)
        log.info("ceiling: {size} bytes at http://127.0.0.1:{port}/", size=args.size, port=args.port)
        await Deferred()  # serve until stopped (SIGTERM)

    task.react(lambda reactor: Deferred.fromCoroutine(serve(reactor)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Raw HTTP/1.1 against the production server (``bazar.http_limits.make_site``) over a
``StringTransport``: what a client sends, byte for byte, and what it gets back, parsed.

Unlike ``treq`` (and ``StubTreq``), nothing here tidies a request up first, so a test can
send what no well-behaved client would: a 5 MB header, a body that never ends, a stray byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import _producer_helpers
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock, Cooperator
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import IResource

from bazar.http_limits import make_site

ROUNDS = 20  # turns of the clock that settle() allows a request: far more than any needs


@dataclass(frozen=True)
class RawReply:
    code: int
    headers: dict[str, str]  # lower-case names, the last value of each
    body: bytes


def parse_replies(data: bytes, head: bool = False) -> list[RawReply]:
    """The complete responses in ``data`` (interim 1xx ones left out); ``head``: answers to HEAD,
    so with no body whatever their Content-Length says."""
    replies = []
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return replies
        status, *lines = data[:end].split(b"\r\n")
        code = int(status.split(b" ")[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        rest = data[end + 4 :]
        if 100 <= code < 200:
            data = rest
            continue
        if head or code in (204, 304):
            body = b""
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if len(rest) < length:
                return replies
            body, rest = rest[:length], rest[length:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            decoded = _dechunk(rest)
            if decoded is None:
                return replies
            body, rest = decoded
        else:
            body, rest = rest, b""  # delimited by the connection's close
        replies.append(RawReply(code, headers, body))
        data = rest


def _dechunk(data: bytes) -> tuple[bytes, bytes] | None:
    body = b""
    while True:
        line, sep, data = data.partition(b"\r\n")
        if not sep:
            return None
        size = int(line.split(b";")[0], 16)
        if size == 0:
            _, sep, data = data.partition(b"\r\n")  # no trailers are ever sent
            return (body, data) if sep else None
        if len(data) < size + 2:
            return None
        body, data = body + data[:size], data[size + 2 :]


def error_shape_problem(reply: RawReply) -> str | None:
    """What is wrong with ``reply`` as a JSON error of its own status; None if nothing."""
    if reply.headers.get("content-type") != "application/json":
        return f"{reply.code} with Content-Type {reply.headers.get('content-type')!r}: {reply.body[:200]!r}"
    try:
        decoded = json.loads(reply.body)
    except ValueError:
        return f"{reply.code} with a body that is not JSON: {reply.body[:200]!r}"
    error = decoded.get("error") if isinstance(decoded, dict) else None
    # A purchase's error also gives its idempotency key back (see the OpenAPI document's Error).
    extra = set(decoded) - {"error"} if isinstance(decoded, dict) else set()
    if extra - {"idempotency_key"} or not isinstance(error, dict) or set(error) != {"code", "message"}:
        return f"{reply.code} not in the error shape: {decoded!r}"
    if error["code"] != reply.code or not isinstance(error["message"], str) or not error["message"].strip():
        return f"{reply.code} with the error {error!r}"
    return None


class RawConnection:
    """One client connection to ``make_site(resource)``, on ``clock``."""

    def __init__(
        self,
        test: SynchronousTestCase,
        resource: IResource,
        clock: Clock | None = None,
        transport: StringTransport | None = None,
        flush: Callable[[], None] = lambda: None,
    ) -> None:
        self.clock = clock or Clock()
        self.flush = flush  # e.g. MemCluster.flush: what the server's own requests need
        # Static files are pulled through Twisted's global cooperator, which runs on the real
        # reactor: this test's clock drives it instead.
        cooperator = Cooperator(scheduler=lambda work: self.clock.callLater(0, work))
        test.patch(_producer_helpers, "cooperate", cooperator.cooperate)
        site = make_site(resource)
        site.reactor = self.clock
        self.protocol: Any = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = transport or StringTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def settle(self) -> None:
        """Let everything the request started run, without the clock moving on."""
        for _ in range(ROUNDS):
            self.flush()
            self.clock.advance(0)

    def replies(self, head: bool = False) -> list[RawReply]:
        return parse_replies(self.transport.value(), head)

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

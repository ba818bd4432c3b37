"""The load generator: a lean keep-alive HTTP/1.1 client on the reactor, and bounded closed loops.

Why not treq: its Agent, pool and body collection cost a few hundred microseconds of CPU per
request, about what a cache hit costs the front end, so at 5 concurrent clients on a small
machine the generator would measure itself. Here each virtual client owns one persistent
connection and writes a prebuilt request; the response is parsed straight from the socket
buffer (Content-Length or chunked), and the latency is taken with ``time.perf_counter``
from the write to the byte that completes the response — connection set-up is not in it.

Every loop is bounded twice: by a request count and by a time limit (no new request starts
after the limit; one in flight ends within its timeout). Targets must be loopback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from bazar.bench.progress import Task
from bazar.protocol import CACHE_HEADER, REPLICA_HEADER
from bazar.reactors import IClientReactor

LOOPBACK_NAMES = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1"}
MAX_HEADER_BYTES = 64 * 1024


class RequestError(Exception):
    """A request got no (valid) answer: refused, reset, timed out or malformed."""


class ProtocolError(RequestError):
    """The server's bytes are not an HTTP/1.1 response this client understands."""


# -- targets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where load goes: a loopback host and port (and the URL as the user gave it)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str) -> Target:
        """Parse ``http://127.0.0.1:5000``; ValueError for anything that is not plain HTTP on loopback."""
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"{url!r}: only http:// URLs are supported")
        host = LOOPBACK_NAMES.get(parts.hostname or "")
        if host is None:
            raise ValueError(f"{url!r}: the benchmark only sends traffic to 127.0.0.1 (or localhost)")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"{url!r}: give the front end's base URL, without a path")
        return cls(host, parts.port or 80)


# -- HTTP/1.1 on the wire ------------------------------------------------------------------------


def build_request(
    method: str, path: str, host: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> bytes:
    """The request's bytes, written once per request (no headers beyond what HTTP/1.1 needs,
    and ``headers``, e.g. the cluster secret for ``/metrics``)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head + (body or b"")


@dataclass(frozen=True)
class Parsed:
    status: int
    headers: Mapping[str, str]
    body: bytes
    consumed: int
    close: bool


def _chunked(buffer: bytes, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body from ``start``: (body, end offset), or None until all of it is here."""
    pieces: list[bytes] = []
    pos = start
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return None
        try:
            size = int(buffer[pos:line_end].split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size line {buffer[pos:line_end][:40]!r}") from None
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", line_end)
            if buffer[line_end + 2 : line_end + 4] == b"\r\n":
                return b"".join(pieces), line_end + 4
            if trailer_end < 0:
                return None
            return b"".join(pieces), trailer_end + 4
        data_start = line_end + 2
        data_end = data_start + size
        if len(buffer) < data_end + 2:
            return None
        pieces.append(buffer[data_start:data_end])
        pos = data_end + 2


def parse_response(buffer: bytes) -> Parsed | None:
    """One complete response from the start of ``buffer``, or None if more bytes are needed."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        if len(buffer) > MAX_HEADER_BYTES:
            raise ProtocolError("response headers larger than 64 KiB")
        return None
    lines = buffer[:head_end].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
    try:
        status = int(rest.split(" ", 1)[0])
    except ValueError:
        raise ProtocolError(f"bad status line {lines[0][:60]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
    body_start = head_end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        decoded = _chunked(buffer, body_start)
        if decoded is None:
            return None
        body, end = decoded
        return Parsed(status, headers, body, end, close)
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise ProtocolError(f"bad Content-Length {headers['content-length']!r}") from None
        end = body_start + length
        if len(buffer) < end:
            return None
        return Parsed(status, headers, bytes(buffer[body_start:end]), end, close)
    if status in (204, 304) or 100 <= status < 200:
        return Parsed(status, headers, b"", body_start, close)
    raise ProtocolError(f"a {status} response with neither Content-Length nor chunked encoding")


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed: float  # seconds, from writing the request to the byte that completed the response

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


class HTTPConnection(Protocol):
    """One persistent connection, one request at a time (no pipelining)."""

    def __init__(self, clock: IClientReactor) -> None:
        self.clock = clock
        self.closed = False
        self.reusable = True
        self._buffer = bytearray()
        self._waiting: Deferred[Response] | None = None
        self._timer: IDelayedCall | None = None
        self._timed_out = False
        self._sent_at = 0.0

    def connectionMade(self) -> None:
        no_delay = getattr(self.transport, "setTcpNoDelay", None)  # TCP transports have it
        if no_delay is not None:
            no_delay(True)  # a request is one write: send it now, not after Nagle's delay

    def send(self, raw: bytes, timeout: float) -> Deferred[Response]:
        if self._waiting is not None:
            raise RuntimeError("one request at a time on a connection")
        if self.closed:
            raise RequestError("the connection is closed")
        d: Deferred[Response] = Deferred()
        self._waiting = d
        self._timer = self.clock.callLater(timeout, self._timeout)
        self._sent_at = time.perf_counter()
        self.transport.write(raw)  # type: ignore[union-attr]
        return d

    def _timeout(self) -> None:
        self._timer = None
        self._timed_out = True
        self.transport.abortConnection()  # type: ignore[union-attr]  # fails the request in connectionLost

    def _take(self) -> Deferred[Response]:
        d, self._waiting = self._waiting, None
        assert d is not None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        return d

    def dataReceived(self, data: bytes) -> None:
        now = time.perf_counter()
        self._buffer += data
        if self._waiting is None:
            self.reusable = False  # bytes nobody asked for: do not trust this connection again
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        try:
            parsed = parse_response(bytes(self._buffer))
        except ProtocolError as e:
            self.reusable = False
            self._take().errback(e)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if parsed is None:
            return
        del self._buffer[: parsed.consumed]
        if parsed.close or self._buffer:
            self.reusable = False
        self._take().callback(Response(parsed.status, parsed.headers, parsed.body, now - self._sent_at))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        self.reusable = False
        if self._waiting is not None:
            why = "timed out" if self._timed_out else f"connection lost ({reason.getErrorMessage()})"
            self._take().errback(RequestError(why))


class HTTPClient:
    """One virtual client: one keep-alive connection to ``target``, reopened when it breaks."""

    def __init__(self, reactor: IClientReactor, target: Target, timeout: float = 10.0) -> None:
        self.reactor = reactor
        self.target = target
        self.timeout = timeout
        self._host = f"{target.host}:{target.port}"
        self._connection: HTTPConnection | None = None

    async def _connect(self) -> HTTPConnection:
        current = self._connection
        if current is not None and current.reusable and not current.closed:
            return current
        if current is not None and not current.closed:
            current.transport.abortConnection()  # type: ignore[union-attr]
        endpoint = TCP4ClientEndpoint(self.reactor, self.target.host, self.target.port, timeout=self.timeout)
        try:
            connection = await connectProtocol(endpoint, HTTPConnection(self.reactor))
        except Exception as e:
            raise RequestError(f"cannot connect to {self.target.url}: {e}") from None
        self._connection = connection
        return connection

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> Response:
        connection = await self._connect()
        raw = build_request(method, path, self._host, body, headers)
        return await connection.send(raw, self.timeout)

    def close(self) -> None:
        if self._connection is not None and not self._connection.closed:
            self._connection.transport.loseConnection()  # type: ignore[union-attr]
        self._connection = None


# -- bounded closed loops --------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request of a loop's plan; ``op`` is what the results group it under."""

    op: str
    method: str
    path: str
    body: bytes | None = None


@dataclass(frozen=True)
class Sample:
    op: str
    path: str
    start: float  # seconds since the loop started
    ms: float  # latency; 0 when the request failed
    status: int  # 0 when the request failed
    cache: str  # X-Bazar-Cache: hit, miss or ""
    replica: str  # X-Bazar-Replica or ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class LoopResult:
    samples: list[Sample] = field(default_factory=list)
    elapsed: float = 0.0
    planned: int = 0
    truncated: bool = False  # the time limit stopped it before ``planned`` requests

    @property
    def throughput(self) -> float:
        return len(self.samples) / self.elapsed if self.elapsed > 0 else 0.0

    def of(self, op: str) -> list[Sample]:
        return [s for s in self.samples if s.op == op]


Observer = Callable[[Call, Response | None], None]


async def closed_loop(
    reactor: IClientReactor,
    target: Target,
    plan: Callable[[int], Call],
    *,
    count: int,
    concurrency: int,
    max_seconds: float,
    timeout: float = 10.0,
    task: Task | None = None,
    observe: Observer | None = None,
) -> LoopResult:
    """``concurrency`` clients each send their next request as soon as the last one is answered.

    ``plan(i)`` gives the i-th request (called in dispatch order, so a seeded plan is
    reproducible). Stops after ``count`` requests or ``max_seconds``, whichever comes first.
    """
    result = LoopResult(planned=count)
    started = time.perf_counter()
    deadline = started + max_seconds
    next_index = 0

    async def client() -> None:
        nonlocal next_index
        http = HTTPClient(reactor, target, timeout)
        try:
            while next_index < count:
                if time.perf_counter() >= deadline:
                    result.truncated = True
                    return
                call = plan(next_index)
                next_index += 1
                start = time.perf_counter() - started
                try:
                    response = await http.request(call.method, call.path, call.body)
                except RequestError as e:
                    result.samples.append(Sample(call.op, call.path, start, 0.0, 0, "", "", str(e)))
                    if observe is not None:
                        observe(call, None)
                else:
                    result.samples.append(
                        Sample(
                            call.op,
                            call.path,
                            start,
                            response.elapsed * 1000,
                            response.status,
                            response.header(CACHE_HEADER),
                            response.header(REPLICA_HEADER),
                        )
                    )
                    if observe is not None:
                        observe(call, response)
                if task is not None:
                    task.update(len(result.samples))
        finally:
            http.close()

    await gatherResults([Deferred.fromCoroutine(client()) for _ in range(max(1, concurrency))])
    result.elapsed = time.perf_counter() - started
    return result

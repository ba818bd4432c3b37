"""The HTTP server every role runs: Twisted's, with its limits answered in the JSON error shape.

Twisted's ``HTTPChannel`` enforces limits on a request's head, but answers a breach with a
bare ``400`` (too many headers, a malformed line) or with nothing at all (a line over
``MAX_LENGTH``), and it reads a body to its end before the request sees it. Here every
refusal is ``{"error": {"code", "message"}}`` with its own status, sent as soon as the
breach is seen:

* a request line over ``MAX_LINE`` bytes: 414;
* a header line over ``MAX_LINE`` bytes, a head over ``MAX_HEAD`` bytes, or more than
  ``MAX_HEADERS`` headers: 431;
* a declared ``Content-Length`` over ``MAX_BODY``: 413 when the headers end (not when the
  body has arrived, which might be never); a chunked body: 413 once it passes ``MAX_BODY``;
* anything else Twisted cannot parse: 400.

Then the connection closes: the rest of the request is never read into a buffer.
"""

from __future__ import annotations

import io
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote_to_bytes

from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from bazar.errors import (
    BadRequest,
    BazarError,
    HeaderFieldsTooLarge,
    MethodNotAllowed,
    PayloadTooLarge,
    URITooLong,
)
from bazar.json_errors import failure_response
from bazar.jsonio import JSON, MAX_BODY, respond

log = Logger()

IDLE_TIMEOUT = 60  # seconds an idle client connection is kept open
MAX_LINE = 16 * 1024  # bytes in the request line, and in any one header line (Twisted's own)
MAX_HEAD = 16 * 1024  # bytes in the request line and all headers together (Twisted's own)
MAX_HEADERS = 100  # headers in one request (Apache's default; Twisted allows 500)
# Seconds a refused connection is kept half-open, its input read and dropped, before it is
# closed: closed at once with unread input, the kernel would reset it, and a client still
# sending (a 5 MB header) would see the reset, not the answer.
LINGER = 2.0


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def refusal(error: BazarError) -> bytes:
    """A whole HTTP/1.1 response carrying ``error``, for a request that will not be read to its end."""
    body = error.body()
    head = (
        f"HTTP/1.1 {error.code} {HTTPStatus(error.code).phrase}\r\n"
        f"Content-Type: {JSON}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class BoundedChannel(HTTPChannel):
    """An ``HTTPChannel`` that answers every breach of its limits in JSON, at once, and closes."""

    MAX_LENGTH = MAX_LINE
    totalHeadersSize = MAX_HEAD
    maxHeaders = MAX_HEADERS

    _refused = False
    _at_request_line = True  # no byte of the next request's line has been parsed yet
    _head_bytes = 0
    _header_count = 0

    def refuse(self, error: BazarError) -> None:
        """Answer ``error`` before the request is complete, and stop reading it."""
        if self._refused:
            return
        self._refused = True
        self.clearLineBuffer()
        transport: Any = self.transport
        transport.write(refusal(error))
        half_closes = ITCPTransport.providedBy(transport)  # (not in the if: mypy would narrow)
        if half_closes:
            # Half-close: the client reads the answer and closes, or LINGER ends it.
            transport.unregisterProducer()
            transport.loseWriteConnection()
            self.setTimeout(LINGER)
        else:
            self.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return  # dropped unread; not even the idle timer is reset
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if line:  # Twisted skips one empty line before a request line
            self._at_request_line = False
        self._head_bytes += len(line)
        if self._head_bytes > self.totalHeadersSize:
            self.refuse(HeaderFieldsTooLarge(f"the request's head is larger than {MAX_HEAD} bytes"))
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._at_request_line:
            self.refuse(URITooLong(f"the request line is longer than {MAX_LINE} bytes"))
        else:
            self.refuse(HeaderFieldsTooLarge(f"a header line is longer than {MAX_LINE} bytes"))

    def headerReceived(self, line: bytes) -> bool:
        self._header_count += 1
        if self._header_count > self.maxHeaders:
            self.refuse(HeaderFieldsTooLarge(f"more than {self.maxHeaders} headers"))
            return False
        return bool(super().headerReceived(line))

    def allHeadersReceived(self) -> None:
        if self.length is not None and self.length > MAX_BODY:
            # Before Twisted would answer "100 Continue" to it, or make room for it.
            self.refuse(PayloadTooLarge(f"request body larger than {MAX_BODY} bytes"))
            return
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        if self._refused:
            return  # the rest of a refused body, already in hand: not a request to serve
        self._at_request_line, self._head_bytes, self._header_count = True, 0, 0
        super().allContentReceived()

    def _respondToBadRequestAndDisconnect(self) -> None:
        """Twisted's answer to whatever it cannot parse: a bare 400, here in JSON. (A private
        method, but the one place Twisted answers a parse error; were it renamed, those 400s
        would be bare again, and ``LimitTests`` would say so.)"""
        self.refuse(BadRequest("malformed HTTP request"))


class BoundedRequest(Request):
    """A request whose body is counted as it arrives, and refused (413) once past ``MAX_BODY``;
    whose path and host must be UTF-8; and whose unexpected failures are JSON 500s."""

    _received = 0

    def gotLength(self, length: int | None) -> None:
        # In memory: the channel has refused any declared length over MAX_BODY, and a chunked
        # body is refused as it passes it. (Twisted would give a chunked body a temporary file.)
        self.content = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > MAX_BODY:
            cast(BoundedChannel, self.channel).refuse(
                PayloadTooLarge(f"request body larger than {MAX_BODY} bytes")
            )
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        # Klein would answer the first two (and log an error) in plain text, Twisted the third
        # with no body at all.
        if not _utf8(unquote_to_bytes(self.path)):
            self._answer(BadRequest("the URL path is not valid UTF-8"))
        elif not all(_utf8(host) for host in self.requestHeaders.getRawHeaders(b"host", [])):
            self._answer(BadRequest("the Host header is not valid UTF-8"))
        elif self.path == b"*" and self.method != b"OPTIONS":
            self.setHeader(b"Allow", b"OPTIONS")
            self._answer(MethodNotAllowed("only OPTIONS applies to the whole server (*)"))
        else:
            super().process()

    def _answer(self, error: BazarError) -> None:
        self.write(respond(self, error.body(), error.code))
        self.finish()

    def processingFailed(self, reason: Failure) -> Any:
        """A resource outside Klein's error handlers raised: a JSON 500, not Twisted's HTML page."""
        if self.startedWriting:  # too late for a status: cut the answer short
            log.failure("failed after answering {path}", reason, path=self.path)
            self.loseConnection()
            return reason
        self.write(failure_response(self, reason))
        self.finish()
        return reason


def make_site(resource: IResource) -> Site:
    """A Site that never shows tracebacks, bounds requests (above), drops idle connections,
    and skips per-request access logging (it costs ~15% of throughput).

    Every body is JSON, so no POST is parsed as a form: Twisted would otherwise parse each
    POST's Content-Type with the ``email`` package (about 3% of a replica's CPU per write)."""
    site = Site(resource, requestFactory=BoundedRequest, timeout=IDLE_TIMEOUT, parsePOSTFormSubmission=False)
    # A channel of ours instead of Twisted's HTTP/2-or-1.1 switch: no endpoint here offers TLS,
    # so HTTP/2 (negotiated over TLS) never arises.
    site.protocol = BoundedChannel  # type: ignore[assignment]
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site

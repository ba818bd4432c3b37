"""JSON in and out, for every role's HTTP API and for the internal channel.

Answers carry a Content-Length (not chunks); request bodies are read up to ``MAX_BODY``
bytes and must be JSON objects. A ``Reply`` is the answer of a handler that serves both
HTTP and the channel (``bazar.channel``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from bazar.errors import BadRequest, PayloadTooLarge

JSON = "application/json"
MAX_BODY = 64 * 1024  # bytes: the largest request body any endpoint accepts


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def respond(request: IRequest, body: bytes, code: int = 200) -> bytes:
    """Answer with JSON ``body`` (already encoded), with a Content-Length rather than chunks."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", JSON)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def respond_json(request: IRequest, obj: Any, code: int = 200) -> bytes:
    return respond(request, json_bytes(obj), code)


@dataclass(frozen=True)
class Reply:
    """A status and a JSON body: the answer of a handler that serves both HTTP and the
    internal channel (``bazar.channel``), so that both transports answer alike."""

    code: int
    body: bytes


def json_reply(obj: Any, code: int = 200) -> Reply:
    return Reply(code, json_bytes(obj))


def respond_reply(request: IRequest, reply: Reply | Deferred[Reply]) -> bytes | Deferred[bytes]:
    """Answer ``request`` with ``reply``, at once or when it comes."""
    if isinstance(reply, Deferred):
        return reply.addCallback(lambda r: respond(request, r.body, r.code))
    return respond(request, reply.body, reply.code)


def read_json(request: IRequest, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object body; ``{}`` for an empty body when not ``required``."""
    return parse_json(read_body(request), required=required)


def read_body(request: IRequest) -> bytes:
    raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge(f"request body larger than {MAX_BODY} bytes")
    return raw


def parse_json(raw: bytes, *, required: bool = True) -> dict[str, Any]:
    """A JSON object body; ``{}`` for an empty one when not ``required``."""
    if not raw.strip():
        if required:
            raise BadRequest("a JSON object body is required")
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON") from None
    except RecursionError:  # nested deeper than the interpreter's stack (about 1000 levels)
        raise BadRequest("request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def raw_header(request: IRequest, name: str) -> bytes | None:
    """A request header's last value as sent: bytes, which need not be UTF-8 (``getHeader``
    with a ``str`` name would decode them, and raise on a client's stray byte)."""
    values = request.requestHeaders.getRawHeaders(name.encode("ascii"))
    return values[-1] if values else None

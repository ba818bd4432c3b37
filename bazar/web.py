"""HTTP plumbing every role shares: JSON in and out, JSON errors, the cluster secret.

(The server itself, and its limits, are in ``bazar.http_limits``.)

Each Klein app calls ``install_json_errors(app)`` in its class body, so every failure, from
a domain error to an unknown path, leaves as ``{"error": {"code", "message"}}`` and never
as a traceback.
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from bazar.errors import (
    BadRequest,
    BazarError,
    Forbidden,
    PayloadTooLarge,
    Unauthorized,
    error_body,
)
from bazar.protocol import SECRET_HEADER

log = Logger()

F = TypeVar("F", bound=Callable[..., Any])

JSON = "application/json"
MAX_BODY = 64 * 1024  # bytes: the largest request body any endpoint accepts
RETRY_AFTER = b"1"  # seconds, on every 503: long enough for a failed replica to be replaced


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


def shielded(work: Deferred[Any]) -> Deferred[Any]:
    """``work``'s result, in a Deferred whose cancellation does not reach ``work``."""
    answer: Deferred[Any] = Deferred()

    def deliver(result: Any) -> None:
        if not answer.called:
            answer.callback(result)  # a Failure goes on as one
        elif isinstance(result, Failure) and not result.check(BazarError):
            log.failure("a write whose caller had gone failed", result)

    work.addBoth(deliver)
    return answer


def runs_to_completion(handler: F) -> F:
    """For write handlers: the write runs to its end even if its caller goes away.

    Klein cancels a handler's Deferred when the client disconnects, and a caller's deadline
    closes the connection too. Cancelled half-way, a purchase could take the stock and
    record no order, or a catalog write could commit without the front end being told to
    drop its copies. Shielded, only the answer is dropped.
    """

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        result = handler(*args, **kwargs)
        return shielded(result) if isinstance(result, Deferred) else result

    return run  # type: ignore[return-value]


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


def parse_id(text: str, what: str = "book id") -> int:
    """A non-negative integer from a path segment, or a 400 that says what was wrong."""
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise BadRequest(f"{what} must be a non-negative integer, not {text!r}")
    return int(text)


def query_id(request: IRequest, name: str, default: int) -> int:
    """A non-negative integer query parameter (its first value), ``default`` if absent."""
    values = (request.args or {}).get(name.encode())
    if not values:
        return default
    return parse_id(values[0].decode("ascii", "replace"), name)


def check_secret(request: IRequest, secret: str) -> None:
    """Internal endpoints: 401 without the cluster secret, 403 with a wrong one (constant time)."""
    verify_secret(raw_header(request, SECRET_HEADER), secret)


def raw_header(request: IRequest, name: str) -> bytes | None:
    """A request header's last value as sent: bytes, which need not be UTF-8 (``getHeader``
    with a ``str`` name would decode them, and raise on a client's stray byte)."""
    values = request.requestHeaders.getRawHeaders(name.encode("ascii"))
    return values[-1] if values else None


def verify_secret(given: str | bytes | None, secret: str) -> None:
    if given is None:
        raise Unauthorized(f"this endpoint is internal: the {SECRET_HEADER} header is required")
    if isinstance(given, str):
        given = given.encode()
    if not hmac.compare_digest(given, secret.encode()):
        raise Forbidden("wrong cluster secret")


def _bazar_error(self: Any, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, BazarError)
    if error.code == 503:
        request.setHeader(b"Retry-After", RETRY_AFTER)  # e.g. while another replica takes over
    return respond(request, error.body(), error.code)


def _http_error(self: Any, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, HTTPException)
    code = error.code or 500
    if code == 405:
        allowed = error.valid_methods or []  # type: ignore[attr-defined]
        request.setHeader(b"Allow", ", ".join(allowed))
        message = f"method {request.method.decode()} not allowed here; use {', '.join(allowed)}"
    elif code == 404:
        message = f"no such path: {request.path.decode(errors='replace')}"
    elif isinstance(error, RequestRedirect):  # e.g. "/internal" -> "/internal/": say where to
        request.setHeader(b"Location", error.new_url)
        message = f"moved to {error.new_url}"
    else:
        message = error.description or error.name
    return respond(request, error_body(code, message), code)


def _unexpected(self: Any, request: IRequest, failure: Failure) -> bytes:
    log.failure("unexpected error on {method} {path}", failure, method=request.method, path=request.path)
    return respond(request, error_body(500, "internal error; see the server's log"), 500)


def failure_response(request: IRequest, failure: Failure) -> bytes:
    """The JSON error a failure of a request's work becomes, outside Klein's error handlers
    (Klein itself raises werkzeug's before they apply: ``BadHost`` for a Host it cannot encode)."""
    if isinstance(failure.value, BazarError):
        return _bazar_error(None, request, failure)
    if isinstance(failure.value, HTTPException):
        return _http_error(None, request, failure)
    return _unexpected(None, request, failure)


def install_json_errors(app: Klein) -> None:
    """Map every failure an app can raise to the JSON error shape (most specific first)."""
    app.handle_errors(BazarError)(_bazar_error)
    app.handle_errors(HTTPException)(_http_error)
    app.handle_errors(Exception)(_unexpected)

"""Every failure an HTTP API can raise, answered as ``{"error": {"code", "message"}}``.

Each Klein app calls ``install_json_errors(app)`` in its class body, so every failure, from
a domain error to an unknown path, leaves in that shape and never as a traceback.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from bazar.errors import BazarError, error_body
from bazar.jsonio import respond

log = Logger()

RETRY_AFTER = b"1"  # seconds, on every 503: long enough for a failed replica to be replaced


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

"""What the front end sends a client: a cached answer, a replica's answer passed on, and a
purchase's error with its idempotency key.

A hit is answered the same way by the routes and by the lean path before Klein
(``bazar.frontend.fastpath``): both call ``send_hit``.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from bazar import validation
from bazar.client import ReplicaResponse
from bazar.errors import BazarError
from bazar.json_errors import RETRY_AFTER
from bazar.jsonio import JSON, json_bytes, respond
from bazar.protocol import CACHE_HEADER, REPLICA_HEADER

_JSON = JSON.encode()
_HIT = b"hit"


def send_hit(request: IRequest, cached: ReplicaResponse) -> bytes:
    """A cached answer as it was first sent, marked as a hit."""
    request.setResponseCode(cached.code)
    headers = request.responseHeaders
    headers.setRawHeaders(b"Content-Type", [_JSON])
    headers.setRawHeaders(b"Content-Length", [b"%d" % len(cached.body)])
    headers.setRawHeaders(CACHE_HEADER, [_HIT])
    for name, value in cached.headers.items():  # a page's total and next link
        headers.setRawHeaders(name, [value])
    return cached.body


def relay(response: ReplicaResponse, request: IRequest) -> bytes:
    """A replica's answer, passed on with the headers the client should see."""
    request.setHeader(REPLICA_HEADER, response.replica)
    for name, value in response.headers.items():
        request.setHeader(name, value)
    if response.code == 503:
        request.setHeader(b"Retry-After", RETRY_AFTER)
    return respond(request, response.body, response.code)


def keyed_error(code: int, message: str, key: str) -> bytes:
    """A purchase's error, with its key; one that may have happened (5xx) says how to find out."""
    if code >= 500:
        message = validation.in_doubt(message, key)
    return json_bytes({"error": {"code": code, "message": message}, "idempotency_key": key})


def keyed_answer(response: ReplicaResponse, key: str) -> ReplicaResponse:
    """An order replica's error answer, with the key (its order is the key's, and says so)."""
    if response.code < 400:
        return response
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
    except (ValueError, TypeError, KeyError):
        return response
    return replace(response, body=keyed_error(code, message, key))


def purchase_failed(failure: Failure, request: IRequest, key: str) -> bytes:
    """This front end's own error for a purchase (a bad request, an order replica that
    cannot be reached or did not answer in time), with the key."""
    failure.trap(BazarError)
    error = failure.value
    assert isinstance(error, BazarError)
    if error.code == 503:
        request.setHeader(b"Retry-After", RETRY_AFTER)
    return respond(request, keyed_error(error.code, error.message, key), error.code)

"""Domain errors, each carrying the HTTP status that the apps answer with.

Every Klein app maps ``BazarError`` to ``{"error": {"code": ..., "message": ...}}``, so
the code that detects a problem says what it is, and one place says how it looks on the wire.
"""

from __future__ import annotations

import json


class BazarError(Exception):
    code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> bytes:
        return error_body(self.code, self.message)


class BadRequest(BazarError):
    code = 400


class Unauthorized(BazarError):
    code = 401


class Forbidden(BazarError):
    code = 403


class NotFound(BazarError):
    code = 404


class MethodNotAllowed(BazarError):
    code = 405


class Conflict(BazarError):
    code = 409


class PayloadTooLarge(BazarError):
    code = 413


class URITooLong(BazarError):
    code = 414


class HeaderFieldsTooLarge(BazarError):
    code = 431


class Unavailable(BazarError):
    code = 503


class NotSent(Unavailable):
    """The replica could not even be connected to: the request never left, so it is safe
    to send it to another replica, even a write."""


class ReplicaError(BazarError):
    """A replica answered with an error of its own: passed on with its status and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_body(code: int, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()

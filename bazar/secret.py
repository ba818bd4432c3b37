"""The cluster secret: every internal call must carry it (``SECRET_HEADER``)."""

from __future__ import annotations

import hmac

from twisted.web.iweb import IRequest

from bazar.errors import Forbidden, Unauthorized
from bazar.jsonio import raw_header
from bazar.protocol import SECRET_HEADER


def check_secret(request: IRequest, secret: str) -> None:
    """Internal endpoints: 401 without the cluster secret, 403 with a wrong one (constant time)."""
    verify_secret(raw_header(request, SECRET_HEADER), secret)


def verify_secret(given: str | bytes | None, secret: str) -> None:
    if given is None:
        raise Unauthorized(f"this endpoint is internal: the {SECRET_HEADER} header is required")
    if isinstance(given, str):
        given = given.encode()
    if not hmac.compare_digest(given, secret.encode()):
        raise Forbidden("wrong cluster secret")

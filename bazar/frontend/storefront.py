"""The browser storefront: a static page (HTML, CSS, JS) served by the front end.

The page is plain files with no templating and no build step: it talks to the same public
``/bazar/...`` JSON API as ``curl`` does, so it can never show anything the API would not,
and the front end only has to hand out files from ``STATIC_DIR``.

Mount it with two Klein routes (``/`` → the page, ``/static/`` → its assets) rather than one
catch-all branch at ``/``, so unknown paths and wrong methods elsewhere keep their JSON errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.static import File

from bazar.errors import NotFound
from bazar.jsonio import respond

STATIC_DIR: Path = Path(__file__).resolve().parent / "static"
INDEX_HTML: Path = STATIC_DIR / "index.html"

# Fixed here rather than taken from the host's mime.types, which differs between systems
# (.js has been "application/javascript", "text/javascript" or missing).
CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# The page loads nothing from elsewhere and runs no inline script, so it can say so.
SECURITY_HEADERS: dict[bytes, bytes] = {
    b"Content-Security-Policy": (
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        b"form-action 'self'; frame-ancestors 'none'"
    ),
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    # Revalidate every time (Last-Modified makes that a cheap 304): a redeploy is seen at once.
    b"Cache-Control": b"no-cache",
}


class JSONNotFound(Resource):
    """A 404 in the API's ``{"error": {"code", "message"}}`` shape, like every other unknown path."""

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        error = NotFound(f"no such path: {request.path.decode(errors='replace')}")
        return respond(request, error.body(), error.code)


class StaticFile(File):
    """A ``File`` with fixed content types and security headers, and no directory listings.

    ``File.createSimilarFile`` builds children with ``self.__class__``, so class attributes
    here hold for every file under the directory, not only the top one.
    """

    contentTypes = CONTENT_TYPES
    # Typed in Twisted as its own private 404 class; any resource that renders one will do.
    childNotFound = JSONNotFound()  # type: ignore[assignment]
    indexNames: list[str] = []  # noqa: RUF012 (File's own attribute, copied to every child)

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if b"\x00" in path:  # no file has a NUL in its name, and the OS refuses to look one up
            return self.childNotFound
        return super().getChild(path, request)

    def directoryListing(self) -> IResource:
        """Never list the directory: the asset names are not part of the API."""
        return self.childNotFound

    def render(self, request: IRequest) -> Any:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        # Whole files only (RFC 9110 lets a server ignore Range): the assets are a few KB, and
        # Twisted answers a range past the end with a 416 and an empty body, not a JSON error.
        request.requestHeaders.removeHeader(b"Range")
        body = super().render(request)
        request.setHeader(b"Accept-Ranges", b"none")
        return body


class _LeafFile(StaticFile):
    """One file whatever path is left over, so a Klein route at ``/`` can return it as is."""

    isLeaf = True


def static_resource() -> File:
    """The assets under ``/static/``: ``app.js``, ``style.css``; anything else is a JSON 404."""
    return StaticFile(str(STATIC_DIR))


def index_resource() -> File:
    """The page itself, for ``GET /``."""
    return _LeafFile(str(INDEX_HTML))

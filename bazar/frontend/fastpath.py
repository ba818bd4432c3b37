"""The lean path for reads of URIs the front end has routed before: answer them before Klein.

Routing through Klein and werkzeug costs about as much as the rest of a request, and a
repeated read needs none of it: a hit's answer is bytes already in the cache, and a miss
needs only the cache key and the backend read its route chose the first time. So the
front end remembers, for each request URI it has routed to a cached read, that key and how
to read it (``UriKeys``), and ``ReadShortcut`` answers a later GET of that exact URI from
the cache, or through the same read-through call the route makes. Anything else (a write,
an unknown URI) goes to Klein as before, so the routes stay the only place that parses
paths and computes keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from bazar.client import ReplicaResponse
from bazar.frontend.answers import send_hit
from bazar.json_errors import failure_response
from bazar.lru import LRUCache
from bazar.protocol import FRONTEND_HEADER

log = Logger()


Read = Callable[[Any], "bytes | Deferred[bytes]"]  # a route's read for one request: an answer, now or later


class Route(NamedTuple):
    """What a route computed for a URI: the cache key, and the read it makes (hit or miss)."""

    key: str
    read: Read | None


class UriKeys:
    """A bounded map from request URI to its ``Route``."""

    def __init__(self, capacity: int) -> None:
        self._routes: LRUCache[bytes, Route] = LRUCache(capacity)

    def learn(self, uri: bytes, key: str, read: Read | None = None) -> None:
        known = self._routes.peek(uri)
        if known is None or known.key != key:
            self._routes.put(uri, Route(key, read))

    def route(self, uri: bytes) -> Route | None:
        return self._routes.peek(uri)


class ReadShortcut(Resource):
    """Wraps the front end's Klein resource; serves a GET of a known URI from the cache, or
    (a miss) through the read its route makes."""

    isLeaf = True

    def __init__(
        self,
        inner: IResource,
        hit: Callable[[str], ReplicaResponse | None],
        uri_keys: UriKeys,
        frontend: bytes | None = None,
    ) -> None:
        """``hit``: the cache's answer for a key, if it may be served (``ReadThroughCache.hit``:
        a lease is held and the entry is fresh); ``frontend``: this front end's name, sent with
        every answer (``FRONTEND_HEADER``)."""
        super().__init__()
        self.inner = inner
        self.hit = hit
        self.uri_keys = uri_keys
        self.stamp = [frontend] if frontend is not None else None

    def render(self, request: Request) -> Any:
        if self.stamp is not None:
            request.responseHeaders.setRawHeaders(FRONTEND_HEADER, self.stamp)
        if request.method == b"GET":
            route = self.uri_keys.route(request.uri)
            if route is not None:
                cached = self.hit(route.key)
                if cached is not None:  # hit() counted it and marked the entry recently used
                    return send_hit(request, cached)
                if route.read is not None:
                    try:
                        answer = route.read(request)
                    except Exception:
                        return failure_response(request, Failure())
                    return _answer(request, answer)
        return self.inner.render(request)


def _answer(request: Request, result: bytes | Deferred[bytes]) -> Any:
    """Send ``result`` now, or when it fires; a failure as the routes' JSON error would be."""
    if isinstance(result, bytes):
        return result
    gone: list[Failure] = []
    request.notifyFinish().addErrback(gone.append)  # the client left: nothing to send

    def send(body: bytes) -> None:
        if not gone:
            request.write(body)
            request.finish()

    def failed(failure: Failure) -> None:
        if not gone:
            request.write(failure_response(request, failure))
            request.finish()

    result.addCallbacks(send, failed).addErrback(lambda f: log.failure("answering a read failed", f))
    return NOT_DONE_YET

"""The lean path for cache hits: answer them before Klein routes the request.

Routing through Klein and werkzeug costs about as much as the rest of a request, and a hit
needs none of it: its answer is bytes already in the cache. So the front end remembers,
for each request URI it has routed to a cached read, the cache key the route computed
(``UriKeys``), and ``HitShortcut`` answers a later GET of that exact URI straight from the
cache. Anything else (a miss, a write, an unknown URI) goes to Klein as before, so the
routes stay the only place that parses paths and computes keys.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from bazar.lru import LRUCache
from bazar.web import CACHE_HEADER, JSON

_JSON = JSON.encode()
_HIT = b"hit"


class UriKeys:
    """A bounded map from request URI to the cache key its route computed."""

    def __init__(self, capacity: int) -> None:
        self._keys: LRUCache[bytes, str] = LRUCache(capacity)

    def learn(self, uri: bytes, key: str) -> None:
        if self._keys.peek(uri) != key:
            self._keys.put(uri, key)

    def key(self, uri: bytes) -> str | None:
        return self._keys.peek(uri)


class HitShortcut(Resource):
    """Wraps the front end's Klein resource; serves a GET whose URI maps to a cached answer."""

    isLeaf = True

    def __init__(self, inner: IResource, cache: LRUCache[str, Any], uri_keys: UriKeys) -> None:
        super().__init__()
        self.inner = inner
        self.cache = cache
        self.uri_keys = uri_keys

    def render(self, request: Request) -> Any:
        if request.method == b"GET":
            key = self.uri_keys.key(request.uri)
            cached = self.cache.get(key) if key is not None and self.cache.peek(key) is not None else None
            if cached is not None:  # get() counted the hit and marked the entry recently used
                request.setResponseCode(cached.code)
                headers = request.responseHeaders
                headers.setRawHeaders(b"Content-Type", [_JSON])
                headers.setRawHeaders(b"Content-Length", [b"%d" % len(cached.body)])
                headers.setRawHeaders(CACHE_HEADER, [_HIT])
                for name, value in cached.headers.items():  # a page's total and next link
                    headers.setRawHeaders(name, [value])
                return cached.body
        return self.inner.render(request)

"""The lean path for cache hits answers them exactly as the routed path would, and only them."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from bazar.client import ReplicaResponse
from bazar.frontend.fastpath import HitShortcut, UriKeys
from bazar.lru import LRUCache
from tests.unit.memcluster import MemCluster


class _Routed(Resource):
    """Stands in for Klein: records what reached it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []

    def render(self, request: Any) -> bytes:
        self.seen.append(request.uri)
        return b"routed"


class HitShortcutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cache: LRUCache[str, ReplicaResponse] = LRUCache(5)
        self.uri_keys = UriKeys(8)
        self.routed = _Routed()
        self.shortcut = HitShortcut(self.routed, self.cache, self.uri_keys)

    def render(self, method: bytes, uri: bytes) -> tuple[DummyRequest, Any]:
        request = DummyRequest(uri.split(b"/")[1:])
        request.method = method
        request.uri = uri
        return request, self.shortcut.render(request)

    def test_known_uri_with_a_cached_answer_skips_routing(self) -> None:
        self.cache.put("info/1", ReplicaResponse(200, b'{"id":1}', "catalog-2"))
        self.uri_keys.learn(b"/bazar/info/1", "info/1")
        request, body = self.render(b"GET", b"/bazar/info/1")
        self.assertEqual(body, b'{"id":1}')
        self.assertEqual(self.routed.seen, [])
        headers = request.responseHeaders
        self.assertEqual(headers.getRawHeaders(b"X-Bazar-Cache"), [b"hit"])
        self.assertEqual(headers.getRawHeaders(b"Content-Length"), [b"8"])
        self.assertEqual(headers.getRawHeaders(b"Content-Type"), [b"application/json"])
        self.assertEqual(self.cache.stats.hits, 1)

    def test_everything_else_is_routed(self) -> None:
        """Unknown URIs, evicted or invalidated keys, and other methods all go to the routes."""
        self.uri_keys.learn(b"/bazar/info/1", "info/1")  # known, but not cached
        self.cache.put("info/2", ReplicaResponse(200, b"{}", "catalog-1"))
        self.uri_keys.learn(b"/bazar/info/2", "info/2")
        for method, uri in (
            (b"GET", b"/bazar/info/1"),
            (b"GET", b"/bazar/info/3"),
            (b"HEAD", b"/bazar/info/2"),
        ):
            self.assertEqual(self.render(method, uri)[1], b"routed")
        self.assertEqual(self.routed.seen, [b"/bazar/info/1", b"/bazar/info/3", b"/bazar/info/2"])
        self.assertEqual((self.cache.stats.hits, self.cache.stats.misses), (0, 0))


class ThroughTheFrontEndTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster()
        self.addCleanup(self.cluster.close)

    def test_hit_answers_like_the_route_and_writes_still_invalidate(self) -> None:
        miss = self.cluster.get("/bazar/info/1")
        self.assertEqual(self.cluster.frontend.uri_keys.key(b"/bazar/info/1"), "info/1")
        seen = len(self.cluster.dispatch.seen)
        hit = self.cluster.get("/bazar/info/1")
        self.assertEqual(len(self.cluster.dispatch.seen), seen + 1)  # only the front end was asked
        self.assertEqual((hit.code, hit.json, hit.headers["x-bazar-cache"]), (200, miss.json, "hit"))
        self.cluster.put("/bazar/update_price/1", {"price": 9})
        after = self.cluster.get("/bazar/info/1")
        self.assertEqual((after.headers["x-bazar-cache"], after.json["price"]), ("miss", 9.0))

    def test_a_cached_page_keeps_its_paging_headers(self) -> None:
        """A listing page answered by the lean path carries the same total and next link."""
        miss = self.cluster.get("/bazar/info/all?limit=3")
        self.assertEqual(miss.headers["x-bazar-cache"], "miss")
        seen = len(self.cluster.dispatch.seen)
        hit = self.cluster.get("/bazar/info/all?limit=3")
        self.assertEqual(len(self.cluster.dispatch.seen), seen + 1)  # only the front end was asked
        self.assertEqual(hit.headers["x-bazar-cache"], "hit")
        self.assertEqual(hit.json, miss.json)
        for name in ("x-bazar-total", "link"):
            self.assertEqual(hit.headers[name], miss.headers[name])
        self.assertEqual(hit.headers["x-bazar-total"], "7")

"""The lean path for cache hits answers them exactly as the routed path would, and only them."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from bazar.client import ReplicaResponse
from bazar.errors import Unavailable
from bazar.frontend.fastpath import ReadShortcut, UriKeys
from bazar.lru import LRUCache
from bazar.readthrough import ReadThroughCache
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


class ShortcutTestCase(SynchronousTestCase):
    """A ReadShortcut over a 5-entry cache, in front of routes that only record what reached them."""

    def setUp(self) -> None:
        self.cache: LRUCache[str, ReplicaResponse] = LRUCache(5)
        self.uri_keys = UriKeys(8)
        self.routed = _Routed()
        self.shortcut = ReadShortcut(self.routed, ReadThroughCache(self.cache).hit, self.uri_keys)

    def render(self, uri: bytes, method: bytes = b"GET") -> tuple[DummyRequest, Any]:
        request = DummyRequest(uri.split(b"/")[1:])
        request.method = method
        request.uri = request.path = uri
        return request, self.shortcut.render(request)


class ReadShortcutTests(ShortcutTestCase):
    def test_known_uri_with_a_cached_answer_skips_routing(self) -> None:
        self.cache.put("info/1", ReplicaResponse(200, b'{"id":1}', "catalog-2"))
        self.uri_keys.learn(b"/bazar/info/1", "info/1")
        request, body = self.render(b"/bazar/info/1")
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
            self.assertEqual(self.render(uri, method)[1], b"routed")
        self.assertEqual(self.routed.seen, [b"/bazar/info/1", b"/bazar/info/3", b"/bazar/info/2"])
        self.assertEqual((self.cache.stats.hits, self.cache.stats.misses), (0, 0))


class LeanMissTests(ShortcutTestCase):
    """A known URI that is not cached is read through its route's call, without routing."""

    def setUp(self) -> None:
        super().setUp()
        self.reads: list[Deferred[bytes]] = []

    def read(self, request: Any) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.reads.append(d)
        return d

    def test_answer_is_sent_when_the_read_fires(self) -> None:
        self.uri_keys.learn(b"/bazar/info/1", "info/1", self.read)
        request, result = self.render(b"/bazar/info/1")
        self.assertIs(result, NOT_DONE_YET)
        self.assertEqual((self.routed.seen, len(self.reads)), ([], 1))
        self.assertEqual(request.finished, 0)
        self.reads[0].callback(b'{"id":1}')
        self.assertEqual((request.written, request.finished), ([b'{"id":1}'], 1))

    def test_a_synchronous_answer_is_returned(self) -> None:
        self.uri_keys.learn(b"/bazar/info/1", "info/1", lambda request: b"now")
        self.assertEqual(self.render(b"/bazar/info/1")[1], b"now")

    def test_failure_is_the_json_error_the_route_would_send(self) -> None:
        """503 with Retry-After, as Klein's error handler answers it."""
        self.uri_keys.learn(b"/bazar/info/1", "info/1", self.read)
        request, _ = self.render(b"/bazar/info/1")
        self.reads[0].errback(Unavailable("no replica is reachable"))
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"Retry-After"), [b"1"])
        self.assertEqual(
            json.loads(b"".join(request.written)),
            {"error": {"code": 503, "message": "no replica is reachable"}},
        )
        self.assertEqual(request.finished, 1)

    def test_unexpected_failure_is_a_logged_500(self) -> None:
        self.uri_keys.learn(b"/bazar/info/1", "info/1", self.read)
        request, _ = self.render(b"/bazar/info/1")
        self.reads[0].errback(ZeroDivisionError())
        self.assertEqual(request.responseCode, 500)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_a_read_that_raises_at_once(self) -> None:
        def broken(request: Any) -> bytes:
            raise ZeroDivisionError

        self.uri_keys.learn(b"/bazar/info/1", "info/1", broken)
        request, body = self.render(b"/bazar/info/1")
        self.assertEqual(request.responseCode, 500)
        self.assertEqual(json.loads(body)["error"]["code"], 500)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_client_gone_before_the_answer(self) -> None:
        """Nothing is written to a connection the client closed, and nothing fails."""
        self.uri_keys.learn(b"/bazar/info/1", "info/1", self.read)
        request, _ = self.render(b"/bazar/info/1")
        request.processingFailed(Failure(ConnectionDone()))
        self.reads[0].callback(b"late")
        self.assertEqual(request.written, [])
        self.assertEqual(self.flushLoggedErrors(), [])


class ThroughTheFrontEndTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def test_hit_answers_like_the_route_and_writes_still_invalidate(self) -> None:
        miss = self.cluster.get("/bazar/info/1")
        route = self.cluster.frontend.uri_keys.route(b"/bazar/info/1")
        self.assertEqual(route.key if route is not None else None, "info/1")
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

    def test_a_lean_miss_answers_like_the_routed_one(self) -> None:
        """Once a URI is known, its misses skip routing but answer the same: body, status,
        paging headers, X-Bazar-Cache and the replica that served it."""
        for uri in ("/bazar/info/2", "/bazar/info/all?limit=2", "/bazar/search/new?limit=1"):
            routed = self.cluster.get(uri)
            route = self.cluster.frontend.uri_keys.route(uri.encode())
            assert route is not None and route.read is not None, uri
            self.cluster.frontend.cache.invalidate(route.key)
            lean = self.cluster.get(uri)
            self.assertEqual((lean.code, lean.json), (routed.code, routed.json), uri)
            self.assertEqual(lean.headers["x-bazar-cache"], "miss", uri)
            self.assertIn(lean.headers["x-bazar-replica"], self.cluster.catalog_names, uri)
            for name in ("x-bazar-total", "link"):
                self.assertEqual(lean.headers.get(name), routed.headers.get(name), (uri, name))

"""Pages of /bazar/info/all and /bazar/search/<topic>: parameters, headers, cache keys, invalidation.

The front-end tests run on the in-memory cluster (``memcluster``) with a catalog of 1000
books, so that listings span many pages.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.trial.unittest import SynchronousTestCase

from bazar.catalog.store import generated_book, seed_books
from bazar.errors import BadRequest
from bazar.frontend import openapi
from bazar.invalidation import ALL_BOOKS_KEY, PageKey, all_books_page_key, search_page_key
from bazar.paging import DEFAULT_LIMIT, MAX_LIMIT, Page, link_next, parse_page, public_page_headers
from tests.unit.memcluster import MemCluster, Reply

N = 1000
TOPIC = "art/design"  # a generated topic with a slash: the Link must keep it one path segment
TOPIC_IDS = [b[0] for b in seed_books(N) if b[2] == TOPIC]
CHESS_IDS = [b[0] for b in seed_books(N) if b[2] == "chess"]


class FakeRequest:
    """Just what ``parse_page`` reads: the query arguments, as twisted.web parses them."""

    def __init__(self, query: dict[str, list[str]]) -> None:
        self.args = {k.encode(): [v.encode() for v in values] for k, values in query.items()}


def page_of(**query: str | list[str]) -> Page:
    return parse_page(FakeRequest({k: v if isinstance(v, list) else [v] for k, v in query.items()}))  # type: ignore[arg-type]


class ParseTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        self.assertEqual(page_of(), Page(limit=DEFAULT_LIMIT, offset=0, after=None))
        self.assertEqual((DEFAULT_LIMIT, MAX_LIMIT), (100, 1000))

    def test_values(self) -> None:
        self.assertEqual(page_of(limit="1"), Page(1, 0, None))
        self.assertEqual(page_of(limit="1000", offset="5", after="0"), Page(1000, 5, 0))
        self.assertEqual(page_of(limit="007"), Page(7))
        self.assertEqual(page_of(offset="999999999999999999"), Page(offset=10**18 - 1))

    def test_bad_values(self) -> None:
        """Each is a 400 whose message names the parameter."""
        cases: list[dict[str, Any]] = [
            {"limit": "0"},
            {"limit": "1001"},
            {"limit": "-1"},
            {"limit": "+5"},
            {"limit": ""},
            {"limit": "ten"},
            {"limit": "1.5"},
            {"limit": " 5"},
            {"limit": ["1", "2"]},
            {"offset": "-1"},
            {"offset": "1e3"},
            {"offset": "1" * 19},
            {"after": "x"},
            {"after": "-1"},
            {"after": "٣"},  # a digit, but not an ASCII one
        ]
        for query in cases:
            with self.subTest(query=query):
                error = self.assertRaises(BadRequest, page_of, **query)
                self.assertIn(repr(next(iter(query))), error.message)

    def test_canonical_query(self) -> None:
        """The query (and so the cache key) names every parameter, defaults included, in one order."""
        self.assertEqual(Page().query(), "limit=100&offset=0")
        self.assertEqual(Page(5, 2, 41).query(), "limit=5&offset=2&after=41")
        self.assertEqual(page_of(offset="0", limit="100"), page_of())

    def test_links(self) -> None:
        """The next page is always by cursor, the same size, after the last id shown."""
        self.assertEqual(
            link_next("/bazar/info/all", Page(5, 20), 24), '</bazar/info/all?limit=5&after=24>; rel="next"'
        )
        self.assertEqual(
            public_page_headers({"X-Bazar-Total": "9", "X-Bazar-Next-After": "3"}, "/p", Page(2)),
            {"X-Bazar-Total": "9", "Link": '</p?limit=2&after=3>; rel="next"'},
        )
        self.assertEqual(public_page_headers({"X-Bazar-Total": "9"}, "/p", Page(2)), {"X-Bazar-Total": "9"})


class KeyTests(SynchronousTestCase):
    def test_page_keys(self) -> None:
        """A page's key is its listing's prefix and its canonical query; it remembers the prefix."""
        key = all_books_page_key(Page())
        self.assertEqual((key, key.prefix), ("info/all?limit=100&offset=0", ALL_BOOKS_KEY))
        key = search_page_key("a?b", Page(3, 0, 7))
        self.assertEqual((key, key.prefix), ("search/a?b?limit=3&offset=0&after=7", "search/a?b"))
        self.assertIsInstance(key, PageKey)
        self.assertNotEqual(search_page_key("x", Page(2)), search_page_key("x", Page(3)))
        self.assertEqual(hash(search_page_key("x", Page(2))), hash("search/x?limit=2&offset=0"))


class FrontendPagingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self, cache_size=20, books=N)
        self.addCleanup(self.cluster.close)

    def get(self, path: str) -> Reply:
        reply = self.cluster.get(path)
        self.assertEqual(reply.code, 200, reply)
        return reply

    def ids(self, reply: Reply) -> list[int]:
        return [b["id"] for b in reply.json]

    def catalog_reads(self) -> int:
        return len([s for s in self.cluster.dispatch.seen if s.path.startswith("/catalog/")])

    def test_default_page(self) -> None:
        """Without parameters: the first 100 books, the total and a Link to the next page."""
        reply = self.get("/bazar/info/all")
        self.assertEqual(self.ids(reply), list(range(100)))
        self.assertEqual(reply.headers["x-bazar-total"], str(N))
        self.assertEqual(reply.headers["link"], '</bazar/info/all?limit=100&after=99>; rel="next"')
        self.assertEqual(reply.headers["x-bazar-cache"], "miss")
        self.assertNotIn("x-bazar-next-after", reply.headers)  # the replica's hint stays internal

    def test_a_hit_carries_the_same_headers(self) -> None:
        miss = self.get("/bazar/info/all?limit=10")
        hit = self.get("/bazar/info/all?limit=10")
        self.assertEqual(hit.headers["x-bazar-cache"], "hit")
        self.assertEqual(hit.json, miss.json)
        for header in ("x-bazar-total", "link"):
            self.assertEqual(hit.headers[header], miss.headers[header], header)

    def test_following_links_lists_every_book_once(self) -> None:
        path: str | None = "/bazar/info/all?limit=300"
        seen: list[int] = []
        while path is not None:
            reply = self.get(path)
            seen += self.ids(reply)
            link = reply.headers.get("link")
            path = link[1 : link.index(">")] if link else None
        self.assertEqual(seen, list(range(N)))

    def test_offset_and_cursor(self) -> None:
        last = self.get("/bazar/info/all?limit=10&offset=995")
        self.assertEqual(self.ids(last), list(range(995, N)))
        self.assertNotIn("link", last.headers)
        self.assertEqual(self.ids(self.get("/bazar/info/all?limit=3&after=41")), [42, 43, 44])
        self.assertEqual(self.ids(self.get("/bazar/info/all?after=41&offset=1&limit=2")), [43, 44])
        self.assertEqual(self.get(f"/bazar/info/all?offset={N}").json, [])

    def test_search_pages(self) -> None:
        """A topic's books a page at a time; the Link keeps a topic's slash encoded."""
        encoded = quote(TOPIC, safe="")
        first = self.get(f"/bazar/search/{encoded}?limit=4")
        self.assertEqual(self.ids(first), TOPIC_IDS[:4])
        self.assertEqual(first.headers["x-bazar-total"], str(len(TOPIC_IDS)))
        self.assertEqual(
            first.headers["link"], f'</bazar/search/{encoded}?limit=4&after={TOPIC_IDS[3]}>; rel="next"'
        )
        link = first.headers["link"]
        second = self.get(link[1 : link.index(">")])
        self.assertEqual(self.ids(second), TOPIC_IDS[4:8])
        every = self.get(f"/bazar/search/{encoded}?limit=1000")
        self.assertEqual((self.ids(every), every.headers.get("link")), (TOPIC_IDS, None))

    def test_the_report_books_fit_one_page(self) -> None:
        """The report's searches are unchanged by the generated books: no Link, totals as before."""
        reply = self.get("/bazar/search/new")
        self.assertEqual((self.ids(reply), reply.headers["x-bazar-total"]), ([4, 5, 6], "3"))
        self.assertNotIn("link", reply.headers)

    def test_bad_parameters(self) -> None:
        """400 with the JSON error, on both listings, before anything is fetched or cached."""
        for path in ("/bazar/info/all", "/bazar/search/chess"):
            for query in ("limit=0", "limit=1001", "limit=abc", "offset=-1", "after=1.5", "limit=1&limit=2"):
                with self.subTest(path=path, query=query):
                    reply = self.cluster.get(f"{path}?{query}")
                    self.assertEqual(reply.code, 400)
                    self.assertEqual(reply.json["error"]["code"], 400)
        self.assertEqual(self.catalog_reads(), 0)
        self.assertEqual(self.cluster.cached_keys(), [])

    def test_one_key_per_page(self) -> None:
        """Each page is cached under its own key; spellings of one page share it."""
        self.get("/bazar/info/all")
        self.assertEqual(self.get("/bazar/info/all?offset=0&limit=100").headers["x-bazar-cache"], "hit")
        self.get("/bazar/info/all?limit=3&after=41")
        self.get("/bazar/search/chess?limit=5")
        self.assertEqual(
            self.cluster.cached_keys(),
            [
                "info/all?limit=100&offset=0",
                "info/all?limit=3&offset=0&after=41",
                "search/chess?limit=5&offset=0",
            ],
        )
        self.assertEqual(self.catalog_reads(), 3)

    def test_a_write_drops_every_page_that_may_show_the_book(self) -> None:
        """A change to a chess book drops every page of info/all and of the chess search (whether or
        not the page shows that book), and the book; other topics' pages and other books stay."""
        book = CHESS_IDS[-1]
        for path in (
            "/bazar/info/all?limit=10",
            f"/bazar/info/all?limit=10&after={N - 11}",
            "/bazar/search/chess?limit=5",
            f"/bazar/search/chess?limit=5&after={CHESS_IDS[-2]}",
            "/bazar/search/new",
            f"/bazar/info/{book}",
            "/bazar/info/3",
        ):
            self.get(path)
        code, _, updated = self.cluster.put(f"/bazar/update_price/{book}", {"price": 0.5})
        self.assertEqual((code, updated["price"]), (200, 0.5))
        self.assertEqual(self.cluster.cached_keys(), ["search/new?limit=100&offset=0", "info/3"])
        reply = self.get(f"/bazar/search/chess?limit=5&after={CHESS_IDS[-2]}")
        self.assertEqual((reply.headers["x-bazar-cache"], reply.json[0]["price"]), ("miss", 0.5))
        reply = self.get(f"/bazar/info/all?limit=10&after={N - 11}")
        self.assertEqual(reply.json[[b["id"] for b in reply.json].index(book)]["price"], 0.5)

    def test_page_fill_racing_a_write_is_not_kept(self) -> None:
        """A page read before a write but delivered after it answers its request, and is not cached."""
        held = self.cluster.hold_next("catalog-1")
        early = self.cluster.send("GET", "/bazar/info/all?limit=10")
        self.cluster.flush()
        self.assertTrue(held.arrived)  # catalog-1 has read the page; its answer waits

        code, _, _ = self.cluster.put("/bazar/update_price/5", {"price": 1.25})
        self.assertEqual(code, 200)

        held.release()
        old = self.cluster.wait(early)
        self.assertEqual((old.code, old.json[5]["price"]), (200, 100.0))
        self.assertNotIn("info/all?limit=10&offset=0", self.cluster.cached_keys())
        now = self.get("/bazar/info/all?limit=10")
        self.assertEqual((now.headers["x-bazar-cache"], now.json[5]["price"]), ("miss", 1.25))

    def test_catalog_endpoints_take_the_same_parameters(self) -> None:
        code, headers, books = self.cluster.internal("GET", "catalog-2", "/catalog/books?limit=2&after=5")
        self.assertEqual((code, [b["id"] for b in books]), (200, [6, 7]))
        self.assertEqual(
            books[1], dict(zip(("id", "title", "topic", "price", "quantity"), generated_book(7), strict=True))
        )
        self.assertEqual(headers["x-bazar-total"], str(N))
        self.assertEqual(headers["x-bazar-next-after"], "7")
        self.assertEqual(headers["link"], '</catalog/books?limit=2&after=7>; rel="next"')
        code, headers, books = self.cluster.internal("GET", "catalog-3", "/catalog/search/chess?limit=1000")
        self.assertEqual(
            ([b["id"] for b in books], headers["x-bazar-total"]), (CHESS_IDS, str(len(CHESS_IDS)))
        )
        self.assertNotIn("link", headers)
        code, _, body = self.cluster.internal("GET", "catalog-1", "/catalog/books?limit=5000")
        self.assertEqual((code, body["error"]["code"]), (400, 400))


class ReportSizeTests(SynchronousTestCase):
    def test_seven_books_one_page(self) -> None:
        """At the report's size, info/all is the seven books as before, with a total and no Link."""
        cluster = MemCluster(self)
        self.addCleanup(cluster.close)
        code, headers, books = cluster.get("/bazar/info/all")
        self.assertEqual((code, [b["id"] for b in books]), (200, list(range(7))))
        self.assertEqual(headers["x-bazar-total"], "7")
        self.assertNotIn("link", headers)
        self.assertEqual(cluster.cached_keys(), ["info/all?limit=100&offset=0"])


class DocumentTests(SynchronousTestCase):
    def test_listings_document_their_pages(self) -> None:
        """openapi.json gives both listings the parameters and limits of bazar.paging, the paging
        headers on 200, and the 400 a bad parameter gets."""
        paths = openapi.document()["paths"]
        for path in ("/bazar/info/all", "/bazar/search/{topic}"):
            operation = paths[path]["get"]
            query = {p["name"]: p["schema"] for p in operation["parameters"] if p["in"] == "query"}
            self.assertEqual(set(query), {"limit", "offset", "after"}, path)
            self.assertEqual(
                (query["limit"]["default"], query["limit"]["minimum"], query["limit"]["maximum"]),
                (DEFAULT_LIMIT, 1, MAX_LIMIT),
            )
            self.assertEqual((query["offset"]["minimum"], query["after"]["minimum"]), (0, 0))
            self.assertLessEqual(
                {"X-Bazar-Total", "Link"}, set(operation["responses"]["200"]["headers"]), path
            )
            self.assertIn("400", operation["responses"], path)

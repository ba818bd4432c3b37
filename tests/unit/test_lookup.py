"""Lookups: the catalog's read of many books, and the front end's misses that share one."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bazar.batching import MAX_LOOKUP
from bazar.client import ReplicaResponse
from bazar.frontend.cached_reads import split_lookup
from bazar.protocol import LOOKUP_PATH
from tests.unit.memcluster import MemCluster, Reply


class CatalogLookupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def lookup(self, query: str, to: str = "catalog-2") -> Reply:
        return self.cluster.internal("GET", to, f"{LOOKUP_PATH}?{query}")

    def test_the_books_found_and_an_error_for_each_id_not_found(self) -> None:
        """Each book as its own read gives it; each missing id with that read's error."""
        code, _, answer = self.lookup("ids=3,99,1,3")
        self.assertEqual(code, 200)
        self.assertEqual(sorted(book["id"] for book in answer["books"]), [1, 3])
        for book in answer["books"]:
            self.assertEqual(
                book, self.cluster.internal("GET", "catalog-2", f"/catalog/books/{book['id']}").json
            )
        single = self.cluster.internal("GET", "catalog-2", "/catalog/books/99")
        self.assertEqual(answer["errors"], [{"id": 99, **single.json["error"]}])

    def test_a_lookup_that_is_not_one_is_refused(self) -> None:
        for query in (
            "",
            "ids=",
            "ids=1,x",
            "ids=-1",
            "ids=1&ids=2",
            "ids=" + ",".join(map(str, range(MAX_LOOKUP + 1))),
        ):
            code, _, body = self.lookup(query)
            self.assertEqual((code, body["error"]["code"]), (400, 400), query)
        self.assertEqual(self.lookup("ids=" + ",".join(map(str, range(MAX_LOOKUP)))).code, 200)

    def test_the_secret_is_required(self) -> None:
        self.assertEqual(self.cluster.request("GET", f"{LOOKUP_PATH}?ids=1", to="catalog-1").code, 401)


class FrontendLookupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def lookups(self) -> list[tuple[str, str]]:
        return [(s.name, s.query) for s in self.cluster.dispatch.seen if s.path == LOOKUP_PATH]

    def test_misses_of_one_turn_share_one_lookup(self) -> None:
        """Three misses sent together: one lookup at one replica, each reply the same bytes
        its own read at that replica gives (a book, or the 404), and each book cached."""
        sent = {book: self.cluster.send("GET", f"/bazar/info/{book}") for book in (4, 99, 2)}
        replies = {book: self.cluster.wait(d) for book, d in sent.items()}
        self.assertEqual(self.lookups(), [("catalog-1", "ids=4,99,2")])
        for book, reply in replies.items():
            own = self.cluster.internal("GET", "catalog-1", f"/catalog/books/{book}")
            self.assertEqual((reply.code, reply.json), (own.code, own.json), book)
            self.assertEqual(
                (reply.headers["x-bazar-cache"], reply.headers["x-bazar-replica"]), ("miss", "catalog-1")
            )
        self.assertEqual(sorted(self.cluster.cached_keys()), ["info/2", "info/4"])
        self.assertEqual(self.cluster.get("/bazar/info/4").headers["x-bazar-cache"], "hit")

    def test_a_lookup_goes_round_robin_and_on_past_an_unreachable_replica(self) -> None:
        self.cluster.get("/bazar/info/0")
        self.cluster.unreachable("catalog-2")
        sent = [self.cluster.send("GET", f"/bazar/info/{book}") for book in (1, 2)]
        self.assertEqual([self.cluster.wait(d).json["id"] for d in sent], [1, 2])
        self.assertEqual(self.lookups(), [("catalog-1", "ids=0"), ("catalog-3", "ids=1,2")])
        self.assertEqual(
            [(s.name, s.query) for s in self.cluster.dispatch.refused], [("catalog-2", "ids=1,2")]
        )

    def test_more_misses_than_one_lookup_names_make_several(self) -> None:
        """Past MAX_LOOKUP ids a turn's misses take several lookups (seven books, a limit of 3)."""
        self.patch(self.cluster.frontend.reads.lookups, "_max_keys", 3)
        sent = [self.cluster.send("GET", f"/bazar/info/{book}") for book in range(7)]
        self.assertEqual([self.cluster.wait(d).json["id"] for d in sent], list(range(7)))
        self.assertEqual(
            self.lookups(), [("catalog-1", "ids=0,1,2"), ("catalog-2", "ids=3,4,5"), ("catalog-3", "ids=6")]
        )


class SplitTests(SynchronousTestCase):
    def test_an_error_for_the_whole_lookup_is_every_books(self) -> None:
        refused = ReplicaResponse(400, b'{"error": {"code": 400, "message": "no"}}', "catalog-1")
        self.assertEqual(split_lookup(refused, [1, 2]), {1: refused, 2: refused})

    def test_each_answer_keeps_the_lookups_replica_sequence_number_and_epoch(self) -> None:
        body = (
            b'{"books":[{"id":1,"price":2.5}],"errors":[{"id":9,"code":404,"message":"no book with id 9"}]}'
        )
        answers = split_lookup(ReplicaResponse(200, body, "catalog-3", {}, 41, "catalog-1", 2), [1, 9])
        self.assertEqual(
            answers[1], ReplicaResponse(200, b'{"id":1,"price":2.5}', "catalog-3", {}, 41, "catalog-1", 2)
        )
        self.assertEqual(
            answers[9],
            ReplicaResponse(
                404,
                b'{"error": {"code": 404, "message": "no book with id 9"}}',
                "catalog-3",
                {},
                41,
                "catalog-1",
                2,
            ),
        )

"""The front end's reads at the replicas (``bazar.frontend.replicas.Replicas.read``): no answer
from a replica behind a write an earlier answer already showed (simulator seed 2784048756)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from bazar.client import ReplicaResponse
from bazar.config import Replica, parse
from bazar.errors import Unavailable
from bazar.frontend.replicas import Replicas


class Followers:
    """Stands in for ``ReplicaClient``: each catalog replica answers at its own last write."""

    def __init__(self, seqs: dict[str, int]) -> None:
        self.seqs = seqs
        self.asked: list[str] = []

    def request(
        self, method: str, replica: Replica, path: str, body: Any = None, timeout: float | None = None
    ) -> Deferred[ReplicaResponse]:
        self.asked.append(replica.name)
        return succeed(ReplicaResponse(200, b"{}", replica.name, {}, self.seqs[replica.name], "catalog-1", 1))


class BehindTests(SynchronousTestCase):
    def setUp(self) -> None:
        # The sequencer died mid-write: catalog-2 has write 24 (and an answer showed it),
        # catalog-3, still under its read lease, only write 23.
        self.client = Followers({"catalog-1": 24, "catalog-2": 24, "catalog-3": 23})
        self.replicas = Replicas(parse({"cluster": {"secret": "s"}}), self.client)  # type: ignore[arg-type]
        self.replicas.health.mark(self.named("catalog-1"), False, "unreachable")

    def named(self, name: str) -> Replica:
        return next(r for r in self.replicas.all if r.name == name)

    def read(self, shown: int) -> Any:
        return self.replicas.read(self.replicas.catalogs, "/catalog/books/1", lambda: shown)

    def test_a_replica_behind_what_an_answer_showed_is_passed_over(self) -> None:
        answers = [self.successResultOf(self.read(24)).replica for _ in range(4)]
        self.assertEqual(answers, ["catalog-2"] * 4)
        self.assertIn("catalog-3", self.client.asked)  # asked in its turn, its answer not used
        self.assertTrue(self.replicas.health.readable(self.named("catalog-3")))

    def test_without_a_newer_write_shown_every_readable_replica_answers(self) -> None:
        answers = {self.successResultOf(self.read(23)).replica for _ in range(4)}
        self.assertEqual(answers, {"catalog-2", "catalog-3"})

    def test_none_that_new_is_a_503(self) -> None:
        self.failureResultOf(self.read(25), Unavailable)

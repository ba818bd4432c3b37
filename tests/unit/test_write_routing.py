"""Where the front end sends a write: the next replica that is up, and on only if it never left."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from bazar.client import ReplicaResponse
from bazar.config import Replica, parse
from bazar.errors import NotSent, Unavailable
from bazar.frontend.app import FrontendApp


class _Client:
    """Answers by replica name: an exception to raise, or a 200."""

    def __init__(self, outcomes: dict[str, Exception]) -> None:
        self.outcomes = outcomes
        self.clock = Clock()
        self.sent: list[str] = []

    def request(self, method: str, replica: Replica, path: str, body: Any = None, **kw: Any) -> Deferred[Any]:
        self.sent.append(replica.name)
        if replica.name in self.outcomes:
            return fail(self.outcomes[replica.name])
        return succeed(ReplicaResponse(200, b"{}", replica.name))


def purchase(app: FrontendApp) -> Deferred[ReplicaResponse]:
    """A purchase's write, sent the way the front end sends it."""
    return app.replicas.write(app.replicas.orders, "POST", "/order/purchase/1", {})


def read_book(app: FrontendApp) -> Deferred[ReplicaResponse]:
    return app.replicas.read(app.replicas.catalogs, "/catalog/books/1")


class WriteRoutingTests(SynchronousTestCase):
    def app(self, outcomes: dict[str, Exception]) -> tuple[FrontendApp, _Client]:
        client = _Client(outcomes)
        return FrontendApp(parse({"cluster": {"secret": "s"}}), client), client  # type: ignore[arg-type]

    def test_refused_connection_goes_on_to_the_next_replica(self) -> None:
        """A write whose connection was refused never left: the next replica gets it, and the
        refusing one is marked down so the next write skips it."""
        app, client = self.app({"order-1": NotSent("order-1 is unreachable: ConnectionRefusedError")})
        response = self.successResultOf(purchase(app))
        self.assertEqual((response.replica, client.sent), ("order-2", ["order-1", "order-2"]))
        self.assertFalse(app.health.is_up(app.config.order[0]))
        for _ in range(3):
            self.successResultOf(purchase(app))
        self.assertNotIn("order-1", client.sent[2:])  # skipped while down

    def test_a_write_that_may_have_arrived_is_not_sent_twice(self) -> None:
        """A connection lost after sending may have delivered the write: it fails, no retry."""
        app, client = self.app({"order-1": Unavailable("order-1 is unreachable: ResponseNeverReceived")})
        self.failureResultOf(purchase(app), Unavailable)
        self.assertEqual(client.sent, ["order-1"])

    def test_no_replica_up(self) -> None:
        """When every replica refused (or is known down), the client is told so in its words;
        which replica failed how goes to the log (and to /bazar/cluster)."""
        refused = {
            f"order-{n}": NotSent(f"order-{n} is unreachable: ConnectionRefusedError") for n in (1, 2, 3)
        }
        app, client = self.app(refused)
        with capturedLogs() as events:
            first = self.failureResultOf(purchase(app), NotSent)
        self.assertEqual(client.sent, ["order-1", "order-2", "order-3"])
        failure = self.failureResultOf(purchase(app), Unavailable)
        self.assertEqual(len(client.sent), 3)
        for message in (first.value.message, failure.value.message):
            self.assertEqual(message, "no order replica can answer right now; try again shortly")
        self.assertIn(
            "POST /order/purchase/1: no order replica could take it: "
            "order-3 is unreachable: ConnectionRefusedError",
            [formatEvent(e) for e in events],
        )

    def test_no_replica_can_be_read(self) -> None:
        """Reads say the same as writes when no replica can answer: no "acknowledged writes"."""
        refused = {
            f"catalog-{n}": NotSent(f"catalog-{n} is unreachable: ConnectionRefusedError") for n in (1, 2, 3)
        }
        app, client = self.app(refused)
        with capturedLogs() as events:
            failure = self.failureResultOf(read_book(app), Unavailable)
        self.assertEqual(failure.value.message, "no catalog replica can answer right now; try again shortly")
        self.assertEqual(client.sent, ["catalog-1", "catalog-2", "catalog-3"])
        self.assertIn(
            "GET /catalog/books/1: no catalog replica could answer: "
            "catalog-3 is unreachable: ConnectionRefusedError",
            [formatEvent(e) for e in events],
        )
        failure = self.failureResultOf(read_book(app), Unavailable)
        self.assertEqual(failure.value.message, "no catalog replica can answer right now; try again shortly")


class SequencerFirstTests(SynchronousTestCase):
    """A write goes straight to the role's sequencer (a follower would only forward it)."""

    def app(self, outcomes: dict[str, Exception]) -> tuple[FrontendApp, _Client]:
        client = _Client(outcomes)
        return FrontendApp(parse({"cluster": {"secret": "s"}}), client), client  # type: ignore[arg-type]

    def test_known_sequencer_gets_every_write(self) -> None:
        app, client = self.app({})
        app.health.current_epoch("order", 2)
        app.health.report_sequencer("order", 2, "order-3")
        for _ in range(3):
            self.successResultOf(purchase(app))
        self.assertEqual(client.sent, ["order-3"] * 3)

    def test_sequencer_of_an_older_epoch_is_not_preferred(self) -> None:
        """Once a newer epoch is known, the old sequencer's word no longer counts: writes go
        round robin until a probe names the new one."""
        app, client = self.app({})
        app.health.current_epoch("order", 1)
        app.health.report_sequencer("order", 1, "order-1")
        app.health.current_epoch("order", 2)
        self.assertIsNone(app.health.sequencer("order"))
        for _ in range(3):
            self.successResultOf(purchase(app))
        self.assertEqual(client.sent, ["order-1", "order-2", "order-3"])

    def test_unreachable_sequencer_goes_on_to_the_others(self) -> None:
        app, client = self.app({"catalog-2": NotSent("refused")})
        app.health.report_sequencer("catalog", 0, "catalog-2")
        write = app.replicas.write(app.replicas.catalogs, "PUT", "/catalog/books/1/price", {})
        response = self.successResultOf(write)
        self.assertEqual(client.sent, ["catalog-2", response.replica])
        self.assertNotEqual(response.replica, "catalog-2")

    def test_an_announced_sequencer_gets_the_next_write(self) -> None:
        """A replica just elected announces itself (``/internal/invalidate`` with its epoch and
        name): the next write goes straight to it, without waiting for a probe."""
        app, client = self.app({})
        app.health.current_epoch("order", 1)
        app.health.report_sequencer("order", 1, "order-1")
        announce = b'{"keys": [], "seq": 7, "role": "order", "epoch": 2, "sequencer": "order-2"}'
        app.internal.invalidate_call(announce)
        self.assertEqual(app.health.sequencer("order"), "order-2")
        self.successResultOf(purchase(app))
        self.assertEqual(client.sent, ["order-2"])

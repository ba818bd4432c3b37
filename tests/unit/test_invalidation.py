"""The sequencer's pushes to the front end: batched under load, never late for a write."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from bazar.config import Replica
from bazar.errors import Unavailable
from bazar.invalidation import FrontendNotifier, book_keys
from bazar.protocol import INVALIDATE_PATH

FRONTEND = Replica(name="frontend", role="frontend", listen="tcp:0", url="http://frontend.invalid")


class Pushes:
    """Records each push; the test answers them in order."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.answers: list[Deferred[Any]] = []

    def call(self, method: str, replica: Replica, path: str, body: Any = None, **kw: Any) -> Deferred[Any]:
        assert (method, replica, path) == ("POST", FRONTEND, INVALIDATE_PATH)
        self.bodies.append(body)
        d: Deferred[Any] = Deferred()
        self.answers.append(d)
        return d


def write(book: int, topic: str = "new") -> dict[str, Any]:
    return {"book": {"id": book, "topic": topic}}


class BatchingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pushes = Pushes()
        self.notifier = FrontendNotifier(
            self.pushes,  # type: ignore[arg-type]
            FRONTEND,
            book_keys,
            epoch=lambda: ("catalog", 3),
        )

    def test_one_write_alone_is_pushed_at_once(self) -> None:
        told = self.notifier.written(7, write(1), [])
        self.assertEqual(
            self.pushes.bodies,
            [{"keys": book_keys(write(1)), "lagging": [], "seq": 7, "role": "catalog", "epoch": 3}],
        )
        self.assertNoResult(told)
        self.pushes.answers[0].callback({})
        self.successResultOf(told)

    def test_writes_during_a_push_go_together_in_the_next(self) -> None:
        """Writes 8 and 9 come while 7's push is on its way: one push carries both (the
        newest seq, each key once), and each waits for it, not for 7's alone."""
        first = self.notifier.written(7, write(1), [])
        second = self.notifier.written(8, write(2), [])
        third = self.notifier.written(9, write(2, "old"), [])
        self.assertEqual(len(self.pushes.bodies), 1)
        self.pushes.answers[0].callback({})
        self.successResultOf(first)
        self.assertNoResult(second)
        self.assertEqual(len(self.pushes.bodies), 2)
        batch = self.pushes.bodies[1]
        self.assertEqual(batch["seq"], 9)
        self.assertEqual(batch["keys"], ["info/2", "search/new", "info/all", "search/old"])
        self.pushes.answers[1].callback({})
        self.successResultOf(second)
        self.successResultOf(third)
        self.assertEqual(len(self.pushes.bodies), 2)

    def test_a_failed_push_fails_every_write_it_carried_and_the_next_goes_on(self) -> None:
        self.notifier.written(7, write(1), [])
        second = self.notifier.written(8, write(2), [])
        third = self.notifier.written(9, write(3), [])
        self.pushes.answers[0].callback({})
        self.pushes.answers[1].errback(Unavailable("frontend is unreachable"))
        self.failureResultOf(second, Unavailable)
        self.failureResultOf(third, Unavailable)
        fourth = self.notifier.written(10, write(4), [])
        self.assertEqual(self.pushes.bodies[-1]["seq"], 10)
        self.pushes.answers[-1].callback({})
        self.successResultOf(fourth)

    def test_lagging_is_pushed_on_its_own_at_once(self) -> None:
        """Even while a batch is on its way: which write it was decided for is its seq."""
        self.notifier.written(7, write(1), [])
        lagging = self.notifier.written(7, write(1), ["catalog-2"])
        self.assertEqual(len(self.pushes.bodies), 2)
        self.assertEqual((self.pushes.bodies[1]["lagging"], self.pushes.bodies[1]["seq"]), (["catalog-2"], 7))
        self.pushes.answers[1].callback({})
        self.successResultOf(lagging)

    def test_nothing_to_say_is_not_pushed(self) -> None:
        """No keys, nobody lagging, an epoch the front end knows: no push (an order write)."""
        notifier = FrontendNotifier(self.pushes, FRONTEND, lambda entry: [], epoch=lambda: ("order", 3))  # type: ignore[arg-type]
        told = notifier.written(1, {"order": {}}, [])
        self.assertEqual(self.pushes.bodies[-1]["keys"], [])  # the first tells the epoch
        self.pushes.answers[-1].callback({})
        self.successResultOf(told)
        self.successResultOf(notifier.written(2, {"order": {}}, []))
        self.assertEqual(len(self.pushes.bodies), 1)

    def test_announce_names_the_new_sequencer_with_its_epoch(self) -> None:
        """A replica just elected tells the front end its name, role and epoch in one push."""
        notifier = FrontendNotifier(self.pushes, FRONTEND, lambda entry: [], epoch=lambda: ("order", 4))  # type: ignore[arg-type]
        announced = notifier.announce("order-2", 17)
        self.assertEqual(
            self.pushes.bodies[-1],
            {"keys": [], "seq": 17, "sequencer": "order-2", "role": "order", "epoch": 4},
        )
        self.pushes.answers[-1].callback({})
        self.successResultOf(announced)

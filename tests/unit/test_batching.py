"""``Batcher``: keys asked for in one turn of the reactor are fetched together, once each."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bazar.batching import Batcher


class Backend:
    """Records each batch it is asked for; answers later, or at once with ``key * 10``."""

    def __init__(self, answer_at_once: bool = True) -> None:
        self.batches: list[list[int]] = []
        self.pending: list[Deferred[dict[int, int]]] = []
        self.answer_at_once = answer_at_once

    def fetch_many(self, keys: list[int]) -> Deferred[dict[int, int]]:
        self.batches.append(keys)
        if self.answer_at_once:
            return succeed({key: key * 10 for key in keys})
        d: Deferred[dict[int, int]] = Deferred()
        self.pending.append(d)
        return d


class BatcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend()
        self.batcher = Batcher(self.backend.fetch_many, self.clock, max_keys=3)

    def test_keys_of_one_turn_are_fetched_together_when_it_ends(self) -> None:
        """Nothing is fetched until the turn ends; then one batch, each key once, and each
        caller (two asked for key 2) gets its own key's answer."""
        loads = [self.batcher.load(key) for key in (2, 1, 2)]
        self.assertEqual(self.backend.batches, [])
        self.assertNoResult(loads[0])
        self.clock.advance(0)
        self.assertEqual(self.backend.batches, [[2, 1]])
        self.assertEqual([self.successResultOf(d) for d in loads], [20, 10, 20])

    def test_a_later_turn_makes_a_batch_of_its_own(self) -> None:
        first = self.batcher.load(1)
        self.clock.advance(0)
        second = self.batcher.load(1)
        self.clock.advance(0)
        self.assertEqual(self.backend.batches, [[1], [1]])
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (10, 10))

    def test_no_batch_is_larger_than_max_keys(self) -> None:
        loads = [self.batcher.load(key) for key in range(7)]
        self.clock.advance(0)
        self.assertEqual(self.backend.batches, [[0, 1, 2], [3, 4, 5], [6]])
        self.assertEqual([self.successResultOf(d) for d in loads], [0, 10, 20, 30, 40, 50, 60])

    def test_keys_asked_for_while_a_batch_is_in_flight_do_not_wait_for_it(self) -> None:
        """A batch in flight holds nothing up: the next turn's keys go out in a batch of their own."""
        self.backend.answer_at_once = False
        first = self.batcher.load(1)
        self.clock.advance(0)
        second = self.batcher.load(2)
        self.clock.advance(0)
        self.assertEqual(self.backend.batches, [[1], [2]])
        self.backend.pending[1].callback({2: 20})
        self.assertEqual(self.successResultOf(second), 20)
        self.assertNoResult(first)

    def test_a_failed_batch_fails_every_caller_in_it(self) -> None:
        self.backend.answer_at_once = False
        loads = [self.batcher.load(key) for key in (1, 2)]
        self.clock.advance(0)
        self.backend.pending[0].errback(ValueError("the replica is gone"))
        for d in loads:
            self.assertEqual(str(self.failureResultOf(d, ValueError).value), "the replica is gone")

    def test_a_fetch_that_raises_fails_its_callers(self) -> None:
        def broken(keys: list[int]) -> Deferred[dict[int, int]]:
            raise RuntimeError("no")

        batcher = Batcher(broken, self.clock)
        load = batcher.load(1)
        self.clock.advance(0)
        self.failureResultOf(load, RuntimeError)

    def test_a_key_the_answer_leaves_out_fails_alone(self) -> None:
        self.backend.answer_at_once = False
        loads = [self.batcher.load(key) for key in (1, 2)]
        self.clock.advance(0)
        self.backend.pending[0].callback({1: 10})
        self.assertEqual(self.successResultOf(loads[0]), 10)
        self.failureResultOf(loads[1], KeyError)

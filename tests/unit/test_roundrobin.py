"""Tests for ``bazar.roundrobin``: the turn order used to pick replicas."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bazar.roundrobin import RoundRobin

REPLICAS = ("catalog-1", "catalog-2", "catalog-3")


class NextTests(SynchronousTestCase):
    def test_cycles_in_order(self) -> None:
        """next() returns the items in order and wraps around."""
        rr = RoundRobin(REPLICAS)
        self.assertEqual([rr.next() for _ in range(7)], [*REPLICAS, *REPLICAS, REPLICAS[0]])

    def test_single_item(self) -> None:
        """With one item, next() always returns it."""
        rr = RoundRobin(["only"])
        self.assertEqual([rr.next() for _ in range(3)], ["only"] * 3)

    def test_len(self) -> None:
        """len() is the number of items."""
        self.assertEqual(len(RoundRobin(REPLICAS)), 3)

    def test_empty_is_rejected(self) -> None:
        """An empty sequence raises ValueError."""
        self.assertRaises(ValueError, RoundRobin, [])

    def test_later_changes_to_the_input_do_not_matter(self) -> None:
        """The items are copied: mutating the given list does not change the rotation."""
        items = list(REPLICAS)
        rr = RoundRobin(items)
        items.append("catalog-4")
        self.assertEqual([rr.next() for _ in range(4)], [*REPLICAS, REPLICAS[0]])


class RotationTests(SynchronousTestCase):
    def test_every_item_once_from_the_first(self) -> None:
        """On a fresh round robin, rotation() is every item in order."""
        self.assertEqual(RoundRobin(REPLICAS).rotation(), list(REPLICAS))

    def test_starts_with_the_next_in_turn(self) -> None:
        """After some next() calls, rotation() starts where next() would have and wraps."""
        rr = RoundRobin(REPLICAS)
        rr.next()
        rr.next()
        self.assertEqual(rr.rotation(), ["catalog-3", "catalog-1", "catalog-2"])

    def test_advances_the_turn_by_one(self) -> None:
        """rotation() uses up one turn: the next call starts one further on."""
        rr = RoundRobin(REPLICAS)
        self.assertEqual(rr.rotation()[0], "catalog-1")
        self.assertEqual(rr.next(), "catalog-2")
        self.assertEqual(rr.rotation(), ["catalog-3", "catalog-1", "catalog-2"])
        self.assertEqual(rr.rotation(), ["catalog-1", "catalog-2", "catalog-3"])

    def test_successive_rotations_spread_the_first_choice(self) -> None:
        """Successive rotations start on successive items, so reads are spread over all replicas."""
        rr = RoundRobin(REPLICAS)
        self.assertEqual([rr.rotation()[0] for _ in range(4)], [*REPLICAS, REPLICAS[0]])

    def test_equal_items_keep_their_turn(self) -> None:
        """Equal items are distinct turns: the rotation starts at the turn, not at the first equal item."""
        rr = RoundRobin(["a", "b", "a"])
        rr.next()
        rr.next()
        self.assertEqual(rr.rotation(), ["a", "a", "b"])

"""Tests for ``bazar.roundrobin``: the turn order used to pick replicas, and the order a write
tries them in (the sequencer first)."""

from __future__ import annotations

from typing import NamedTuple

from twisted.trial.unittest import SynchronousTestCase

from bazar.roundrobin import RoundRobin, SequencerFirst

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


class Node(NamedTuple):
    name: str


A, B, C = Node("a"), Node("b"), Node("c")


class SequencerFirstTests(SynchronousTestCase):
    def test_without_a_sequencer_it_is_round_robin(self) -> None:
        """No sequencer named or heard of: each order is the next rotation."""
        chooser = SequencerFirst([A, B, C])
        self.assertEqual([chooser.order() for _ in range(2)], [[A, B, C], [B, C, A]])

    def test_a_named_sequencer_comes_first_then_the_others_in_turn(self) -> None:
        """The sequencer leads every order; the others follow in turn, one turn further each time."""
        chooser = SequencerFirst([A, B, C])
        self.assertEqual(chooser.order("b"), [B, A, C])
        self.assertEqual(chooser.order("b"), [B, C, A])
        self.assertEqual(chooser.order("b"), [B, C, A])

    def test_orders_share_the_turns_of_rotations(self) -> None:
        """Reads (rotation) and writes (order) take turns from one round robin."""
        chooser = SequencerFirst([A, B, C])
        chooser.rotation()
        self.assertEqual(chooser.order(), [B, C, A])
        self.assertEqual(chooser.rotation(), [C, A, B])

    def test_the_sequencer_heard_of_leads_until_another_is_named(self) -> None:
        """``heard`` is remembered; a name given to ``order`` wins over it."""
        chooser = SequencerFirst([A, B, C])
        chooser.heard("c")
        self.assertEqual([chooser.order()[0] for _ in range(3)], [C, C, C])
        self.assertEqual(chooser.order("a")[0], A)
        self.assertEqual(chooser.order()[0], C)

    def test_an_unlisted_name_is_no_sequencer(self) -> None:
        """Heard of a replica it does not list (a stale or foreign name): plain round robin."""
        chooser = SequencerFirst([A, B, C])
        chooser.heard("c")
        chooser.heard("z")
        self.assertIsNone(chooser.sequencer)
        self.assertEqual(chooser.order(), [A, B, C])

    def test_a_failed_sequencer_is_forgotten_and_asked_last(self) -> None:
        """The sequencer failed: the next order starts after it, and it comes last."""
        chooser = SequencerFirst([A, B, C])
        chooser.heard("a")
        chooser.order()
        chooser.failed(A)
        self.assertIsNone(chooser.sequencer)
        self.assertEqual(chooser.order(), [B, C, A])

    def test_a_failed_follower_leaves_the_sequencer_first(self) -> None:
        """Another replica failing moves the turn past it; the sequencer still leads."""
        chooser = SequencerFirst([A, B, C])
        chooser.heard("c")
        chooser.failed(A)
        self.assertEqual(chooser.order(), [C, B, A])

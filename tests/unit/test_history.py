"""The history checker finds exactly the reads that went back in time."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.history import History


class StaleReadTests(SynchronousTestCase):
    def history(self) -> History:
        h = History()
        h.write("price", 1, start=0.0, end=1.0)
        h.write("price", 2, start=2.0, end=3.0)
        return h

    def test_reads_after_the_ack_must_see_it(self) -> None:
        h = self.history()
        h.read("price", 2, start=3.5, end=4.0)  # fine
        h.read("price", 1, start=3.5, end=4.0)  # stale: 2 was acknowledged at 3.0
        h.read("price", 0, start=1.5, end=1.6)  # stale: the initial value after 1 was acknowledged
        stale = h.stale_reads()
        self.assertEqual([(r.value, w.value) for r, w in stale], [(1, 2), (0, 1)])

    def test_reads_overlapping_a_write_may_see_either(self) -> None:
        h = self.history()
        h.read("price", 1, start=2.5, end=3.5)  # began before 2 was acknowledged
        h.read("price", 2, start=2.5, end=3.5)
        h.read("price", 0, start=0.5, end=0.7)  # before any acknowledgement
        h.read("other", 9, start=5.0, end=6.0)  # a key nobody wrote
        self.assertEqual(h.stale_reads(), [])

    def test_a_newer_value_is_never_stale(self) -> None:
        h = self.history()
        h.write("price", 3, start=3.1, end=5.0)
        h.read("price", 3, start=4.0, end=4.5)  # sees a write still in flight: fine
        self.assertEqual(h.stale_reads(), [])
        self.assertEqual((h.count("write"), h.count("read")), (3, 1))

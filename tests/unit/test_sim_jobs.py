"""The simulator's search split over worker processes (``bazar.sim.search``): the merging of
the workers' outcomes, shown without processes (a pool that hands outcomes back out of
order inside, as workers finish them), the workers stopped on every way out, and one small
real run on two workers."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bazar.sim import search as search_module
from bazar.sim.run import schedule_of
from bazar.sim.search import MAX_SHRUNK, Outcome, outcome, search, workers

FAILING = {3, 5, 6, 7, 8, 9, 11}  # more than MAX_SHRUNK


def _fake_outcome(seed: int, wipes: bool = False) -> Outcome:
    problems = (f"planted problem of {seed}",) if seed in FAILING else ()
    return Outcome(seed, problems, ("fault a", "fault b", "fault c"))


def _fake_shrunk(seed: int, wipes: bool = False) -> list[int]:
    return [1]


class _Pool:
    """Runs in this process, finishing the items of each group of three in reverse order, as
    three workers might; ``imap`` gives them back in order, as ``Pool.imap`` does."""

    def __init__(self, jobs: int, fail_after: int | None = None) -> None:
        self.jobs = jobs
        self.fail_after = fail_after
        self.finished: list[Any] = []
        self.stopped: list[str] = []

    def imap(self, func: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        pending = list(items)
        given = 0
        for start in range(0, len(pending), 3):
            group = pending[start : start + 3]
            done = {item: func(item) for item in reversed(group)}
            self.finished += [done[item] for item in reversed(group)]
            for item in group:
                if self.fail_after is not None and given == self.fail_after:
                    raise KeyboardInterrupt()
                given += 1
                yield done[item]

    def terminate(self) -> None:
        self.stopped.append("terminate")

    def join(self) -> None:
        self.stopped.append("join")


class MergeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(search_module, "outcome", _fake_outcome)
        self.patch(search_module, "shrunk", _fake_shrunk)

    def _search(self, jobs: int, pool: _Pool | None = None) -> tuple[int, str, str]:
        """The search's exit code, stdout, and stderr without the rates (its only times)."""
        out, err = io.StringIO(), io.StringIO()
        code = search(1, 12, True, jobs=jobs, start=lambda n: pool or _Pool(n), out=out, err=err)
        return code, out.getvalue(), re.sub(r", [0-9.]+/s$", "", err.getvalue(), flags=re.M)

    def test_split_prints_what_one_process_prints(self) -> None:
        """With workers finishing out of order, the outcomes are merged in seed order: the
        output is the in-process output, failures in seed order, the first MAX_SHRUNK shrunk."""
        pool = _Pool(3)
        split = self._search(3, pool)
        alone = self._search(1)
        self.assertEqual(split, alone)
        finished = [o.seed for o in pool.finished if isinstance(o, Outcome)]
        self.assertNotEqual(finished, sorted(finished))  # else the merge would have nothing to do
        code, out, err = split
        self.assertEqual((code, out), (1, "12 schedules, 7 failed\n"))
        failed = [int(line.split()[2].rstrip(":")) for line in err.splitlines() if line.startswith("FAILED")]
        self.assertEqual(failed, sorted(FAILING))
        shrunk = [int(line.split()[1]) for line in err.splitlines() if line.startswith("schedule ")]
        self.assertEqual(shrunk, sorted(FAILING)[:MAX_SHRUNK])
        self.assertIn("replay: python -m bazar.sim --replay 3\n", err)
        self.assertIn("replay shrunk: python -m bazar.sim --replay 3 --keep 1\n", err)
        self.assertIn("10/12 schedules, 6 failed", err)
        self.assertIn("12/12 schedules, 7 failed", err)
        self.assertEqual(pool.stopped, ["terminate", "join"])

    def test_every_schedule_once(self) -> None:
        pool = _Pool(3)
        self._search(3, pool)
        searched = sorted(o.seed for o in pool.finished if isinstance(o, Outcome))
        self.assertEqual(searched, list(range(1, 13)))

    def test_workers_stopped_on_ctrl_c(self) -> None:
        pool = _Pool(2, fail_after=4)
        self.assertRaises(KeyboardInterrupt, self._search, 2, pool)
        self.assertEqual(pool.stopped, ["terminate", "join"])

    def test_workers_stopped_on_error(self) -> None:
        pool = _Pool(2)

        def broken(seed: int, wipes: bool = False) -> Outcome:
            raise RuntimeError("a worker's error")

        self.patch(search_module, "outcome", broken)
        self.assertRaises(RuntimeError, self._search, 2, pool)
        self.assertEqual(pool.stopped, ["terminate", "join"])

    def test_time_limit(self) -> None:
        """With ``max_seconds``, the search stops at the first schedule that ends past it and
        says how many it ran; the workers are stopped; failures so far still count."""
        pool = _Pool(3)
        ticks = iter(range(100))  # one second per schedule (the first tick is the start)
        out, err = io.StringIO(), io.StringIO()
        code = search(
            1,
            12,
            False,
            jobs=3,
            start=lambda n: pool,
            out=out,
            err=err,
            max_seconds=4.5,
            clock=lambda: next(ticks),
        )
        self.assertEqual((code, out.getvalue()), (1, "5 schedules, 2 failed\n"))  # seeds 1-5: 3 and 5 fail
        self.assertIn("time limit (4.5 s) reached: stopped after 5 of 12", err.getvalue())
        self.assertIn("5/12 schedules, 2 failed", err.getvalue())
        self.assertEqual(pool.stopped, ["terminate", "join"])

    def test_within_the_time_limit(self) -> None:
        ticks = iter(range(100))
        out, err = io.StringIO(), io.StringIO()
        code = search(1, 2, False, out=out, err=err, max_seconds=60, clock=lambda: next(ticks))
        self.assertEqual((code, out.getvalue()), (0, "2 schedules, 0 failed\n"))
        self.assertNotIn("time limit", err.getvalue())

    def test_one_job_starts_no_pool(self) -> None:
        def start(jobs: int) -> _Pool:
            raise AssertionError("no pool for one job")

        with workers(1, start) as run:
            self.assertEqual(list(run(lambda x: x * 2, [1, 2])), [2, 4])


class RealWorkersTests(SynchronousTestCase):
    def test_two_workers(self) -> None:
        """Two real worker processes run schedules 0 and 1 (each passes: regression seeds),
        as drawn in this process, and stop."""
        with workers(2) as run:
            got = list(run(outcome, [0, 1]))
        self.assertEqual([o.seed for o in got], [0, 1])
        self.assertEqual([o.problems for o in got], [(), ()])
        drawn = [tuple(f.describe() for f in schedule_of(seed)) for seed in (0, 1)]
        self.assertEqual([o.faults for o in got], drawn)

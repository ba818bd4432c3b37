"""The search over many schedules (``python -m bazar.sim --runs N``): in this process, or
split over worker processes (``--jobs``), one schedule at a time to whichever is free.

A schedule's result depends only on its seed (and the code), not on the process that runs
it or on what it ran before, so the split changes nothing but the time taken: outcomes come
back in seed order (``Pool.imap``), and what is printed is what one process would print.
Workers start afresh (``spawn``) with the parent's environment, ``PYTHONHASHSEED=0``
included (``python -m bazar.sim`` re-executes itself with it). They ignore Ctrl-C (the
parent gets it, and stops them), are stopped on every way out of ``search``, and exit by
themselves if the parent dies without stopping them (SIGKILL).

Failing schedules are shrunk after the search, the first ``MAX_SHRUNK`` of them in seed
order, on the same workers: with many failures (a bug that shows in one schedule of ten),
shrinking them all would take longer than the search.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TextIO, TypeVar

from bazar.sim.faults import Fault
from bazar.sim.run import run_schedule, schedule_of

MAX_SHRINK_RUNS = 40  # runs one shrink may take
MAX_SHRUNK = 5  # failures shrunk after a search; the others are printed with their replay command
PROGRESS_EVERY = 10  # schedules between progress lines

A = TypeVar("A")
B = TypeVar("B")
Map = Callable[[Callable[[A], B], Iterable[A]], Iterator[B]]


def replay_command(seed: int, keep: list[int] | None = None, wipes: bool = False) -> str:
    command = f"python -m bazar.sim --replay {seed}" + (" --wipes" if wipes else "")
    if keep is not None:
        command += f" --keep {','.join(map(str, keep)) or 'none'}"
    return command


def shrink(seed: int, faults: list[Fault]) -> list[int]:
    """Indices of a shorter sub-schedule of ``faults`` that still fails (greedy: drop each
    fault in turn, keep the drop if the run still fails)."""
    kept = list(range(len(faults)))
    runs = 0
    changed = True
    while changed and runs < MAX_SHRINK_RUNS:
        changed = False
        for index in list(kept):
            trial = [i for i in kept if i != index]
            runs += 1
            if run_schedule(seed, [faults[i] for i in trial]).failed:
                kept = trial
                changed = True
            if runs >= MAX_SHRINK_RUNS:
                break
    return kept


@dataclass(frozen=True)
class Outcome:
    """What the search keeps of one schedule's run (a worker sends it back)."""

    seed: int
    problems: tuple[str, ...]
    faults: tuple[str, ...]  # each fault described

    @property
    def failed(self) -> bool:
        return bool(self.problems)


def outcome(seed: int, wipes: bool = False) -> Outcome:
    result = run_schedule(seed, wipes=wipes)
    return Outcome(seed, tuple(result.problems), tuple(f.describe() for f in result.faults))


def shrunk(seed: int, wipes: bool = False) -> list[int]:
    return shrink(seed, schedule_of(seed, wipes))


class Pool(Protocol):
    def imap(self, func: Callable[[A], B], iterable: Iterable[A]) -> Iterator[B]: ...

    def terminate(self) -> None: ...

    def join(self) -> None: ...


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)  # the parent is gone and nobody stopped us: stop


def _worker_started(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def start_pool(jobs: int) -> Pool:
    context = multiprocessing.get_context("spawn")
    return context.Pool(jobs, initializer=_worker_started, initargs=(os.getpid(),))


@contextmanager
def workers(jobs: int, start: Callable[[int], Pool] = start_pool) -> Iterator[Map[Any, Any]]:
    """A ``map`` that runs on ``jobs`` worker processes (1: this one), in order; the workers
    are stopped however the block ends (an exception, Ctrl-C, SIGTERM made SystemExit)."""
    if jobs <= 1:
        yield map
        return
    pool = start(jobs)
    try:
        yield pool.imap
    finally:
        pool.terminate()
        pool.join()


def report(outcome: Outcome, wipes: bool, err: TextIO) -> None:
    print(f"FAILED schedule {outcome.seed}: {outcome.problems[0]}", file=err)
    print(f"  replay: {replay_command(outcome.seed, wipes=wipes)}", file=err)


def report_shrunk(outcome: Outcome, kept: list[int], wipes: bool, err: TextIO) -> None:
    if len(kept) < len(outcome.faults):
        print(f"schedule {outcome.seed} shrunk to {len(kept)} of {len(outcome.faults)} faults:", file=err)
        for index in kept:
            print(f"    {outcome.faults[index]}", file=err)
        print(f"  replay shrunk: {replay_command(outcome.seed, kept, wipes)}", file=err)
    else:
        print(f"schedule {outcome.seed}: no fault of its {len(kept)} can go", file=err)


def search(
    first: int,
    runs: int,
    shrinking: bool,
    wipes: bool = False,
    jobs: int = 1,
    start: Callable[[int], Pool] = start_pool,
    out: TextIO | None = None,
    err: TextIO | None = None,
    max_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run schedules ``first`` to ``first + runs - 1`` on ``jobs`` processes; 1 if any failed.
    With ``max_seconds``, no schedule is waited for once that time has passed: a search
    bounded in time as well as in count (CI's), which says how many it ran."""
    out = out or sys.stdout
    err = err or sys.stderr
    failures: list[Outcome] = []
    started = clock()
    searched = 0
    with workers(jobs, start) as run:
        for number, found in enumerate(
            run(functools.partial(outcome, wipes=wipes), range(first, first + runs)), 1
        ):
            searched = number
            if found.failed:
                failures.append(found)
                report(found, wipes, err)
            elapsed = clock() - started
            over = max_seconds is not None and elapsed >= max_seconds and number < runs
            if number % PROGRESS_EVERY == 0 or number == runs or over:
                rate = number / elapsed if elapsed > 0 else 0.0
                print(f"{number}/{runs} schedules, {len(failures)} failed, {rate:.2f}/s", file=err)
            if over:
                print(f"time limit ({max_seconds:g} s) reached: stopped after {number} of {runs}", file=err)
                break
        if shrinking and failures:
            chosen = failures[:MAX_SHRUNK]
            if len(failures) > len(chosen):
                print(f"shrinking the first {len(chosen)} of {len(failures)} failures", file=err)
            seeds = [o.seed for o in chosen]
            for found, kept in zip(chosen, run(functools.partial(shrunk, wipes=wipes), seeds), strict=True):
                report_shrunk(found, kept, wipes, err)
    if failures:
        print(f"failed: {' '.join(str(o.seed) for o in failures)}; replay one with", file=err)
        print(f"  {replay_command(failures[0].seed, wipes=wipes)}", file=err)
    print(f"{searched} schedules, {len(failures)} failed", file=out)
    return 1 if failures else 0

"""``python -m bazar.sim --runs N [--seed S] [--jobs J]`` searches N schedules (on J worker
processes: ``bazar.sim.search``); ``--replay SEED`` shows one.

A failing schedule is printed with its seed and the one line that replays it, and shrunk
(``shrink``: faults dropped one at a time while it still fails).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
from typing import Any, NoReturn

from bazar.sim.run import run_schedule, schedule_of
from bazar.sim.search import search


def _keep(text: str | None) -> list[int] | None:
    if text is None:
        return None
    return [] if text == "none" else [int(part) for part in text.split(",")]


def replay(seed: int, keep: list[int] | None, wipes: bool = False) -> int:
    faults = schedule_of(seed, wipes)
    if keep is not None:
        faults = [faults[i] for i in keep]
    result = run_schedule(seed, faults, verbose=True)
    print(f"schedule {seed}: {result.knobs}")
    print("faults:")
    for fault in faults:
        print(f"  {fault.describe()}")
    print("trace:")
    for line in result.trace:
        print(f"  {line}")
    if result.failed:
        print(f"first broken check: {result.problems[0]}")
        for problem in result.problems[1:10]:
            print(f"  and: {problem}")
        return 1
    print(f"every check held ({len(result.ops)} operations, {result.messages} messages)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bazar.sim", description=__doc__)
    parser.add_argument("--runs", type=int, default=100, help="how many schedules to search")
    parser.add_argument("--seed", type=int, help="the first schedule's seed (default: a fresh one, printed)")
    parser.add_argument("--replay", type=int, metavar="SEED", help="rerun one schedule with its trace")
    parser.add_argument("--keep", help="with --replay: only these faults of it (indices, e.g. 0,3)")
    parser.add_argument("--no-shrink", action="store_true", help="report failures without shrinking them")
    parser.add_argument(
        "--wipes",
        action="store_true",
        help="also draw wipes (a follower restarted on an empty disk): beyond the fault model on top of "
        "another fault, so only for searches that look for what a wipe shows",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes to split the schedules over (default: one per CPU; 1: this process)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        help="stop the search once this many seconds have passed (it says how many schedules it ran)",
    )
    options = parser.parse_args(argv)
    if options.replay is not None:
        return replay(options.replay, _keep(options.keep), options.wipes)
    seed = options.seed
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
        again = f"python -m bazar.sim --runs {options.runs} --seed {seed}" + (
            " --wipes" if options.wipes else ""
        )
        print(f"seed {seed} (this search again: {again})", file=sys.stderr)
    signal.signal(signal.SIGTERM, _terminated)  # so that the workers are stopped on the way out
    try:
        jobs = max(1, options.jobs)
        return search(
            seed, options.runs, not options.no_shrink, options.wipes, jobs, max_seconds=options.max_seconds
        )
    except KeyboardInterrupt:  # the workers are stopped already
        print("interrupted", file=sys.stderr)
        return 130


def _terminated(signum: int, frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)


def _fixed_hashes() -> None:
    """Run again with PYTHONHASHSEED=0: set and dict orders of strings then do not change
    from one run of the command to the next, so a seed replays exactly."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "bazar.sim", *sys.argv[1:]])


if __name__ == "__main__":
    _fixed_hashes()
    sys.exit(main())

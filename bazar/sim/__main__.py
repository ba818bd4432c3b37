"""``python -m bazar.sim --runs N [--seed S]`` searches N schedules; ``--replay SEED`` shows one.

A failing schedule is shrunk (``shrink``: faults dropped one at a time while it still
fails) and printed with its seed and the one line that replays it.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

from bazar.sim.faults import Fault
from bazar.sim.run import Result, run_schedule, schedule_of

MAX_SHRINK_RUNS = 40


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


def replay_command(seed: int, keep: list[int] | None = None, wipes: bool = False) -> str:
    command = f"python -m bazar.sim --replay {seed}" + (" --wipes" if wipes else "")
    if keep is not None:
        command += f" --keep {','.join(map(str, keep)) or 'none'}"
    return command


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


def report(result: Result, shrunk: list[int] | None, wipes: bool = False) -> None:
    print(f"FAILED schedule {result.seed}: {result.problems[0]}", file=sys.stderr)
    print(f"  replay: {replay_command(result.seed, wipes=wipes)}", file=sys.stderr)
    if shrunk is not None and len(shrunk) < len(result.faults):
        print(f"  shrunk to {len(shrunk)} of {len(result.faults)} faults:", file=sys.stderr)
        for index in shrunk:
            print(f"    {result.faults[index].describe()}", file=sys.stderr)
        print(f"  replay shrunk: {replay_command(result.seed, shrunk, wipes)}", file=sys.stderr)


def search(first: int, runs: int, shrinking: bool, wipes: bool = False) -> int:
    failed = 0
    started = time.monotonic()
    for number in range(runs):
        seed = first + number
        result = run_schedule(seed, wipes=wipes)
        if result.failed:
            failed += 1
            report(result, shrink(seed, result.faults) if shrinking else None, wipes)
        if (number + 1) % 10 == 0 or number + 1 == runs:
            rate = (number + 1) / (time.monotonic() - started)
            print(f"{number + 1}/{runs} schedules, {failed} failed, {rate:.2f}/s", file=sys.stderr)
    print(f"{runs} schedules, {failed} failed")
    return 1 if failed else 0


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
    options = parser.parse_args(argv)
    if options.replay is not None:
        return replay(options.replay, _keep(options.keep), options.wipes)
    seed = options.seed
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
        print(f"seed {seed}", file=sys.stderr)
    return search(seed, options.runs, not options.no_shrink, options.wipes)


def _fixed_hashes() -> None:
    """Run again with PYTHONHASHSEED=0: set and dict orders of strings then do not change
    from one run of the command to the next, so a seed replays exactly."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "bazar.sim", *sys.argv[1:]])


if __name__ == "__main__":
    _fixed_hashes()
    sys.exit(main())

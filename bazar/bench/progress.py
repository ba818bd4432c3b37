"""Progress on stderr: one line per measured loop, with a live count and an estimate of what is left.

A benchmark that prints nothing for minutes looks hung. On a terminal the line is redrawn in
place (at most 10 times a second, so drawing costs nothing measurable); in a log file or
CI, where carriage returns make a mess, a line is written every few seconds instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def format_duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``: short and human."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def status_line(label: str, done: int, total: int, elapsed: float, limit: float | None = None) -> str:
    """``label: 340/1,000 (34 %), 1.2 s, ETA 2.3 s``; the ETA is capped by the loop's time limit."""
    line = f"{label}: {done:,}/{total:,}"
    if total:
        line += f" ({100 * done / total:.0f} %)"
    line += f", {format_duration(elapsed)}"
    if 0 < done < total and elapsed > 0:
        eta = (total - done) * elapsed / done
        if limit is not None:
            eta = min(eta, max(limit - elapsed, 0.0))
        line += f", ETA {format_duration(eta)}"
    return line


class Task:
    """One loop's line. ``update`` as often as you like; ``finish`` once."""

    def __init__(self, progress: Progress, label: str, total: int, limit: float | None) -> None:
        self.progress = progress
        self.label = label
        self.total = total
        self.limit = limit
        self.started = progress.clock()
        self.done = 0
        self._drawn = self.started if not progress.interactive else 0.0  # a log line only every few s
        self._finished = False
        if not progress.interactive:
            progress.write(f"{label}: {total:,} to go\n")

    def elapsed(self) -> float:
        return self.progress.clock() - self.started

    def update(self, done: int) -> None:
        self.done = done
        now = self.progress.clock()
        interval = 0.1 if self.progress.interactive else 5.0
        if now - self._drawn < interval:
            return
        self._drawn = now
        line = status_line(self.label, done, self.total, now - self.started, self.limit)
        if self.progress.interactive:
            self.progress.write("\r\x1b[2K" + line)
        else:
            self.progress.write(line + "\n")

    def finish(self, outcome: str = "") -> None:
        if self._finished:
            return
        self._finished = True
        line = f"{self.label}: {self.done:,} in {format_duration(self.elapsed())}"
        if outcome:
            line += f" — {outcome}"
        self.progress.write(("\r\x1b[2K" if self.progress.interactive else "") + line + "\n")


class Progress:
    def __init__(
        self,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.clock = clock

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def say(self, message: str) -> None:
        """A line of its own (a heading, a note, a skipped step)."""
        self.write(message + "\n")

    def task(self, label: str, total: int, limit: float | None = None) -> Task:
        return Task(self, label, total, limit)

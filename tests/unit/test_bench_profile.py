"""``python -m bazar.bench.profile``: the profiling hook every process loads, and the figures.

The tool itself (a cluster, a load, the profiles) is run by hand: docs/benchmark.md has its
figures and the command."""

from __future__ import annotations

import os
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from twisted.trial.unittest import SynchronousTestCase

from bazar.bench import profile

SITE = "/venv/lib/python3.11/site-packages/"
CHILD = """
import json, os, signal
signal.raise_signal(signal.SIGUSR1)
def work():
    return [json.dumps({"n": n}) for n in range(2000)]
work()
signal.raise_signal(signal.SIGUSR2)
print(signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL)
"""


class HookTests(SynchronousTestCase):
    def run_child(self, code: str, **environ: str) -> str:
        """``code`` run by Python with the hook on its path, and ``environ`` (no BAZAR_PROFILE
        unless given); its output."""
        env = {k: v for k, v in os.environ.items() if k != "BAZAR_PROFILE"}
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "PYTHONPATH": str(profile.HOOK), **environ},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    def test_profiles_between_the_signals(self) -> None:
        """With BAZAR_PROFILE, SIGUSR1 starts the profile and SIGUSR2 writes it, named by pid:
        it holds what ran in between."""
        with tempfile.TemporaryDirectory() as directory:
            self.assertEqual(self.run_child(CHILD, BAZAR_PROFILE=directory), "False")
            [written] = Path(directory).iterdir()
            self.assertRegex(written.name, r"^\d+\.pstats$")
            names = {key[2] for key in cast(Any, pstats.Stats(str(written))).stats}
            self.assertIn("work", names)
            self.assertIn("dumps", names)

    def test_nothing_without_the_variable(self) -> None:
        """Without BAZAR_PROFILE the hook installs no handler (SIGUSR1 would end the process)."""
        default = "import signal; print(signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL)"
        self.assertEqual(self.run_child(default), "True")


def entry(own: float, callers: dict[tuple[str, int, str], float] | None = None) -> tuple[Any, ...]:
    """A pstats row: (primitive calls, calls, own time, cumulative time, callers)."""
    rows = {caller: (1, 1, seconds, seconds) for caller, seconds in (callers or {}).items()}
    return (1, 1, own, own, rows)


AMP = (SITE + "twisted/protocols/amp.py", 657, "serialize")
ROUTE = ("/work/bazar/order/app.py", 120, "purchase_call")
JSON = ("/usr/lib/python3.11/json/encoder.py", 200, "encode")
ISINSTANCE = ("~", 0, "<built-in method builtins.isinstance>")
POLL = ("~", 0, "<method 'poll' of 'select.epoll' objects>")
SEND = ("~", 0, "<method 'send' of '_socket.socket' objects>")
ENTRIES = {
    POLL: entry(5.0),  # the reactor waiting: not counted
    AMP: entry(0.3),
    ROUTE: entry(0.1),
    JSON: entry(0.1),
    ISINSTANCE: entry(0.5, {AMP: 0.4, ROUTE: 0.1}),
}


class FiguresTests(SynchronousTestCase):
    def test_areas(self) -> None:
        """Own time by where the code lives; a builtin's in its callers' areas, in proportion."""
        seconds = profile.areas(profile.busy({**ENTRIES, SEND: entry(0.25, {AMP: 0.25})}))
        self.assertEqual(set(seconds), {"AMP", "Bazar", "json", profile.HANDOFFS})
        self.assertAlmostEqual(seconds[profile.HANDOFFS], 0.25)
        self.assertAlmostEqual(seconds["AMP"], 0.3 + 0.4)
        self.assertAlmostEqual(seconds["Bazar"], 0.1 + 0.1)
        self.assertAlmostEqual(seconds["json"], 0.1)

    def test_area_of(self) -> None:
        for filename, area in (
            (SITE + "twisted/logger/_logger.py", "logging"),
            (SITE + "prometheus_client/metrics.py", "metrics"),
            ("/work/bazar/metrics.py", "metrics"),
            (SITE + "twisted/web/http.py", "HTTP"),
            (SITE + "twisted/internet/defer.py", "Deferreds"),
            (SITE + "twisted/internet/tcp.py", "reactor, sockets"),
            ("/work/bazar/storage.py", "Bazar"),
            ("/usr/lib/python3.11/socket.py", "other"),
        ):
            self.assertEqual(profile.area_of(filename), area, filename)

    def test_function_names(self) -> None:
        self.assertEqual(profile.function_name(AMP), "twisted/protocols/amp.py:657(serialize)")
        self.assertEqual(profile.function_name(ROUTE), "bazar/order/app.py:120(purchase_call)")
        self.assertEqual(profile.function_name(JSON), "python3.11/json/encoder.py:200(encode)")
        self.assertEqual(profile.function_name(ISINSTANCE), ISINSTANCE[2])

    def test_hop_and_table(self) -> None:
        """Shares of the profiled time (1.0 s here, the wait in epoll left out), the largest
        first; the table shows areas of 2 % or more and the CPU time per purchase, '?' where it
        is unknown."""
        stats: Any = type("Stats", (), {"stats": ENTRIES})()
        hop = profile.hop_figures("order-1", stats, 1.25)
        self.assertEqual(list(hop.areas), ["AMP", "Bazar", "json"])
        self.assertAlmostEqual(hop.areas["AMP"], 0.7)
        top = [name for name, _ in hop.top]
        self.assertEqual(top[:2], [ISINSTANCE[2], "twisted/protocols/amp.py:657(serialize)"])
        self.assertAlmostEqual(hop.top[0][1], 0.5)
        lines = profile.table([hop, profile.hop_figures("order-2", None, None)]).splitlines()
        self.assertEqual(len(lines), 4)
        self.assertTrue(lines[2].startswith("| order-1 | 1.25 | AMP 70%, Bazar 20%, json 10% | "), lines[2])
        self.assertEqual(lines[3], "| order-2 | ? |  |  |")


class PinTests(SynchronousTestCase):
    def test_every_thread_of_a_process_on_one_cpu(self) -> None:
        """``--cpu``: each thread a process already has, and one it starts later, runs on the
        CPU given alone."""
        child = subprocess.Popen(
            [sys.executable, "-c", PINNED_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        assert child.stdout is not None and child.stdin is not None
        self.assertEqual(child.stdout.readline().strip(), "started")
        cpu = min(os.sched_getaffinity(0))
        profile.pin([child.pid], cpu)
        child.stdin.write("go\n")
        child.stdin.flush()
        self.assertEqual(child.stdout.readline().strip(), f"[[{cpu}], [{cpu}], [{cpu}]]")


PINNED_CHILD = """
import os, sys, threading
seen = []
def note():
    seen.append(sorted(os.sched_getaffinity(0)))
first = threading.Thread(target=lambda: (ready.wait(), note()))
ready = threading.Event()
first.start()
print("started", flush=True)
sys.stdin.readline()
ready.set(); first.join()
note()
later = threading.Thread(target=note); later.start(); later.join()
print(seen, flush=True)
"""

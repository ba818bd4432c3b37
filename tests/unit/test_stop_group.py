"""``stop_group`` and ``Processes``: SIGTERM to the pid, deadlines, SIGKILL to the group, the report.

Real (tiny) ``sh`` processes, each in a session of its own as the benchmark and the
integration tests start theirs; every one is killed by its process group afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bazar.launch import (
    Process,
    Processes,
    Unclean,
    group_alive,
    kill_group,
    poll,
    process_group,
    stop_group,
    wait_for,
)


class StopGroupTests(SynchronousTestCase):
    def start(self, script: str) -> tuple[subprocess.Popen[str], list[str]]:
        """``sh -c script`` in its own session; the lines it printed before ``ready``."""
        popen = subprocess.Popen(
            ["sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.addCleanup(self.cleanup, popen)
        assert popen.stdout is not None
        lines = []
        for line in popen.stdout:
            if line.strip() == "ready":
                break
            lines.append(line.strip())
        return popen, lines

    @staticmethod
    def cleanup(popen: subprocess.Popen[str]) -> None:
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        popen.wait(10)
        assert popen.stdout is not None
        popen.stdout.close()

    def test_sigterm_is_enough(self) -> None:
        popen, _ = self.start("echo ready; exec sleep 30")
        stopped = stop_group(popen, timeout=10, children_timeout=10)
        self.assertEqual(stopped.status, -signal.SIGTERM)
        self.assertFalse(stopped.killed)
        self.assertEqual((stopped.outlived, stopped.survivors), ((), ()))
        self.assertFalse(group_alive(popen.pid))

    def test_an_exited_process_is_not_signalled(self) -> None:
        popen, _ = self.start("echo ready; exit 3")
        popen.wait(10)
        stopped = stop_group(popen, timeout=10, children_timeout=10)
        self.assertEqual(stopped.status, 3)
        self.assertFalse(stopped.killed)

    def test_children_get_a_deadline_of_their_own(self) -> None:
        popen, _ = self.start("sleep 0.5 & echo ready; exec sleep 30")
        stopped = stop_group(popen, timeout=10, children_timeout=10)
        self.assertEqual(stopped.status, -signal.SIGTERM)
        self.assertFalse(stopped.killed)  # the child exited by itself, after its parent
        self.assertFalse(group_alive(popen.pid))

    def test_a_process_ignoring_sigterm_is_killed_with_its_group(self) -> None:
        popen, _ = self.start("trap '' TERM; sleep 30 & echo ready; wait")
        members = process_group(popen.pid)
        self.assertIn(popen.pid, members)
        self.assertEqual(len(members), 2, members)
        started = time.monotonic()
        stopped = stop_group(popen, timeout=0.5, children_timeout=10)
        self.assertLess(time.monotonic() - started, 5)  # killed at the deadline, not 10 s later
        self.assertIsNone(stopped.status)
        self.assertTrue(stopped.killed)
        self.assertEqual(sorted(stopped.outlived), sorted(members))
        self.assertEqual(stopped.survivors, ())
        self.assertEqual(popen.returncode, -signal.SIGKILL)
        self.assertFalse(group_alive(popen.pid))

    def test_children_that_outlive_their_deadline_are_killed(self) -> None:
        # SIGTERM goes to the pid only (a parent such as bazar-cluster stops its own
        # children), so this child, which does not ignore it, is still there at its deadline.
        popen, (child,) = self.start("sleep 30 & echo $!; echo ready; exec sleep 30")
        stopped = stop_group(popen, timeout=10, children_timeout=0.3)
        self.assertEqual(stopped.status, -signal.SIGTERM)  # it exited cleanly itself
        self.assertTrue(stopped.killed)
        self.assertEqual(stopped.outlived, (int(child),))
        self.assertEqual(stopped.survivors, ())
        self.assertFalse(group_alive(popen.pid))

    def test_kill_group(self) -> None:
        popen, _ = self.start("trap '' TERM; sleep 30 & echo ready; wait")
        kill_group(popen, timeout=10)
        self.assertEqual(popen.returncode, -signal.SIGKILL)
        self.assertTrue(poll(lambda: not group_alive(popen.pid), 5.0))


class ProcessesTests(SynchronousTestCase):
    """``bazar.launch.Processes``: everything started is stopped, and how each stopped is checked."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="bazar-launch-test-"))
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.processes = Processes(self.directory)
        self.addCleanup(self.processes.stop_all, 10)

    def start(self, name: str, script: str) -> Process:
        """``sh -c script``, once it has written ``ready`` to its log."""
        process = self.processes.start(name, ["sh", "-c", script])
        self.assertTrue(poll(lambda: "ready" in process.log_tail(), 10), process.log_tail())
        return process

    def test_stop_all_cleanly_names_an_unclean_exit_and_stops_the_rest(self) -> None:
        """One process exits 3 on SIGTERM: Unclean names it (and its log), the others still stop."""
        clean = self.start("clean", "echo ready; exec sleep 30")
        loop = "echo ready; while :; do sleep 0.1; done"
        unclean = self.start("unclean", f"trap 'echo bye; exit 3' TERM; {loop}")
        error = str(self.assertRaises(Unclean, self.processes.stop_all_cleanly, 10))
        self.assertIn(f"unclean (pid {unclean.pid}) did not stop cleanly: exited with status 3", error)
        self.assertIn("bye", error)
        self.assertNotIn("clean (pid", error.replace("unclean (pid", ""))
        self.assertEqual((clean.popen.returncode, unclean.popen.returncode), (-signal.SIGTERM, 3))
        self.assertEqual(self.processes.started, [])
        self.assertFalse(group_alive(clean.pid) or group_alive(unclean.pid))

    def test_stop_all_signals_every_one_at_once(self) -> None:
        """Two processes that each take 2 s to exit on SIGTERM stop in about 2 s, not 4."""
        slow = "trap 'sleep 2; exit 0' TERM; echo ready; while :; do sleep 0.1; done"
        started = [self.start(f"slow-{n}", slow) for n in (1, 2)]
        began = time.monotonic()
        stopped = self.processes.stop_all(10)
        self.assertLess(time.monotonic() - began, 3.5)
        self.assertEqual([p.name for p in stopped], ["slow-2", "slow-1"])  # the last started first
        self.assertEqual([p.popen.returncode for p in started], [0, 0])

    def test_wait_for_names_what_it_waited_for(self) -> None:
        error = self.assertRaises(TimeoutError, wait_for, lambda: None, 0.1, "the moon")
        self.assertIn("waiting for the moon (last: None)", str(error))

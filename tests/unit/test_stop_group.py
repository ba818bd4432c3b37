"""``stop_group``: SIGTERM to the pid, deadlines, SIGKILL to the process group, and the report.

Real (tiny) ``sh`` processes, each in a session of its own as the benchmark and the
integration tests start theirs; every one is killed by its process group afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from bazar.launch import group_alive, kill_group, poll, process_group, stop_group


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

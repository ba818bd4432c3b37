"""Tests for ``bazar.health`` and for how the front end uses it, alone and in the in-memory cluster.

* ``Health``: up/down, lagging, and the order in which lagging reports count.
* ``HealthProbe``: over a fake client and a ``task.Clock``.
* The whole cluster in memory (``memcluster``): reads skip replicas that are down or lag,
  a write succeeds with a follower unreachable and the follower comes back, a follower's
  ``ready`` flag, and ``/internal/invalidate``'s validation.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from bazar.client import ReplicaResponse
from bazar.config import Replica, parse
from bazar.errors import NotSent, Unavailable
from bazar.follower_link import REPLICATION_TIMEOUT
from bazar.frontend.app import FrontendApp
from bazar.health import CATCHING_UP, Health, HealthProbe
from bazar.leases import LEASE_TERM
from bazar.protocol import REPLICATE_PATH, SECRET_HEADER, STATUS_PATH
from tests.unit.memcluster import MAX_FLUSHES, MemCluster

PROBE_INTERVAL = parse({"cluster": {"secret": "s"}}).probe_interval  # the default


def replica(name: str) -> Replica:
    return Replica(name=name, role=name.split("-")[0], listen="tcp:0", url=f"http://{name}.invalid")


CATALOGS = [replica(f"catalog-{n}") for n in (1, 2, 3)]
C1, C2, C3 = CATALOGS


class HealthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.health = Health(CATALOGS)

    def test_everyone_starts_up_and_readable(self) -> None:
        """Known or not, a replica counts as up and readable until shown otherwise."""
        for r in (*CATALOGS, replica("order-9")):
            self.assertTrue(self.health.is_up(r))
            self.assertTrue(self.health.readable(r))
            self.assertFalse(self.health.is_lagging(r.name))

    def test_mark_down_and_up(self) -> None:
        self.health.mark(C2, False, "unreachable")
        self.assertEqual((self.health.is_up(C2), self.health.readable(C2)), (False, False))
        self.assertTrue(self.health.is_up(C3))
        self.health.mark(C2, True)
        self.assertEqual((self.health.is_up(C2), self.health.readable(C2)), (True, True))

    def test_the_log_says_not_up_yet_until_a_replica_was_seen_up(self) -> None:
        """At start-up a follower the sequencer has not reached yet is "not up yet", not "down";
        once it was up, losing it is "down"."""
        with capturedLogs() as events:
            self.health.mark(C2, False, CATCHING_UP, "status 200, ready False, epoch 1")
            self.health.mark(C2, True)
            self.health.mark(C2, False, "unreachable")
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                f"catalog-2 is not up yet: {CATCHING_UP} (status 200, ready False, epoch 1)",
                "catalog-2 is up",
                "catalog-2 is down: unreachable",
            ],
        )

    def test_why_unreadable_says_what_keeps_reads_away(self) -> None:
        """None while readable; then the plain reason it was marked down with (without one:
        not up yet, or down), or lagging (at which write), as ``/bazar/cluster`` shows it; never
        the detail, which is for the log."""
        self.assertIsNone(self.health.why_unreadable(C2))
        self.health.mark(C2, False, CATCHING_UP, "status 200, ready False, epoch 1")
        self.assertEqual(self.health.why_unreadable(C2), CATCHING_UP)
        self.health.mark(C2, True)
        self.health.mark(C2, False)
        self.assertEqual(self.health.why_unreadable(C2), "down")
        self.health.mark(C2, True)
        self.health.report_lagging("catalog-2", True, 7, pushed=True)
        self.assertEqual(
            self.health.why_unreadable(C2), "lagging: its sequencer reported it behind at write 7"
        )
        self.health.report_lagging("catalog-2", False, 8, pushed=True)
        self.assertIsNone(self.health.why_unreadable(C2))

    def test_readable_is_up_and_not_lagging(self) -> None:
        """A lagging replica is still up (it may take writes, which it forwards) but not readable."""
        self.health.report_lagging("catalog-2", True, 1, pushed=True)
        self.assertEqual((self.health.is_up(C2), self.health.readable(C2)), (True, False))
        self.health.mark(C2, False)
        self.health.report_lagging("catalog-2", False, 2, pushed=True)
        self.assertEqual((self.health.is_up(C2), self.health.readable(C2)), (False, False))
        self.health.mark(C2, True)
        self.assertTrue(self.health.readable(C2))

    def test_a_new_epoch_forgets_what_the_old_sequencer_said_of_its_followers(self) -> None:
        """catalog-1, cut off, reported catalog-2 and -3 lagging as of its write 40, which no
        majority had. catalog-2 takes over at 39: its followers' state is its word now, not
        the old 40 (which would keep both unread until epoch 2 wrote past it). Until it has
        spoken, no replica of the role is read: one may have voted for it while behind."""
        order = replica("order-1")
        health = Health([*CATALOGS, order])
        health.current_epoch("catalog", 1)
        for name in ("catalog-2", "catalog-3"):
            health.report_lagging(name, True, 40, pushed=False)
        health.report_lagging("order-1", True, 7, pushed=True)
        health.current_epoch("catalog", 2)
        self.assertEqual([health.readable(r) for r in (*CATALOGS, order)], [False, False, False, False])
        self.assertIn("not known to have every write", health.why_unreadable(C3) or "")
        health.report_lagging("catalog-2", False, 39, pushed=True)  # the new sequencer, on itself
        health.report_lagging("catalog-3", True, 39, pushed=False)  # ... and on a follower behind
        health.report_lagging("catalog-1", False, 39, pushed=False, confirmed=39)
        self.assertEqual([health.readable(r) for r in (*CATALOGS, order)], [True, True, False, False])
        health.report_lagging("catalog-3", False, 41, pushed=True)  # caught up
        self.assertTrue(health.readable(C3))

    def test_newer_seq_wins(self) -> None:
        """Whatever its source, a report about a newer sequence number replaces an older one."""
        self.health.report_lagging("catalog-2", True, 4, pushed=True)
        self.health.report_lagging("catalog-2", False, 5, pushed=False)
        self.assertFalse(self.health.is_lagging("catalog-2"))
        self.health.report_lagging("catalog-2", True, 6, pushed=False)
        self.assertTrue(self.health.is_lagging("catalog-2"))
        self.health.report_lagging("catalog-2", False, 7, pushed=True)
        self.assertFalse(self.health.is_lagging("catalog-2"))

    def test_older_seq_is_ignored(self) -> None:
        """A report about an older sequence number (a probe answer or a push still on its way)
        changes nothing."""
        self.health.report_lagging("catalog-2", True, 5, pushed=True)
        self.health.report_lagging("catalog-2", False, 4, pushed=False)
        self.health.report_lagging("catalog-2", False, 4, pushed=True)
        self.assertTrue(self.health.is_lagging("catalog-2"))
        self.health.report_lagging("catalog-3", False, 9, pushed=True)
        self.health.report_lagging("catalog-3", True, 8, pushed=True)
        self.assertFalse(self.health.is_lagging("catalog-3"))

    def test_push_wins_over_a_probe_of_the_same_seq(self) -> None:
        """A probe said in sync at 5; the sequencer then pushes that write 5 was not confirmed."""
        self.health.report_lagging("catalog-2", False, 5, pushed=False)
        self.health.report_lagging("catalog-2", True, 5, pushed=True)
        self.assertTrue(self.health.is_lagging("catalog-2"))

    def test_probe_does_not_override_a_push_of_the_same_seq(self) -> None:
        """The probe's answer may have been computed before the push: it does not undo it."""
        self.health.report_lagging("catalog-2", True, 5, pushed=True)
        self.health.report_lagging("catalog-2", False, 5, pushed=False)
        self.assertTrue(self.health.is_lagging("catalog-2"))
        self.health.report_lagging("catalog-3", False, 5, pushed=True)
        self.health.report_lagging("catalog-3", True, 5, pushed=False)
        self.assertFalse(self.health.is_lagging("catalog-3"))

    def test_a_probe_showing_the_follower_has_the_seq_overrides_a_push_of_it(self) -> None:
        """However old, a probe answer in which the follower confirmed 5 shows it has every
        write up to 5: that beats a lagging push of 5 (else, with no later write, it would stay
        unread), and a lagging push of 5 arriving later does not undo it. Confirmed 4 does not."""
        self.health.report_lagging("catalog-2", True, 5, pushed=True)
        self.health.report_lagging("catalog-2", False, 5, pushed=False, confirmed=4)
        self.assertTrue(self.health.is_lagging("catalog-2"))
        self.health.report_lagging("catalog-2", False, 5, pushed=False, confirmed=5)
        self.assertFalse(self.health.is_lagging("catalog-2"))
        self.health.report_lagging("catalog-2", True, 5, pushed=True)
        self.assertFalse(self.health.is_lagging("catalog-2"))

    def test_first_probe_counts(self) -> None:
        """Before any report, a probe at seq 0 (an empty log) is taken."""
        self.health.report_lagging("catalog-2", True, 0, pushed=False)
        self.assertTrue(self.health.is_lagging("catalog-2"))

    def test_caught_up_push_is_not_undone_by_a_lagging_push_of_the_same_seq(self) -> None:
        """The two pushes race: write 5 was not confirmed by catalog-2 in time (lagging at 5),
        but a heartbeat brought it up to 5 (caught up at 5) before the slower follower let the
        write's push go. Catching up to 5 proves it has write 5, in either order of arrival;
        otherwise it would stay unread until the next write."""
        self.health.report_lagging("catalog-2", False, 5, pushed=True)
        self.health.report_lagging("catalog-2", True, 5, pushed=True)
        self.assertFalse(self.health.is_lagging("catalog-2"))
        self.health.report_lagging("catalog-3", True, 5, pushed=True)
        self.health.report_lagging("catalog-3", False, 5, pushed=True)
        self.assertFalse(self.health.is_lagging("catalog-3"))
        self.health.report_lagging("catalog-3", True, 6, pushed=True)
        self.assertTrue(self.health.is_lagging("catalog-3"))


def status(name: str, ready: bool = True, last_seq: int = 0, **extra: Any) -> dict[str, Any]:
    return {"name": name, "ready": ready, "last_seq": last_seq, "digest": "0" * 64, **extra}


class FakeClient:
    """Answers each replica's status from ``answers``: a dict (200 JSON), a ReplicaResponse, an
    exception (the request fails with it) or a Deferred; the default is a ready replica."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.calls: list[tuple[str, str, str, float | None]] = []
        self.clock = Clock()  # the probe's and the front end's (its lookups run on it)
        self.sent: dict[str, list[float]] = {}  # replica -> when each request to it was sent

    def request(
        self, method: str, replica: Replica, path: str, body: Any = None, timeout: float | None = None
    ) -> Deferred[ReplicaResponse]:
        self.calls.append((method, replica.name, path, timeout))
        self.sent.setdefault(replica.name, []).append(round(self.clock.seconds(), 6))
        answer = self.answers.get(replica.name, status(replica.name))
        if isinstance(answer, Deferred):
            return answer
        if isinstance(answer, Exception):
            return fail(answer)
        if isinstance(answer, ReplicaResponse):
            return succeed(answer)
        return succeed(ReplicaResponse(200, json.dumps(answer).encode(), replica.name))


class HealthProbeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.health = Health(CATALOGS)
        self.client = FakeClient()
        self.clock = self.client.clock
        self.probe = HealthProbe(self.health, CATALOGS, self.client, self.clock, PROBE_INTERVAL)  # type: ignore[arg-type]
        self.addCleanup(self.stop)

    def stop(self) -> None:
        if self.probe.running:
            self.probe.stopService()

    def probe_all(self) -> None:
        self.successResultOf(self.probe.probe_all())

    def run_until(self, end: float) -> None:
        """Advance the clock from one due call to the next (exactly, unlike fixed steps) until ``end``."""
        end += 1e-9  # a sum of waits (0.1 + 0.2) may pass a round ``end`` by a hair
        while True:
            due = [c.getTime() for c in self.clock.getDelayedCalls() if c.getTime() <= end]
            if not due:
                break
            self.clock.advance(max(min(due) - self.clock.seconds(), 0))
        self.clock.advance(end - self.clock.seconds())

    def test_asks_every_replica_for_its_status(self) -> None:
        self.probe_all()
        self.assertEqual(self.client.calls, [("GET", r.name, STATUS_PATH, PROBE_INTERVAL) for r in CATALOGS])

    def test_ready_marks_up(self) -> None:
        self.health.mark(C2, False)
        self.probe_all()
        self.assertTrue(self.health.is_up(C2))

    def test_not_ready_marks_down(self) -> None:
        self.client.answers["catalog-2"] = status("catalog-2", ready=False)
        self.probe_all()
        self.assertEqual([self.health.is_up(r) for r in CATALOGS], [True, False, True])

    def test_no_ready_field_or_an_error_status_marks_down(self) -> None:
        self.client.answers["catalog-1"] = {"name": "catalog-1"}
        self.client.answers["catalog-2"] = ReplicaResponse(
            500, json.dumps({"ready": True}).encode(), "catalog-2"
        )
        self.client.answers["catalog-3"] = ReplicaResponse(200, b"<html>not json</html>", "catalog-3")
        self.probe_all()
        self.assertEqual([self.health.is_up(r) for r in CATALOGS], [False, False, False])

    def test_unreachable_marks_down(self) -> None:
        self.client.answers["catalog-2"] = Unavailable("catalog-2 is unreachable: ConnectionRefusedError")
        self.client.answers["catalog-3"] = RuntimeError("anything else")
        self.probe_all()
        self.assertEqual([self.health.is_up(r) for r in CATALOGS], [True, False, False])

    def test_down_then_up_again(self) -> None:
        self.client.answers["catalog-2"] = Unavailable("catalog-2 is unreachable")
        self.probe_all()
        self.assertFalse(self.health.is_up(C2))
        self.client.answers["catalog-2"] = status("catalog-2", ready=False)  # restarted, not caught up
        self.probe_all()
        self.assertFalse(self.health.is_up(C2))
        del self.client.answers["catalog-2"]
        self.probe_all()
        self.assertTrue(self.health.is_up(C2))

    def test_sequencer_followers_set_lagging(self) -> None:
        """The sequencer's ``followers`` map says who lags, as of its last_seq."""
        followers = {
            "catalog-2": {"confirmed": 7, "in_sync": True, "readable": True},
            "catalog-3": {"confirmed": 5, "in_sync": False, "readable": False},
        }
        self.client.answers["catalog-1"] = status("catalog-1", last_seq=7, followers=followers)
        self.probe_all()
        self.assertEqual([self.health.readable(r) for r in CATALOGS], [True, True, False])
        self.assertTrue(self.health.is_up(C3))  # it answers its own probe: up, but not read from

        # A push about an older write does not undo what the probe saw ...
        self.health.report_lagging("catalog-3", False, 6, pushed=True)
        self.assertTrue(self.health.is_lagging("catalog-3"))
        # ... and a later probe that finds it in sync again does.
        followers["catalog-3"] = {"confirmed": 8, "in_sync": True, "readable": True}
        self.client.answers["catalog-1"] = status("catalog-1", last_seq=8, followers=followers)
        self.probe_all()
        self.assertEqual([self.health.readable(r) for r in CATALOGS], [True, True, True])

    def test_probe_does_not_undo_a_newer_push(self) -> None:
        """A push that a follower lags at 8 outlives a probe answer (computed earlier) at 7 or 8."""
        self.health.report_lagging("catalog-2", True, 8, pushed=True)
        for last_seq in (7, 8):
            followers = {"catalog-2": {"confirmed": last_seq - 1, "in_sync": True, "readable": True}}
            self.client.answers["catalog-1"] = status("catalog-1", last_seq=last_seq, followers=followers)
            self.probe_all()
            self.assertTrue(self.health.is_lagging("catalog-2"))

    def test_probe_showing_the_follower_confirmed_the_pushed_seq_ends_its_lagging(self) -> None:
        """Lagging at 8, pushed; the sequencer's status then shows catalog-2 confirmed 8 (with
        no write since, nothing else would ever say it is back)."""
        self.health.report_lagging("catalog-2", True, 8, pushed=True)
        followers = {"catalog-2": {"confirmed": 8, "in_sync": True, "readable": True}}
        self.client.answers["catalog-1"] = status("catalog-1", last_seq=8, followers=followers)
        self.probe_all()
        self.assertFalse(self.health.is_lagging("catalog-2"))

    def test_probes_at_start_then_every_interval_until_stopped(self) -> None:
        self.probe.startService()
        self.assertEqual(len(self.client.calls), 3)  # at once
        self.clock.advance(PROBE_INTERVAL - 0.01)
        self.assertEqual(len(self.client.calls), 3)
        self.clock.advance(0.01)
        self.assertEqual(len(self.client.calls), 6)
        self.client.answers["catalog-2"] = Unavailable("catalog-2 is unreachable")
        self.clock.advance(PROBE_INTERVAL)  # a failed probe does not stop the loop
        self.assertFalse(self.health.is_up(C2))
        self.run_until(3 * PROBE_INTERVAL)
        self.assertEqual(len(self.client.calls), 12 + 3)  # + catalog-2 probed again sooner, 3 times
        self.probe.stopService()  # its 4th quick re-probe (due at 3.5 s) is cancelled
        self.assertFalse(self.probe.running)
        self.clock.advance(10 * PROBE_INTERVAL)
        self.assertEqual(len(self.client.calls), 15)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.probe.stopService()  # stopping twice is harmless

    def test_a_replica_refused_at_start_up_is_up_within_a_tenth_of_a_second_of_listening(self) -> None:
        """A fresh cluster starts its front end and its replicas together: the front end's first
        probe may come before catalog-2 listens. Once it listens, the front end uses it again
        within 0.1 s, not a whole probe_interval later (till then, with the sequencer also
        refused, every write was a 503)."""
        self.client.answers["catalog-2"] = NotSent("catalog-2 is unreachable: ConnectionRefusedError")
        self.probe.startService()
        self.assertFalse(self.health.is_up(C2))
        del self.client.answers["catalog-2"]  # it listens now, and is ready
        self.clock.advance(0.1)
        self.assertTrue(self.health.is_up(C2))

    def test_a_replica_that_stays_down_is_probed_again_less_and_less_often(self) -> None:
        """Found down, it is probed again after 0.1 s, then after twice as long each time,
        while that is sooner than the next round; then only the rounds probe it."""
        self.client.answers["catalog-2"] = NotSent("catalog-2 is unreachable: ConnectionRefusedError")
        self.probe.startService()
        self.run_until(4.0)
        self.assertEqual(self.client.sent["catalog-2"], [0.0, 0.1, 0.3, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0])
        self.assertEqual(self.client.sent["catalog-1"], [0.0, 1.0, 2.0, 3.0, 4.0])

    def test_not_ready_is_probed_again_sooner_too(self) -> None:
        """A follower that listens but has not caught up yet (at start-up, until its sequencer
        has reached it) is used as soon as it is ready, not a round later; found up, its waits
        start over: found down again, it is probed again 0.1 s later."""
        self.client.answers["catalog-3"] = status("catalog-3", ready=False)
        self.probe.startService()
        self.run_until(0.1)
        self.assertFalse(self.health.is_up(C3))
        del self.client.answers["catalog-3"]
        self.run_until(0.3)
        self.assertTrue(self.health.is_up(C3))
        self.assertEqual(self.client.sent["catalog-3"], [0.0, 0.1, 0.3])
        self.client.answers["catalog-3"] = status("catalog-3", ready=False)
        self.run_until(1.1)  # the round at 1.0 s finds it down
        self.assertEqual(self.client.sent["catalog-3"], [0.0, 0.1, 0.3, 1.0, 1.1])

    def test_one_quick_probe_at_a_time(self) -> None:
        """A quick re-probe that hangs (up to the interval, in production) is awaited before the
        next one is scheduled: a round that meanwhile finds the replica down starts no second
        line of quick re-probes beside it."""
        refused = NotSent("catalog-2 is unreachable: ConnectionRefusedError")
        self.client.answers["catalog-2"] = refused
        self.probe.startService()
        hung: Deferred[ReplicaResponse] = Deferred()
        self.client.answers["catalog-2"] = hung
        self.run_until(0.5)  # its quick re-probe at 0.1 s hangs
        self.client.answers["catalog-2"] = refused
        self.run_until(2.5)  # the rounds at 1.0 and 2.0 find it down
        self.assertEqual(self.client.sent["catalog-2"], [0.0, 0.1, 1.0, 2.0])
        hung.errback(Unavailable("catalog-2 is unreachable: ResponseNeverReceived"))
        self.run_until(2.9)  # the next wait (0.2 s) from its answer
        self.assertEqual(self.client.sent["catalog-2"], [0.0, 0.1, 1.0, 2.0, 2.7])

    def test_the_log_says_when_every_replica_was_first_up(self) -> None:
        """The line to wait for after starting a cluster by hand: once, the first time every
        replica is up at once (not when one comes back later)."""
        line = "every replica is up: this front end is ready"
        self.client.answers["catalog-2"] = NotSent("catalog-2 is unreachable: ConnectionRefusedError")
        with capturedLogs() as events:

            def said() -> list[str]:
                return [formatEvent(e) for e in events if formatEvent(e) == line]

            self.probe.startService()
            self.health.mark(C1, False, "unreachable: it stopped answering")  # a call failed
            del self.client.answers["catalog-2"]
            self.run_until(0.1)
            self.assertEqual((self.health.is_up(C2), said()), (True, []))  # catalog-1 is down
            self.run_until(PROBE_INTERVAL)  # the round finds catalog-1 up again
            self.assertEqual(said(), [line])
            self.health.mark(C1, False, "unreachable: it stopped answering")
            self.run_until(2 * PROBE_INTERVAL)
            self.assertEqual((self.health.is_up(C1), said()), (True, [line]))


class ClusterViewTests(SynchronousTestCase):
    """``/bazar/cluster`` shows every replica with the same fields, whatever its state, and says
    why one is not read from in plain words (the technical detail goes to the log, and for one
    that could not be asked, to ``error``)."""

    FIELDS = ("name", "role", "url", "healthy", "why_unhealthy", "error", "last_seq", "digest")
    FIELDS += ("sequencer", "epoch")

    def view(self, answers: dict[str, Any], probe: bool = True) -> dict[str, dict[str, Any]]:
        client = FakeClient()
        for name in ("catalog-1", "catalog-2", "catalog-3", "order-1", "order-2", "order-3"):
            client.answers[name] = status(name, sequencer=f"{name.split('-')[0]}-1", epoch=1)
        client.answers.update(answers)
        app = FrontendApp(parse({"cluster": {"secret": "s"}}), client)  # type: ignore[arg-type]
        replicas = [*app.config.catalog, *app.config.order]
        if probe:
            self.successResultOf(HealthProbe(app.health, replicas, client, Clock(), 1.0).probe_all())  # type: ignore[arg-type]
        http = StubTreq(app.app.resource())
        response = self.successResultOf(http.get("http://127.0.0.1/bazar/cluster"))
        self.assertEqual(response.code, 200)
        body = json.loads(self.successResultOf(http.content(response)))
        return {r["name"]: r for r in body["replicas"]}

    def test_a_replica_no_probe_has_found_ready_is_not_healthy_yet(self) -> None:
        """Before a front end's first probes have answered it sends calls to every replica
        (unknown counts as up), but its ``/bazar/cluster`` calls none healthy: a probe may yet
        find it refusing or not ready. This page is what ``bazar.launch`` waits on."""
        view = self.view({}, probe=False)
        self.assertEqual(
            {name: (entry["healthy"], entry["why_unhealthy"]) for name, entry in view.items()},
            {name: (False, "not up yet: no probe has found it ready yet") for name in view},
        )

    def test_every_entry_has_the_same_fields(self) -> None:
        """Healthy, unreachable, restarting: one shape, null where a value is not known."""
        view = self.view(
            {
                "catalog-2": NotSent("catalog-2 is unreachable: ConnectionRefusedError"),
                "catalog-3": status("catalog-3", ready=False, sequencer="catalog-1", epoch=1),
                "order-2": Unavailable("order-2 is unreachable: ResponseNeverReceived"),
            }
        )
        for name, entry in view.items():
            with self.subTest(replica=name):
                self.assertEqual(sorted(entry), sorted(self.FIELDS))
        healthy = view["catalog-1"]
        self.assertEqual((healthy["healthy"], healthy["why_unhealthy"], healthy["error"]), (True, None, None))
        self.assertEqual((healthy["last_seq"], healthy["sequencer"], healthy["epoch"]), (0, "catalog-1", 1))
        down = view["catalog-2"]
        self.assertEqual(
            [down[k] for k in ("healthy", "last_seq", "digest", "sequencer", "epoch")],
            [False, None, None, None, None],
        )
        self.assertEqual(down["error"], "catalog-2 is unreachable: ConnectionRefusedError")

    def test_plain_reasons(self) -> None:
        """Why each is not read from, without exception names or HTTP statuses."""
        followers = {"catalog-3": {"confirmed": 4, "in_sync": False, "readable": False}}
        view = self.view(
            {
                "catalog-1": status(
                    "catalog-1", last_seq=5, sequencer="catalog-1", epoch=1, followers=followers
                ),
                "catalog-2": NotSent("catalog-2 is unreachable: ConnectionRefusedError"),
                "order-1": status("order-1", ready=False, sequencer="order-1", epoch=1),
                "order-2": Unavailable("order-2 is unreachable: ResponseNeverReceived"),
                "order-3": status("order-3", ready=False, sequencer="order-1", epoch=1),
            }
        )
        self.assertEqual(
            {name: entry["why_unhealthy"] for name, entry in view.items()},
            {
                "catalog-1": None,
                "catalog-2": "unreachable: no connection could be made",
                "catalog-3": "lagging: its sequencer reported it behind at write 5",
                "order-1": "not ready: its latest writes are not yet on a majority of its role",
                "order-2": "unreachable: it stopped answering",
                "order-3": "not ready: catching up with its sequencer",
            },
        )

    def test_an_old_epoch_and_a_failed_status_check(self) -> None:
        view = self.view(
            {
                "catalog-1": status("catalog-1", sequencer="catalog-2", epoch=2),
                "catalog-2": status("catalog-2", sequencer="catalog-2", epoch=2),
                "catalog-3": status("catalog-3", sequencer="catalog-1", epoch=1),
                "order-2": ReplicaResponse(500, b"{}", "order-2"),
            }
        )
        self.assertEqual(
            view["catalog-3"]["why_unhealthy"],
            "in an old epoch: another replica has taken over its role's writes",
        )
        self.assertEqual(view["order-2"]["why_unhealthy"], "not ready: its status check failed")


# -- the front end and the replicas, in memory ---------------------------------------------


class ClusterHealthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)
        self.health = self.cluster.frontend.health
        self.replicas = {r.name: r for r in (*self.cluster.config.catalog, *self.cluster.config.order)}

    def settle(self) -> None:
        """Flush until every in-memory request in flight has been answered."""
        for _ in range(MAX_FLUSHES):
            self.cluster.flush()

    def heartbeat(self, role: str = "catalog") -> Any:
        d = self.cluster.sequencers[role].heartbeat()
        self.settle()
        return self.successResultOf(d)

    def probe(self) -> None:
        """One round of the front end's probe (production runs it every probe_interval)."""
        probe = HealthProbe(
            self.health, self.replicas.values(), self.cluster.client(), self.cluster.clock, PROBE_INTERVAL
        )
        d = probe.probe_all()
        self.settle()
        self.successResultOf(d)

    def fall_behind(self, *names: str) -> None:
        """As a follower that missed writes (or was restarted): a replicate call shows it a gap,
        so it is not ready until the sequencer has sent it everything again."""
        for name in names:
            gap = {"entries": [[10**6, {}]], "last_seq": 10**6}
            self.assertEqual(self.cluster.internal("POST", name, REPLICATE_PATH, gap).code, 409)

    def ready(self, name: str) -> bool:
        code, _, body = self.cluster.internal("GET", name, "/internal/status")
        self.assertEqual(code, 200)
        return body["ready"]

    def read_books(self, count: int = 7) -> list[str]:
        """Read ``count`` distinct books through the front end (misses, with a cold cache); the
        replicas that answered. Every read must succeed."""
        served = []
        for book in range(count):
            self.cluster.frontend.cache.invalidate(f"info/{book}")
            code, headers, body = self.cluster.get(f"/bazar/info/{book}")
            self.assertEqual((code, body["id"]), (200, book))
            served.append(headers["x-bazar-replica"])
        return served

    def cluster_view(self) -> dict[str, dict[str, Any]]:
        code, _, view = self.cluster.get("/bazar/cluster")
        self.assertEqual(code, 200)
        return {r["name"]: r for r in view["replicas"]}

    def digest(self, name: str) -> str:
        return self.successResultOf(self.cluster.stores[name].status())["digest"]

    def test_reads_skip_a_down_replica_and_retry_on_the_next(self) -> None:
        """A read that finds catalog-2 unreachable is answered by the next replica (no failed
        read); catalog-2 is then down and no read goes to it until a probe finds it ready."""
        self.cluster.unreachable("catalog-2")
        served = self.read_books()
        self.assertEqual(
            [(s.name, s.path, s.query) for s in self.cluster.dispatch.refused],
            [("catalog-2", "/catalog/lookup", "ids=1")],
        )
        self.assertEqual(served[:2], ["catalog-1", "catalog-3"])  # book 1: retried on catalog-3
        self.assertNotIn("catalog-2", served)
        self.assertFalse(self.health.is_up(self.replicas["catalog-2"]))

        self.cluster.unreachable("catalog-2", down=False)
        self.assertNotIn("catalog-2", self.read_books())  # only a probe brings it back
        self.fall_behind("catalog-2")
        self.probe()
        self.assertFalse(self.health.is_up(self.replicas["catalog-2"]))  # not ready: behind
        self.heartbeat()
        self.probe()
        self.assertTrue(self.health.is_up(self.replicas["catalog-2"]))
        self.assertIn("catalog-2", self.read_books())
        self.assertEqual(len(self.cluster.dispatch.refused), 1)

    def test_order_reads_skip_a_down_replica(self) -> None:
        code, _, order = self.cluster.post("/bazar/purchase/1")
        self.assertEqual(code, 200)
        self.cluster.unreachable("order-2")
        recorded = {k: v for k, v in order.items() if k not in ("message", "idempotency_key")}
        for _ in range(6):
            code, _, got = self.cluster.get(f"/bazar/orders/{order['order_id']}")
            self.assertEqual((code, got), (200, recorded))
        self.assertEqual(len(self.cluster.dispatch.refused), 1)

    def test_no_readable_replica_is_503(self) -> None:
        for name in self.cluster.catalog_names:
            self.cluster.unreachable(name)
        code, _, body = self.cluster.get("/bazar/info/1")
        self.assertEqual((code, body["error"]["code"]), (503, 503))
        self.assertEqual(len(self.cluster.dispatch.refused), 3)  # each tried once
        code, _, body = self.cluster.get("/bazar/info/2")
        self.assertEqual(code, 503)
        self.assertIn("try again", body["error"]["message"])
        self.assertEqual(len(self.cluster.dispatch.refused), 3)  # all down: none tried
        code, _, body = self.cluster.put("/bazar/update_price/1", {"price": 1.0})
        self.assertEqual(code, 503)

    def test_write_with_a_follower_unreachable(self) -> None:
        """The write succeeds; before its ack the front end drops its cached copy and stops
        reading from the follower; a heartbeat later brings it back in sync, and reads return."""
        self.heartbeat()
        for replica in self.replicas.values():  # seen up, as by a first probe (which would
            self.health.mark(replica, True)  # also name the sequencer: writes go round here)
        self.assertEqual(self.cluster.get("/bazar/info/1").headers["x-bazar-replica"], "catalog-1")
        self.assertIn("info/1", self.cluster.cached_keys())
        self.cluster.unreachable("catalog-3")

        code, headers, book = self.cluster.put("/bazar/update_price/1", {"price": 9.5})
        self.assertEqual((code, book["price"]), (200, 9.5))
        self.assertEqual(headers["x-bazar-replica"], "catalog-2")  # which forwarded it to catalog-1
        # Tried again with each heartbeat while the write waited out catalog-3's read lease.
        self.assertEqual(
            {(s.name, s.path) for s in self.cluster.dispatch.refused}, {("catalog-3", "/internal/replicate")}
        )
        self.assertNotIn("info/1", self.cluster.cached_keys())
        self.assertTrue(self.health.is_lagging("catalog-3"))
        self.assertTrue(self.health.is_up(self.replicas["catalog-3"]))  # no call of the front end failed
        self.assertEqual(
            self.cluster.sequencers["catalog"].followers(),
            {
                "catalog-2": {"confirmed": 1, "in_sync": True, "readable": True},
                "catalog-3": {"confirmed": 0, "in_sync": False, "readable": False},
            },
        )

        # No read goes to it, and the front end reads the new price.
        self.assertNotIn("catalog-3", self.read_books() + self.read_books())
        self.assertEqual(self.cluster.get("/bazar/info/1").json["price"], 9.5)
        # A write while it is out of sync does not even try it. (Sent to the sequencer itself:
        # through the front end it could be routed to catalog-3, which is up as far as the
        # front end knows, and fail there with 503: writes are never retried elsewhere.)
        refused = len(self.cluster.dispatch.refused)
        self.assertEqual(
            self.cluster.internal("PUT", "catalog-1", "/catalog/books/2/price", {"price": 3.0}).code, 200
        )
        self.assertTrue(self.health.is_lagging("catalog-3"))
        self.assertEqual(len(self.cluster.dispatch.refused), refused)

        # Reachable again, but not read from, and shown unhealthy with its old data, until it
        # has caught up.
        self.cluster.unreachable("catalog-3", down=False)
        self.assertNotIn("catalog-3", self.read_books())
        view = self.cluster_view()
        self.assertEqual(
            [view[n]["healthy"] for n in ("catalog-1", "catalog-2", "catalog-3")], [True, True, False]
        )
        self.assertEqual(
            view["catalog-3"]["why_unhealthy"], "lagging: its sequencer reported it behind at write 2"
        )
        self.assertIsNone(view["catalog-1"]["why_unhealthy"])
        self.assertEqual((view["catalog-3"]["last_seq"], view["catalog-1"]["last_seq"]), (0, 2))
        self.assertNotEqual(view["catalog-3"]["digest"], view["catalog-1"]["digest"])

        pushes_before = len([s for s in self.cluster.served("frontend") if s.path == "/internal/invalidate"])
        self.assertEqual(self.heartbeat(), [True, True])
        pushes = [s for s in self.cluster.served("frontend") if s.path == "/internal/invalidate"]
        self.assertEqual(len(pushes), pushes_before + 1)  # caught_up
        self.assertFalse(self.health.is_lagging("catalog-3"))
        self.assertEqual(self.digest("catalog-3"), self.digest("catalog-1"))
        self.assertEqual(self.cluster.book("catalog-3", 1)["price"], 9.5)
        view = self.cluster_view()
        self.assertTrue(all(r["healthy"] and r["why_unhealthy"] is None for r in view.values()))
        self.assertEqual({view[n]["digest"] for n in self.cluster.catalog_names}, {self.digest("catalog-1")})
        self.assertEqual({view[n]["last_seq"] for n in self.cluster.catalog_names}, {2})

        self.assertIn("catalog-3", self.read_books())
        self.assertTrue(self.cluster.sequencers["catalog"].followers()["catalog-3"]["in_sync"])

    def test_purchase_with_an_order_follower_unreachable(self) -> None:
        """The same for orders: the purchase succeeds, order-3 lags and is not read, then comes back."""
        self.cluster.unreachable("order-3")
        code, _, order = self.cluster.post("/bazar/purchase/2")
        self.assertEqual(code, 200)
        self.assertTrue(self.health.is_lagging("order-3"))
        for _ in range(6):
            self.assertEqual(self.cluster.get(f"/bazar/orders/{order['order_id']}").code, 200)
        self.assertEqual({s.path for s in self.cluster.dispatch.refused}, {"/internal/replicate"})
        self.cluster.unreachable("order-3", down=False)
        self.heartbeat("order")
        self.assertFalse(self.health.is_lagging("order-3"))
        self.assertEqual(self.cluster.orders("order-3"), self.cluster.orders("order-1"))
        self.assertEqual(self.digest("order-3"), self.digest("order-1"))
        self.assertEqual(self.cluster.stock_problems(), [])

    def test_follower_ready_once_caught_up(self) -> None:
        """A follower is ready once the sequencer has left it with everything, and stays so
        (even if the sequencer then dies: nothing newer can be acknowledged); the sequencer is
        always ready."""
        # At start-up, the sequencer's first heartbeat left every follower with everything.
        self.assertEqual([self.ready(n) for n in self.cluster.catalog_names], [True, True, True])
        self.fall_behind("catalog-2", "catalog-3", "order-2", "order-3")
        self.assertEqual([self.ready(n) for n in self.cluster.catalog_names], [True, False, False])
        self.assertEqual([self.ready(n) for n in self.cluster.order_names], [True, False, False])
        self.probe()
        self.assertEqual(
            [self.health.is_up(r) for r in self.replicas.values()], [True, False, False, True, False, False]
        )

        self.heartbeat()
        self.assertEqual([self.ready(n) for n in self.cluster.catalog_names], [True, True, True])
        heartbeats = self.cluster.roles["catalog-1"].heartbeats
        assert heartbeats is not None
        heartbeats.stopService()  # the sequencer may be gone
        self.cluster.clock.advance(3600)
        self.assertEqual([self.ready(n) for n in self.cluster.catalog_names], [True, True, True])
        # But no replica serves reads: the followers' read leases have run out (one cannot tell
        # a dead sequencer from one that goes on without it), and so has the sequencer's own.
        self.assertEqual(self.cluster.get("/bazar/info/1").code, 503)
        heartbeats.startService()
        self.cluster.flush()
        self.probe()
        self.assertTrue(self.health.is_up(self.replicas["catalog-2"]))
        self.assertTrue(self.health.is_up(self.replicas["order-2"]))  # the order sequencer's heartbeat
        self.assertEqual(sorted(set(self.read_books())), ["catalog-1", "catalog-2", "catalog-3"])

        # A write (a replicate call that leaves it current) keeps it ready.
        self.assertEqual(self.cluster.put("/bazar/update_price/3", {"price": 1.0}).code, 200)
        self.assertTrue(self.ready("catalog-3"))

    def test_replicate_that_leaves_a_follower_behind_clears_ready(self) -> None:
        self.heartbeat()
        self.assertTrue(self.ready("catalog-2"))
        # The sequencer says it is at 5 but sends nothing: behind, so not ready.
        code, _, body = self.cluster.internal(
            "POST", "catalog-2", "/internal/replicate", {"entries": [], "last_seq": 5}
        )
        self.assertEqual((code, body), (200, {"last_seq": 0}))
        self.assertFalse(self.ready("catalog-2"))
        self.heartbeat()
        self.assertTrue(self.ready("catalog-2"))
        # A gap: 409 with its last_seq, and not ready.
        entry = [4, {"book": self.cluster.book("catalog-2", 1)}]
        code, _, body = self.cluster.internal(
            "POST", "catalog-2", "/internal/replicate", {"entries": [entry], "last_seq": 4}
        )
        self.assertEqual((code, body["last_seq"]), (409, 0))
        self.assertFalse(self.ready("catalog-2"))

    def test_replicate_rejects_a_bad_last_seq(self) -> None:
        for last_seq in ("3", 1.5, True, None):
            code, _, body = self.cluster.internal(
                "POST", "catalog-2", "/internal/replicate", {"entries": [], "last_seq": last_seq}
            )
            self.assertEqual(code, 400, last_seq)
            self.assertIn("last_seq", body["error"]["message"])

    def test_sequencer_status_lists_its_followers(self) -> None:
        self.cluster.unreachable("catalog-2")
        self.assertEqual(self.cluster.put("/bazar/update_price/3", {"price": 1.0}).code, 200)
        self.cluster.unreachable("catalog-2", down=False)
        body = self.cluster.internal("GET", "catalog-1", "/internal/status").json
        self.assertEqual(
            body["followers"],
            {
                "catalog-2": {"confirmed": 0, "in_sync": False, "readable": False},
                "catalog-3": {"confirmed": 1, "in_sync": True, "readable": True},
            },
        )
        self.assertNotIn("followers", self.cluster.internal("GET", "catalog-2", "/internal/status").json)

    def test_probe_learns_each_roles_sequencer(self) -> None:
        """Writes go straight to the replica whose status says it sequences its role's writes."""
        self.assertIsNone(self.health.sequencer("catalog"))
        self.probe()
        self.assertEqual(
            (self.health.sequencer("catalog"), self.health.sequencer("order")), ("catalog-1", "order-1")
        )
        before = len(self.cluster.dispatch.seen)
        self.assertEqual(self.cluster.put("/bazar/update_price/1", {"price": 3.0}).code, 200)
        writes = [s.name for s in self.cluster.dispatch.seen[before:] if s.path == "/catalog/books/1/price"]
        self.assertEqual(writes, ["catalog-1"])  # no follower forwarded it
        self.health.current_epoch("catalog", 2)  # a newer epoch, whose sequencer no probe has named yet
        self.assertIsNone(self.health.sequencer("catalog"))

    def test_probe_reads_lagging_from_the_sequencer(self) -> None:
        """A write whose pushes cannot reach the front end waits until the front end's cache
        lease has surely run out (``bazar.leases``), then is acknowledged; the front end, told
        nothing, still learns from its probe of the sequencer that the follower lags."""
        self.cluster.unreachable("catalog-2")
        self.cluster.unreachable("frontend")
        secret = {SECRET_HEADER: self.cluster.config.secret}
        written = self.cluster.send(
            "PUT", "/catalog/books/3/price", {"price": 1.0}, to="catalog-1", headers=secret
        )
        self.settle()
        self.assertNoResult(written)
        # The push goes out as the write is shipped, not after.
        self.assertEqual([s.name for s in self.cluster.dispatch.refused][:2], ["frontend", "catalog-2"])
        self.cluster.clock.advance(max(LEASE_TERM, REPLICATION_TIMEOUT))
        self.assertEqual(self.cluster.wait(written).code, 200)
        self.cluster.unreachable("catalog-2", down=False)
        self.cluster.unreachable("frontend", down=False)
        self.assertFalse(self.health.is_lagging("catalog-2"))
        self.probe()
        self.assertTrue(self.health.is_lagging("catalog-2"))
        self.assertFalse(self.health.is_lagging("catalog-3"))
        self.heartbeat()
        self.assertFalse(self.health.is_lagging("catalog-2"))  # caught_up, pushed

    def test_a_write_that_missed_its_majority_is_not_read(self) -> None:
        """The catalog sequencer commits a write that no follower confirms: the write is not
        acknowledged, and no read shows it (another replica taking over would never have it)
        until a majority has it. Before the fix, catalog-1 went on serving the new price."""
        self.cluster.sequencers["catalog"].quorum = 2  # a majority of three, as in production
        self.assertEqual(self.cluster.get("/bazar/info/1").json["price"], 22.35)
        for name in ("catalog-2", "catalog-3"):
            self.cluster.unreachable(name)

        code, _, body = self.cluster.internal("PUT", "catalog-1", "/catalog/books/1/price", {"price": 99.0})
        self.assertEqual(code, 503)
        self.assertIn("not acknowledged", body["error"]["message"])
        self.assertEqual(self.cluster.book("catalog-1", 1)["price"], 99.0)  # committed here only
        self.assertFalse(self.ready("catalog-1"))

        # The front end has no replica left that may answer: 503, never the new price.
        code, _, body = self.cluster.get("/bazar/info/1")
        self.assertEqual(code, 503)
        code, _, body = self.cluster.internal("GET", "catalog-1", "/catalog/books/1")
        self.assertEqual(code, 503)
        self.assertIn("no majority", body["error"]["message"])

        # Once the followers have it (the heartbeats resend it), the write took effect.
        for name in ("catalog-2", "catalog-3"):
            self.cluster.unreachable(name, down=False)
        self.assertEqual(self.heartbeat(), [True, True])
        self.assertTrue(self.ready("catalog-1"))
        self.probe()
        self.assertEqual(self.cluster.get("/bazar/info/1").json["price"], 99.0)

    def start_a_write_its_followers_hold(self) -> tuple[Deferred[Any], list[Any]]:
        """A price update of book 1 to 99 at catalog-1, whose replicate requests both followers
        have received but not yet taken in (``Delayed``)."""
        self.cluster.sequencers["catalog"].quorum = 2  # a majority of three, as in production
        self.heartbeat()  # the followers have heard from the sequencer: ready
        self.health.current_epoch("catalog", 1)
        self.health.report_sequencer("catalog", 1, "catalog-1")  # the write goes straight there
        delayed = [self.cluster.delay_next(name) for name in ("catalog-2", "catalog-3")]
        write = self.cluster.send("PUT", "/bazar/update_price/1", {"price": 99.0})
        self.cluster.flush()
        self.assertTrue(all(d.arrived for d in delayed))
        return write, delayed

    def read_price_three_times(self) -> tuple[list[float], list[list[Any]]]:
        """Three reads of book 1, each in a turn of its own (one to each catalog replica, in
        turn): the prices answered at once, and for each read still waiting, the list its reply
        will be put in."""
        replies: list[list[Any]] = []
        for _ in range(3):
            reply: list[Any] = []
            self.cluster.send("GET", "/bazar/info/1").addBoth(reply.append)
            replies.append(reply)
            self.cluster.flush()
        return [r[0].json["price"] for r in replies if r], [r for r in replies if not r]

    def test_a_read_at_the_sequencer_waits_for_the_write_under_way(self) -> None:
        """While a write is under way, the sequencer answers a read only once the write is
        confirmed (a read index); the followers answer with what they have."""
        write, delayed = self.start_a_write_its_followers_hold()
        answered, waiting = self.read_price_three_times()
        self.assertEqual((answered, len(waiting)), ([22.35, 22.35], 1))
        waits = self.cluster.served("catalog-1")[-1]  # the one waiting
        self.assertEqual((waits.path, waits.query), ("/catalog/lookup", "ids=1"))
        for d in delayed:
            d.deliver()
        self.assertEqual(self.cluster.wait(write).code, 200)
        self.cluster.flush()
        self.assertEqual(waiting[0][0].json["price"], 99.0)

    def test_a_write_that_misses_its_majority_is_never_read(self) -> None:
        """The write misses its majority (nothing resends it: the heartbeats stopped): the read
        waiting at the sequencer is answered by another replica, and no read or cached entry
        ever shows the new price. The write waits out the followers' read leases before it
        fails, so by then they refuse reads too (503): no replica may answer, none shows 99.
        The probes find catalog-1 not ready."""
        write, delayed = self.start_a_write_its_followers_hold()
        answered, waiting = self.read_price_three_times()
        self.assertEqual((answered, len(waiting)), ([22.35, 22.35], 1))
        heartbeats = self.cluster.roles["catalog-1"].heartbeats
        assert heartbeats is not None
        heartbeats.stopService()
        for d in delayed:
            d.drop()
        code, _, body = self.cluster.wait(write)
        self.assertEqual(code, 503)
        self.assertIn("not acknowledged", body["error"]["message"])
        self.cluster.flush()
        self.assertNotEqual(self.cluster.book("catalog-1", 1)["price"], 22.35)  # committed there only
        replies = [waiting[0][0]] + [self.cluster.get("/bazar/info/1") for _ in range(4)]
        self.assertEqual([r.code for r in replies], [503] * 5)
        self.assertNotIn("99", "".join(json.dumps(r.json) for r in replies))
        self.assertEqual(self.cluster.cached_keys(), [])
        self.probe()
        self.assertFalse(self.health.is_up(self.replicas["catalog-1"]))

    def test_a_read_refused_by_the_sequencer_is_answered_by_a_follower(self) -> None:
        """A 503 from a replica that cannot serve reads now sends the read on to the next one."""
        self.cluster.sequencers["catalog"].quorum = 3  # so that one follower short is a miss
        self.cluster.unreachable("catalog-3")
        code, _, _ = self.cluster.internal("PUT", "catalog-1", "/catalog/books/1/price", {"price": 99.0})
        self.assertEqual(code, 503)
        self.cluster.frontend.health.report_lagging("catalog-3", True, 1, pushed=True)
        served = self.read_books()
        self.assertNotIn("catalog-1", served[1:])
        self.assertFalse(self.health.is_up(self.replicas["catalog-1"]))
        self.assertEqual(self.cluster.get("/bazar/info/1").json["price"], 99.0)  # catalog-2 has it


class InvalidateTests(SynchronousTestCase):
    """``/internal/invalidate``: what a sequencer pushes to the front end."""

    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)
        self.health = self.cluster.frontend.health

    def invalidate(self, body: Any) -> Any:
        return self.cluster.internal("POST", "frontend", "/internal/invalidate", body)

    def test_lagging_and_caught_up(self) -> None:
        self.assertEqual(self.invalidate({"keys": [], "lagging": ["catalog-2"], "seq": 4}).code, 200)
        self.assertTrue(self.health.is_lagging("catalog-2"))
        self.assertEqual(self.invalidate({"keys": [], "caught_up": ["catalog-2"], "seq": 3}).code, 200)
        self.assertTrue(self.health.is_lagging("catalog-2"))  # older than what it knows
        self.assertEqual(self.invalidate({"keys": [], "caught_up": ["catalog-2"], "seq": 4}).code, 200)
        self.assertFalse(self.health.is_lagging("catalog-2"))

    def test_a_new_catalog_epoch_drops_every_cached_answer(self) -> None:
        """Another catalog replica took over: what was cached may hold a write the old
        sequencer had and the new one does not, so none of it is kept. A new order epoch, or
        the same catalog epoch again, changes nothing."""
        self.assertEqual(self.invalidate({"keys": [], "epoch": 1, "role": "catalog"}).code, 200)
        for book in (1, 2):
            self.cluster.get(f"/bazar/info/{book}")
        self.assertEqual(self.invalidate({"keys": [], "epoch": 1, "role": "catalog"}).code, 200)
        self.assertEqual(self.invalidate({"keys": [], "epoch": 2, "role": "order"}).code, 200)
        self.assertEqual(sorted(self.cluster.cached_keys()), ["info/1", "info/2"])
        self.assertEqual(self.invalidate({"keys": [], "epoch": 2, "role": "catalog"}).code, 200)
        self.assertEqual(self.cluster.cached_keys(), [])
        self.assertEqual(self.cluster.get("/bazar/info/1").headers["x-bazar-cache"], "miss")

    def test_rejects_bad_values(self) -> None:
        """Each bad field is a 400 naming it, and a refused request changes nothing."""
        self.cluster.get("/bazar/info/1")
        bad = [
            ({"keys": [], "lagging": "catalog-2", "seq": 1}, "lagging"),
            ({"keys": [], "lagging": [2], "seq": 1}, "lagging"),
            ({"keys": [], "lagging": None, "seq": 1}, "lagging"),
            ({"keys": [], "caught_up": {"catalog-2": 1}, "seq": 1}, "caught_up"),
            ({"keys": [], "caught_up": [None], "seq": 1}, "caught_up"),
            ({"keys": ["info/1"], "lagging": ["catalog-2"], "seq": "1"}, "seq"),
            ({"keys": ["info/1"], "lagging": ["catalog-2"], "seq": 1.5}, "seq"),
            ({"keys": ["info/1"], "lagging": ["catalog-2"], "seq": True}, "seq"),
            ({"keys": ["info/1"], "lagging": ["catalog-2"], "caught_up": "catalog-3", "seq": 1}, "caught_up"),
            ({"keys": "info/1", "lagging": ["catalog-2"], "seq": 1}, "keys"),
        ]
        for body, field in bad:
            code, _, answer = self.invalidate(body)
            self.assertEqual((code, answer["error"]["code"]), (400, 400), body)
            self.assertIn(f"'{field}'", answer["error"]["message"], body)
            self.assertFalse(self.health.is_lagging("catalog-2"), body)
            self.assertIn("info/1", self.cluster.cached_keys(), body)


class _EpochClient:
    """Answers every GET with book 1 at the price and epoch each replica is given."""

    def __init__(self, answers: dict[str, tuple[float, int]], sequencer: str | None = None) -> None:
        self.answers = answers
        self.sequencer = sequencer  # whom every answer names as its role's sequencer
        self.clock = Clock()
        self.asked: list[str] = []

    def request(self, method: str, replica: Replica, path: str, body: Any = None, **kw: Any) -> Deferred[Any]:
        self.asked.append(replica.name)
        price, epoch = self.answers[replica.name]
        book = json.dumps({"id": 1, "price": price}).encode()
        return succeed(ReplicaResponse(200, book, replica.name, sequencer=self.sequencer, epoch=epoch))


class ReadEpochTests(SynchronousTestCase):
    """A read answered from an older epoch than the newest the front end knows is not used."""

    def app(
        self, answers: dict[str, tuple[float, int]], sequencer: str | None = None
    ) -> tuple[FrontendApp, _EpochClient]:
        client = _EpochClient(answers, sequencer)
        return FrontendApp(parse({"cluster": {"secret": "s"}}), client), client  # type: ignore[arg-type]

    def read(self, app: FrontendApp) -> tuple[ReplicaResponse, float]:
        response = self.successResultOf(app.replicas.read(app.replicas.catalogs, "/catalog/books/1"))
        return response, json.loads(response.body)["price"]

    def test_an_old_epoch_answer_goes_on_to_the_next_replica(self) -> None:
        """catalog-1 was replaced (cut off from its followers, not from the front end) and
        lacks the write catalog-2 acknowledged in epoch 2: its answer is not used, and it is
        down until a probe finds it in the newest epoch."""
        app, client = self.app({"catalog-1": (10.0, 1), "catalog-2": (20.0, 2), "catalog-3": (20.0, 2)})
        app.health.current_epoch("catalog", 2)  # pushed with epoch 2's first write
        response, price = self.read(app)
        self.assertEqual(
            (response.replica, price, client.asked), ("catalog-2", 20.0, ["catalog-1", "catalog-2"])
        )
        self.assertFalse(app.health.is_up(app.config.catalog[0]))
        self.assertEqual({self.read(app)[0].replica for _ in range(4)}, {"catalog-2", "catalog-3"})

    def test_a_newer_epoch_in_an_answer_is_learned_and_drops_the_cache(self) -> None:
        """An answer can be the first the front end hears of a new epoch: from that epoch's
        sequencer it is used, the newest epoch known becomes its, and nothing cached before
        it is kept."""
        app, client = self.app(
            {"catalog-1": (20.0, 2), "catalog-2": (10.0, 1), "catalog-3": (10.0, 1)}, sequencer="catalog-1"
        )
        app.health.current_epoch("catalog", 1)
        app.cache.lru.put("info/1", ReplicaResponse(200, b"{}", "catalog-2", epoch=1))
        response, price = self.read(app)
        self.assertEqual((response.replica, price), ("catalog-1", 20.0))
        self.assertEqual(app.cache.lru.keys(), [])
        self.assertEqual(self.read(app)[1], 20.0)  # catalog-2, in epoch 1, is passed over
        self.assertEqual(client.asked, ["catalog-1", "catalog-2", "catalog-3", "catalog-1"])
        self.assertFalse(app.health.is_up(app.config.catalog[1]))

    def test_a_follower_first_to_show_a_new_epoch_is_not_used(self) -> None:
        """catalog-1 voted catalog-2 in while it lacked a write acknowledged before (it is
        being caught up): its answer, the first the front end sees of epoch 2, is not used;
        catalog-2, the new sequencer, answers. catalog-1 is read again once catalog-2 says
        it has every write (``Health.report_lagging``)."""
        app, client = self.app(
            {"catalog-1": (10.0, 2), "catalog-2": (20.0, 2), "catalog-3": (20.0, 2)}, sequencer="catalog-2"
        )
        app.health.current_epoch("catalog", 1)
        response, price = self.read(app)
        self.assertEqual(
            (response.replica, price, client.asked), ("catalog-2", 20.0, ["catalog-1", "catalog-2"])
        )
        for _ in range(4):  # until catalog-2 reports on it, catalog-1 is asked, its answer unused
            self.assertEqual(self.read(app)[0].replica, "catalog-2")
        self.assertTrue(app.health.is_up(app.config.catalog[0]))  # not down: not known in sync
        app.health.report_lagging("catalog-1", False, 5, pushed=True)
        self.assertEqual({self.read(app)[0].replica for _ in range(4)}, {"catalog-1", "catalog-2"})

    def test_no_replica_in_the_newest_epoch(self) -> None:
        app, _ = self.app({name: (10.0, 1) for name in ("catalog-1", "catalog-2", "catalog-3")})
        app.health.current_epoch("catalog", 2)
        with capturedLogs() as events:
            read = app.replicas.read(app.replicas.catalogs, "/catalog/books/1")
            failure = self.failureResultOf(read, Unavailable)
        self.assertEqual(failure.value.message, "no catalog replica can answer right now; try again shortly")
        self.assertIn("an old one", formatEvent(events[-1]))

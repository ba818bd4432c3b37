"""Tests for the simulator's own parts (``bazar.sim``): its network, its disks, its clocks and
its checks, each shown to catch what it exists to catch."""

from __future__ import annotations

import random
import sqlite3
from typing import Any, ClassVar

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from bazar.errors import NotSent, Unavailable
from bazar.sim.checks import linearizability_problems, order_problems, price_versions
from bazar.sim.clock import SimClock
from bazar.sim.cluster import FRONTEND, SimCluster
from bazar.sim.faults import Fault, Injector, draw_schedule
from bazar.sim.network import Host, Network
from bazar.sim.processes import SimRunner
from bazar.sim.run import run_schedule, schedule_of
from bazar.sim.workload import Op


class _Endpoint:
    def flush(self) -> None:
        pass


def _network(seed: int = 1) -> tuple[SimClock, Network, Host, Host]:
    sim = SimClock()
    network = Network(sim, random.Random(seed))
    a, b = network.host("a"), network.host("b")
    for host in (a, b):
        host.start()
        host.endpoint = _Endpoint()  # type: ignore[assignment]
    return sim, network, a, b


def _outcomes(ds: list[Deferred[Any]]) -> list[Any]:
    out: list[Any] = []
    for d in ds:
        d.addBoth(lambda r: out.append(r.value if hasattr(r, "value") else r))
    return out


class NetworkTests(SynchronousTestCase):
    def test_keeps_order_per_connection(self) -> None:
        """Messages on one connection arrive in the order sent, whatever delays were drawn."""
        sim, network, a, _ = _network()
        arrived: list[int] = []

        def serve(n: int) -> Any:
            return lambda endpoint: succeed(arrived.append(n))

        for n in range(200):
            network.call(a, "b", "channel", serve(n), 5.0)
        sim.run_until(1.0)
        self.assertEqual(arrived, list(range(200)))

    def test_different_connections_may_overtake(self) -> None:
        """Across connections no order is kept (else the test above would prove nothing)."""
        sim, network, a, _ = _network()
        arrived: list[tuple[str, int]] = []
        for n in range(50):
            for kind in ("http", "channel"):
                network.call(a, "b", kind, lambda e, k=kind, m=n: succeed(arrived.append((k, m))), 5.0)
        sim.run_until(1.0)
        self.assertNotEqual(arrived, sorted(arrived, key=lambda x: x[1]))

    def test_partition_drops(self) -> None:
        """Across a partition nothing arrives: a new connection fails NotSent, an open one
        Unavailable, each at the caller's deadline; after the heal calls go through again."""
        sim, network, a, _ = _network()
        served: list[str] = []
        first = network.call(a, "b", "http", lambda e: succeed(served.append("first")), 1.0)
        sim.run_until(0.5)
        network.partition({"a"}, {"b"})
        on_open = network.call(a, "b", "http", lambda e: succeed(served.append("open")), 1.0)
        on_new = network.call(a, "b", "channel", lambda e: succeed(served.append("new")), 1.0)
        out = _outcomes([on_open, on_new])
        sim.run_until(1.4)
        self.assertEqual(out, [])
        sim.run_until(1.6)
        self.assertEqual([type(o) for o in out], [Unavailable, NotSent])
        self.assertEqual(served, ["first"])
        self.successResultOf(first)
        network.heal()
        again = network.call(a, "b", "http", lambda e: succeed("again"), 1.0)
        sim.run_until(2.0)
        self.assertEqual(self.successResultOf(again), "again")

    def test_pause_holds_events_until_resume(self) -> None:
        """A paused host's timers and messages wait, then run late, in order."""
        sim, network, a, b = _network()
        ran: list[tuple[str, float]] = []
        b.clock.callLater(0.1, lambda: ran.append(("timer", sim.now)))
        network.call(a, "b", "http", lambda e: succeed(ran.append(("message", sim.now))), 5.0)
        b.pause()
        sim.run_until(2.0)
        self.assertEqual(ran, [])
        b.resume()
        sim.run_until(2.0)
        self.assertEqual([what for what, _ in ran], ["message", "timer"])
        self.assertTrue(all(when == 2.0 for _, when in ran))

    def test_drifting_clock(self) -> None:
        """A clock at rate 1.05 shows 1.05 s per simulated second, and a looping timer on it
        still advances (it does not reschedule itself a few ulps ahead forever)."""
        sim, _, a, _ = _network()
        a.set_rate(1.05)
        ticks: list[float] = []

        def tick() -> None:
            ticks.append(a.clock.seconds())
            a.clock.callLater(0.1, tick)

        tick()
        sim.run_until(10.0)
        self.assertAlmostEqual(a.clock.seconds(), 10.5)
        self.assertEqual(len(ticks), 106)


class DiskTests(SynchronousTestCase):
    def test_crash_keeps_only_committed(self) -> None:
        """Transactions queued behind a slow disk and not run when the process crashes never
        happened; the ones that ran are in the database."""
        sim = SimClock()
        host = Host("replica", sim)
        host.start()
        connection = sqlite3.connect(":memory:")
        connection.execute("CREATE TABLE t (n INTEGER)")
        runner = SimRunner(connection, host, lambda: 0.01)
        for n in range(3):
            runner.runInteraction(lambda txn, n: txn.execute("INSERT INTO t VALUES (?)", (n,)), n)
        sim.run_until(0.025)
        host.crash()
        sim.run_until(1.0)
        self.assertEqual(connection.execute("SELECT n FROM t").fetchall(), [(0,), (1,)])

    def test_restart_builds_from_the_disk(self) -> None:
        """A replica restarted after a crash has what it had committed, and catches up."""
        cluster = SimCluster(random.Random(3))
        self.addCleanup(cluster.close)
        cluster.start_all()
        cluster.run_for(1.0)
        store = cluster.processes["catalog-1"].store
        assert store is not None
        writer = cluster.processes["catalog-1"].role.writer  # type: ignore[union-attr]
        host = cluster.host("catalog-1")
        host.schedule(cluster.sim.now, lambda: writer.write(store.set_price(1, 5.5)))  # type: ignore[union-attr,attr-defined]
        cluster.run_for(1.0)
        self.assertEqual(cluster.books("catalog-2")[1]["price"], 5.5)
        cluster.crash("catalog-2")
        cluster.run_for(1.0)
        cluster.restart("catalog-2")
        cluster.run_for(2.0)
        self.assertEqual(cluster.processes["catalog-2"].store.applied_seq, 1)  # type: ignore[union-attr]
        self.assertEqual(cluster.status("catalog-2"), cluster.status("catalog-1"))


class WipeTests(SynchronousTestCase):
    def test_wipe_restarts_a_follower_in_sync_on_an_empty_disk(self) -> None:
        """``wipe ~catalog``: the first catalog follower restarts at once on an empty disk, its
        sequencer still counting it in sync where it was (the sequencer-hang bug's gap), and
        it catches up."""
        cluster = SimCluster(random.Random(3))
        self.addCleanup(cluster.close)
        cluster.start_all()
        cluster.run_for(1.0)
        process = cluster.processes["catalog-1"]
        store, writer = process.store, process.role.writer  # type: ignore[union-attr]
        for book in range(4):
            cluster.host("catalog-1").schedule(
                cluster.sim.now,
                lambda book=book: writer.write(store.set_price(book, 5.5)),  # type: ignore[union-attr,attr-defined,misc]
            )
        cluster.run_for(1.0)
        trace: list[str] = []
        Injector(cluster, trace).apply(Fault(cluster.sim.now, "wipe", ("~catalog",)))
        self.assertIn("[catalog-2]", trace[0])
        self.assertEqual(cluster.log("catalog-2"), [])
        link = next(link for link in writer.links if link.follower.name == "catalog-2")  # type: ignore[union-attr]
        self.assertEqual((link.in_sync, link.confirmed), (True, 4))
        cluster.run_for(3.0)
        self.assertEqual(cluster.status("catalog-2"), cluster.status("catalog-1"))
        self.assertEqual(cluster.status("catalog-2")[0], 4)

    def test_wipes_leave_the_other_faults_as_they_were(self) -> None:
        """A wipe comes from its own generator: with it, a seed's other faults are those drawn
        without it (the schedules before wipes existed), and there is at most one."""
        names = [FRONTEND, "catalog-1", "catalog-2", "catalog-3", "order-1", "order-2", "order-3"]
        wiped = 0
        for seed in range(40):
            before = draw_schedule(random.Random(seed), names, 2.0, 10.0)
            after = draw_schedule(random.Random(seed), names, 2.0, 10.0, random.Random(f"extra{seed}"))
            wipes = [f for f in after if f.kind == "wipe"]
            self.assertEqual([f for f in after if f.kind != "wipe"], before)
            self.assertLessEqual(len(wipes), 1)
            wiped += len(wipes)
        self.assertGreater(wiped, 0)

    def test_wipes_only_when_asked_for(self) -> None:
        """A disk lost on top of another fault is more than three replicas survive (a wiped
        replica votes with an empty log): default schedules have no wipe, ``--wipes`` ones may."""
        seeds = range(1, 41)
        self.assertEqual([f for seed in seeds for f in schedule_of(seed) if f.kind == "wipe"], [])
        self.assertTrue(any(f.kind == "wipe" for seed in seeds for f in schedule_of(seed, wipes=True)))
        for seed in seeds:
            self.assertEqual(
                schedule_of(seed), [f for f in schedule_of(seed, wipes=True) if f.kind != "wipe"]
            )


def _op(kind: str, book: int, value: Any, start: float, end: float, seen: list[Any] | None = None) -> Op:
    return Op("c", kind, book, start, end, True, value, seen=seen or [])


class CheckTests(SynchronousTestCase):
    LOG: ClassVar[list[tuple[int, dict[str, Any]]]] = [
        (1, {"book": {"id": 1, "price": 1001.0, "quantity": 5}}),
        (2, {"book": {"id": 1, "price": 1002.0}}),
    ]

    def versions(self) -> dict[tuple[int, float], int]:
        return price_versions(self.LOG, 7)

    def test_linearizable_history_passes(self) -> None:
        ops = [
            _op("price", 1, 1001.0, 0.0, 1.0),
            _op("price", 1, 1002.0, 1.5, 2.0),
            _op("read", 1, None, 1.2, 1.3, [{"id": 1, "price": 1001.0}]),
            _op("read", 1, None, 1.6, 2.5, [{"id": 1, "price": 1001.0}]),  # overlaps the write
            _op("read", 1, None, 2.6, 2.7, [{"id": 1, "price": 1002.0}]),
        ]
        self.assertEqual(linearizability_problems(ops, self.versions()), [])

    def test_planted_stale_read(self) -> None:
        """A read that began after a write was acknowledged and saw the older price."""
        ops = [
            _op("price", 1, 1001.0, 0.0, 1.0),
            _op("price", 1, 1002.0, 1.5, 2.0),
            _op("read", 1, None, 2.1, 2.2, [{"id": 1, "price": 1001.0}]),
        ]
        (problem,) = linearizability_problems(ops, self.versions())
        self.assertIn("stale read", problem)

    def test_planted_lost_write_and_dirty_read(self) -> None:
        """An acknowledged price the log lacks, and a read of a price never committed."""
        ops = [
            _op("price", 1, 1003.0, 0.0, 1.0),
            _op("read", 2, None, 1.2, 1.3, [{"id": 2, "price": 1004.0}]),
        ]
        problems = linearizability_problems(ops, self.versions())
        self.assertEqual(len(problems), 2)
        self.assertIn("acknowledged write lost", problems[0])
        self.assertIn("never committed", problems[1])

    def test_planted_missing_order(self) -> None:
        """An acknowledged order absent from an order replica, and one recorded twice."""
        ops = [_op("buy_keyed", 1, {"order_id": 1, "idempotency_key": "k"}, 0.0, 1.0)]
        entry = {"order": {"order_id": 1}, "idempotency": {"key": "k"}}
        problems = order_problems(
            ops, {"order-1": [(1, entry)], "order-2": [], "order-3": [(1, entry), (2, entry)]}
        )
        self.assertEqual(len(problems), 2)
        self.assertIn("order-2", problems[0])
        self.assertIn("2 times", problems[1])


class RunTests(SynchronousTestCase):
    def test_a_seed_replays_exactly(self) -> None:
        """The same seed gives the same run: the same operations, messages and trace."""
        first, second = run_schedule(4, verbose=True), run_schedule(4, verbose=True)
        self.assertEqual(first.trace, second.trace)
        self.assertEqual(first.messages, second.messages)
        self.assertEqual([op.describe() for op in first.ops], [op.describe() for op in second.ops])
        self.assertEqual(first.faults, schedule_of(4))

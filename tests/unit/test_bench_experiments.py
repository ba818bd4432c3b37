"""The statistics and the words of each experiment of ``bazar-bench``: pure functions over
measured samples, checked here on made-up ones (the load itself runs in
``tests/integration/test_bench.py``)."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bazar.bench.experiments import (
    consistency,
    floor,
    frontends,
    latency,
    lru,
    memory,
    sweep,
    throughput,
    writes,
)
from bazar.bench.experiments.context import Run, Settings
from bazar.bench.load import LoopResult, Response, Sample


def sample(op: str, ms: float, status: int = 200, cache: str = "") -> Sample:
    return Sample(op, "/", 0.0, ms, status, cache, "")


def loop(*samples: Sample, elapsed: float = 1.0) -> LoopResult:
    return LoopResult(list(samples), elapsed, len(samples))


def response(status: int = 200, cache: str = "miss", body: Any = None, ms: float = 2.0) -> Response:
    return Response(status, {"x-bazar-cache": cache}, json.dumps(body).encode(), ms / 1000)


class LatencyTests(SynchronousTestCase):
    def test_cpu_per_request(self) -> None:
        """Each process's CPU seconds between two readings, as milliseconds per request."""
        per = latency.cpu_per_request(
            {"frontend": 1.0, "order-1": 2.0}, {"frontend": 1.5, "order-1": 2.25}, 100
        )
        self.assertEqual(per, {"frontend": 5.0, "order-1": 2.5})
        self.assertEqual(latency.cpu_per_request(None, {"frontend": 1.0}, 100), {})
        self.assertEqual(latency.cpu_per_request({"frontend": 1.0}, {"frontend": 2.0}, 0), {})

    def test_rows_carry_cpu_and_speed_ups(self) -> None:
        """The cache's rows get the speed-up over the same operation without it; only purchases
        with CPU readings get CPU columns."""
        runs = [
            latency.OperationRun("info", "off", [sample("info", 4.0), sample("info", 4.0)]),
            latency.OperationRun("buy", "off", [sample("buy", 10.0)], {"frontend": 0.0}, {"frontend": 0.002}),
            latency.OperationRun(
                "info", "on", [sample("info", 1.0, cache="hit"), sample("info", 1.0, cache="hit")]
            ),
        ]
        rows = latency.latency_rows(runs)
        self.assertEqual([r["operation"] for r in rows], ["info", "buy", "info"])
        self.assertEqual(rows[1]["cpu_ms_frontend"], 2.0)
        self.assertNotIn("cpu_ms_frontend", rows[0])
        self.assertEqual((rows[2]["speedup_avg"], rows[2]["speedup_p99"]), (4.0, 4.0))
        self.assertEqual(rows[2]["hit_ratio"], 1.0)
        self.assertNotIn("speedup_avg", rows[0])

    def test_notes(self) -> None:
        """A cluster not measured, and requests that failed, are said; a clean run says nothing."""
        rows = latency.latency_rows(
            [latency.OperationRun("buy", "on", [sample("buy", 3.0, 409), sample("buy", 3.0)])]
        )
        notes = latency.latency_notes(rows, cache=True, nocache=False)
        self.assertIn("no cluster without a cache was measured", notes[0])
        self.assertEqual(notes[1], "buy (cache on): 1 requests were not 2xx (1 of them 409)")
        clean = latency.latency_rows([latency.OperationRun("info", "on", [sample("info", 1.0)])])
        self.assertEqual(latency.latency_notes(clean, cache=True, nocache=True), [])


class SweepTests(SynchronousTestCase):
    def test_a_row_per_operation_with_the_runs_throughput(self) -> None:
        run = Run({"p": 0.5, "cache": "on"}, loop(sample("query", 1.0), sample("buy", 3.0, 409), elapsed=0.5))
        rows = sweep.sweep_rows([run])
        self.assertEqual(
            [(r["p"], r["cache"], r["operation"]) for r in rows], [(0.5, "on", "query"), (0.5, "on", "buy")]
        )
        self.assertEqual([r["run_throughput_rps"] for r in rows], [4.0, 4.0])
        self.assertEqual((rows[1]["errors"], rows[1]["status_409"]), (1, 1))
        notes = sweep.sweep_notes(rows, nocache=False)
        self.assertEqual(
            notes, ["only the cluster with a cache was measured", "1 requests were not 2xx (1 of them 409)"]
        )


class FloorTests(SynchronousTestCase):
    def run_of(self, label: str, ms: float) -> Run:
        return Run({"chain": label}, loop(sample("buy", ms), sample("buy", ms)))

    def test_every_row_against_the_durable_floor(self) -> None:
        """Each row's p50 as a multiple of the durable floor's; Bazar's distance from it noted."""
        runs = [
            self.run_of(floor.FLOOR_CHAINS[0][1], 1.0),
            self.run_of(floor.DURABLE, 2.0),
            self.run_of(floor.BAZAR + "on", 5.0),
        ]
        rows = floor.floor_rows(runs)
        self.assertEqual([r["of_floor"] for r in rows], [0.5, 1.0, 2.5])
        notes = floor.floor_notes([], rows)
        self.assertEqual(len(notes), 1)
        self.assertTrue(
            notes[0].startswith("Bazar's purchase p50 is 3.00 ms above the durable floor's (2.50"), notes
        )

    def test_without_the_durable_floor(self) -> None:
        """A chain that did not start is said, and nothing is compared with a floor not measured."""
        rows = floor.floor_rows([self.run_of(floor.BAZAR + "off", 5.0)])
        self.assertIsNone(rows[0]["of_floor"])
        notes = floor.floor_notes([(floor.DURABLE, "port in use")], rows)
        self.assertEqual(notes, [f"{floor.DURABLE}: not measured: port in use"])


class LruTests(SynchronousTestCase):
    def test_counters_since_the_baseline(self) -> None:
        cache = {
            "hits": 10,
            "misses": 4,
            "evictions": 1,
            "invalidations": 2,
            "size": 3,
            "capacity": 5,
            "keys": ["a", "b"],
        }
        baseline = {"hits": 8, "misses": 4, "evictions": 0, "invalidations": 2}
        self.assertEqual(
            lru.counters_since(cache, baseline),
            {
                "hits": 2,
                "misses": 0,
                "evictions": 1,
                "invalidations": 0,
                "size": 3,
                "capacity": 5,
                "keys": "a b",
            },
        )

    def test_phase_figures_and_the_overall_ratio(self) -> None:
        """A phase's counters are its snapshots' difference; without both snapshots, none."""
        before = {"t": 1.0, "hits": 2, "misses": 2, "evictions": 0, "invalidations": 0}
        after = {"t": 2.0, "hits": 8, "misses": 4, "evictions": 1, "invalidations": 1}
        phase = lru.phase_figures(1, ["info/0"], before, after, 9)
        self.assertEqual((phase["hits"], phase["misses"], phase["hit_ratio"]), (6, 2, 0.75))
        self.assertEqual((phase["start_t"], phase["end_t"], phase["requests"]), (1.0, 2.0, 9))
        lost = lru.phase_figures(2, ["info/3"], None, after, 9)
        self.assertNotIn("hits", lost)
        self.assertIsNone(lost["start_t"])
        self.assertEqual(lru.overall_hit_ratio([phase, lost, {"hits": 2, "misses": 6}]), 0.5)
        self.assertIsNone(lru.overall_hit_ratio([lost]))


class ThroughputTests(SynchronousTestCase):
    def wrk_row(self, workload: str, rps: float, requests: int = 100, non_2xx: int = 0) -> dict[str, Any]:
        return {
            "workload": workload,
            "rps": rps,
            "requests": requests,
            "non_2xx": non_2xx,
            "socket_errors": 0,
        }

    def measured(self) -> tuple[throughput.ThroughputRuns, str]:
        measured = throughput.ThroughputRuns("wrk -t1 -c1 -d1s", 130, nocache=True)
        misses = measured.misses(7)
        counters = ({"hits": 0, "misses": 0}, {"hits": 90, "misses": 10})
        for number, ceiling in ((1, 1000.0), (2, 500.0)):
            runs = [
                self.wrk_row(measured.ceiling, ceiling),
                self.wrk_row(throughput.HITS, ceiling / 2),
                self.wrk_row(misses, ceiling / 4),
            ]
            measured.rounds.append(throughput.Round(number, runs, counters))
        measured.backend_reads = [(30, 100), (10, 100)]
        measured.purchases = self.wrk_row(throughput.PURCHASES, 100.0, non_2xx=3)
        return measured, misses

    def test_hit_fraction(self) -> None:
        self.assertEqual(throughput.hit_fraction({"hits": 1, "misses": 1}, {"hits": 4, "misses": 2}), 0.75)
        self.assertIsNone(throughput.hit_fraction({"hits": 1, "misses": 1}, {"hits": 1, "misses": 1}))

    def test_rows(self) -> None:
        """Each run is compared with its own round's ceiling; the rows are the median rounds, the
        misses against the hits of their round, and the runs made once against the median ceiling."""
        measured, misses = self.measured()
        rounds, rows = throughput.throughput_rows(measured, misses)
        self.assertEqual([r["round"] for r in rounds], [1, 1, 1, 2, 2, 2])
        self.assertEqual([r["of_ceiling"] for r in rounds], [1.0, 0.5, 0.25] * 2)
        self.assertEqual([r.get("hit_fraction") for r in rounds], [None, 0.9, None] * 2)
        self.assertEqual(
            [r["workload"] for r in rows], [measured.ceiling, throughput.HITS, misses, throughput.PURCHASES]
        )
        self.assertEqual(rows[0]["rps"], 500.0)  # the lower middle of two rounds
        self.assertEqual((rows[2]["of_hits_rounds"], rows[2]["backend_reads_per_request"]), ([0.5, 0.5], 0.2))
        self.assertEqual(rows[3]["of_ceiling"], 0.2)  # against the median ceiling: 100 / 500

    def test_notes(self) -> None:
        """In order: the rounds' problems and comparisons, backend reads, the bench's own client,
        what was not measured, then failed answers."""
        measured, misses = self.measured()
        measured.nocache = False
        measured.problems = {"rounds": ["no ceiling in round 3/3: oops"], "purchases": []}
        rounds, rows = throughput.throughput_rows(measured, misses)
        selfcheck = {"concurrency": 5, "rps": 2000.0, "p50_ms": 1.5}
        notes = throughput.throughput_notes(measured, rounds, rows, misses, selfcheck, 1500.0)
        self.assertEqual(notes[0], "no ceiling in round 3/3: oops")
        self.assertTrue(notes[1].startswith("cache hits ÷ the ceiling, round by round: 50.0 %, 50.0 %"))
        self.assertTrue(notes[2].startswith("misses ÷ hits"))
        self.assertTrue(notes[3].startswith("misses: the catalog replicas answered 40 reads for 200"))
        self.assertIn("reached 2,000 req/s with 5 clients", notes[4])
        self.assertIn("went at 1,500 req/s", notes[4])
        self.assertEqual(notes[5], "misses not measured: no cluster without a cache")
        self.assertEqual(notes[6], f"{throughput.PURCHASES}: 3 non-2xx answers, 0 socket errors")
        self.assertEqual(len(notes), 7)

    def test_selfcheck(self) -> None:
        figures = throughput.selfcheck_figures(
            loop(sample("ceiling", 1.0), sample("ceiling", 0.0, 0), elapsed=2.0), 5
        )
        self.assertEqual(
            (figures["concurrency"], figures["rps"], figures["n"], figures["errors"]), (5, 1.0, 1, 1)
        )


class MemoryTests(SynchronousTestCase):
    def test_rows_and_counters(self) -> None:
        result = loop(
            sample("search", 1.0),
            sample("search", 1.0),
            sample("update_price", 3.0, 500),
            sample("info", 2.0),
        )
        rows = memory.operation_rows(result)
        self.assertEqual(
            [(r["operation"], r["share"]) for r in rows],
            [("search", 0.5), ("info", 0.25), ("update_price", 0.25)],
        )
        self.assertEqual(rows[2]["errors"], 1)
        delta = memory.counter_deltas(
            {"hits": 1, "misses": 2, "size": 9}, {"hits": 5, "misses": 2, "size": 3}
        )
        self.assertEqual(delta, {"hits": 4, "misses": 0})

    def test_sample_and_line(self) -> None:
        figures = {"rss_bytes": 3 * 1024 * 1024, "open_fds": 12, "cache_entries": 4}
        taken = memory.memory_sample(1.5, "run", {"requests": 10, "errors": 1}, figures, 5)
        self.assertEqual((taken["rss_mib"], taken["requests"], taken["cache_capacity"]), (3.0, 10, 5))
        self.assertIsNone(memory.rss_line({"start_mib": 1.0}))
        line = memory.rss_line(
            {"start_mib": 30.0, "end_mib": 31.0, "max_mib": 32.0, "growth_mib": 1.0, "verdict": "flat"}
        )
        self.assertEqual(line, "RSS 30.0 MiB after the warm-up, max 32.0, end 31.0 (+1.00 MiB): flat")

    def test_plan(self) -> None:
        """The warm-up fills the cache twice over, within a tenth to a half of the run."""
        plan = memory.Plan.of(Settings(samples=100, memory_seconds=30.0), capacity=500)
        self.assertEqual((plan.count, plan.limit, plan.warm_count, plan.warm_limit), (6000, 30.0, 1000, 6.0))


class ConsistencyTests(SynchronousTestCase):
    def turn(self, i: int = 0, **reads: Response | None) -> consistency.Round:
        turn = consistency.Round(i, 3, "/bazar/info/3", "/bazar/search/x", 1000.03)
        turn.reads.update({"cached info": response(cache="hit"), "cached search": response(cache="hit")})
        turn.reads.update({k.replace("_", " "): v for k, v in reads.items()})
        turn.write = response(body={"ok": True})
        return turn

    def test_a_clean_round(self) -> None:
        """A miss with the new price right after the write, then a hit: no violation."""
        turn = self.turn(
            after_info=response(body={"id": 3, "price": 1000.03}),
            after_search=response(body=[{"id": 3, "price": 1000.03}]),
            reread=response(cache="hit", body={"id": 3, "price": 1000.03}),
        )
        latencies, counts, violations, raw = consistency.consistency_figures([turn])
        self.assertEqual(violations, 0)
        self.assertEqual(counts["writes"], 1)
        self.assertEqual([len(v) for v in latencies.values()], [1, 1, 1, 1, 1])
        self.assertEqual([row["step"] for row in raw], list(consistency.STEPS))
        self.assertEqual(raw[1]["price"], 1000.03)
        self.assertEqual(consistency.consistency_notes(counts)[1:], [])

    def test_violations(self) -> None:
        """A hit, or the old price, right after a write is a violation; failed requests are counted."""
        stale = self.turn(
            after_info=response(cache="hit", body={"id": 3, "price": 5.0}),
            after_search=response(body=[{"id": 3, "price": 5.0}]),
            reread=response(status=503),
        )
        failed = self.turn(1)
        failed.write = None
        _, counts, violations, raw = consistency.consistency_figures([stale, failed])
        self.assertEqual(violations, 3)
        self.assertEqual((counts["info_hit_after_write"], counts["info_stale_after_write"]), (1, 1))
        self.assertEqual(counts["search_stale_after_write"], 1)
        self.assertEqual((counts["writes"], counts["write_errors"], counts["read_errors"]), (2, 1, 1))
        self.assertEqual(len(raw), 4 + 1)  # the failed write's round: its cached read only
        self.assertIn("1 writes and 1 reads failed", consistency.consistency_notes(counts))


class WritesTests(SynchronousTestCase):
    def run_of(self, op: str, clients: int, statuses: list[int], cpu: float | None) -> writes.WriteRun:
        samples = [Sample("buy", "/", 0.0, 2.0 + i, status, "", "") for i, status in enumerate(statuses)]
        before = None if cpu is None else {"frontend": 1.0, "order-1": 2.0}
        after = None if cpu is None else {"frontend": 1.0 + cpu, "order-1": 2.0 + 2 * cpu}
        return writes.WriteRun(op, clients, LoopResult(samples, elapsed=2.0), before, after, (3.5, 3.0, 2.0))

    def test_rows_count_only_the_writes_answered(self) -> None:
        """Writes per second and CPU time per write are over the 2xx answers: a 409 bought nothing."""
        [row] = writes.writes_rows([self.run_of(writes.PURCHASE, 10, [200, 200, 200, 409], 0.003)])
        self.assertEqual((row["op"], row["clients"], row["n"], row["errors"]), ("purchase", 10, 3, 1))
        self.assertAlmostEqual(row["writes_per_s"], 1.5)
        self.assertAlmostEqual(row["cpu_ms_frontend"], 1.0)
        self.assertAlmostEqual(row["cpu_ms_order-1"], 2.0)
        self.assertAlmostEqual(row["cpu_ms"], 3.0)
        self.assertEqual(row["load"], 3.5)

    def test_notes(self) -> None:
        rows = writes.writes_rows(
            [self.run_of(writes.PURCHASE, 1, [200, 409], 0.001), self.run_of(writes.PRICE, 50, [200], None)]
        )
        self.assertIsNone(rows[1]["cpu_ms"])
        self.assertEqual(
            writes.writes_notes(rows),
            [
                "purchases, 1 clients: 1 writes were not 2xx (1 of them 409)",
                "purchases, 1 clients: CPU ms per write by process: frontend 1.00, order-1 2.00",
                "price updates, 50 clients: no CPU reading (a cluster not started by the benchmark)",
            ],
        )

    def test_plan(self) -> None:
        """Purchases and price updates over the books in turn; every price update a new price."""
        buy, price = writes.write_plan(writes.PURCHASE, [0, 5]), writes.write_plan(writes.PRICE, [0, 5])
        paths = [buy(i).path for i in range(3)]
        self.assertEqual(paths, ["/bazar/purchase/0", "/bazar/purchase/5", "/bazar/purchase/0"])
        self.assertEqual((price(1).method, price(1).path), ("PUT", "/bazar/update_price/5"))
        prices = [json.loads(price(i).body or b"") for i in range(2)]
        self.assertEqual(prices, [{"price": 10.0}, {"price": 10.25}])


# (front ends, round, workload): req/s; round 2 of 2 front ends lost its ceiling
FRONTEND_RUNS = {
    (1, 1, "ceiling"): 1000.0,
    (1, 1, "hits"): 700.0,
    (1, 1, "misses"): 100.0,
    (1, 2, "ceiling"): 800.0,
    (1, 2, "hits"): 600.0,
    (1, 2, "misses"): 90.0,
    (1, 3, "ceiling"): 1200.0,
    (1, 3, "hits"): 720.0,
    (1, 3, "misses"): 110.0,
    (2, 1, "ceiling"): 2000.0,
    (2, 1, "hits"): 1500.0,
    (2, 1, "misses"): 150.0,
    (2, 2, "hits"): 1300.0,
    (2, 2, "misses"): 140.0,
}


class FrontendsTests(SynchronousTestCase):
    def test_rows(self) -> None:
        """Per count: each workload's median round, hits and misses as the median of their
        own round's share of the ceiling (a round without one left out), speed-up over the fewest."""
        runs: dict[tuple[int, int, str], dict[str, Any]] = {k: {"rps": v} for k, v in FRONTEND_RUNS.items()}
        runs[1, 1, "hits"]["hit_fraction"] = 0.999
        runs[1, 2, "hits"]["hit_fraction"] = 0.99
        rows = frontends.frontends_rows(runs)
        one, two = rows
        self.assertEqual((one["hit_fraction"], two["hit_fraction"]), (0.99, None))  # the lowest round's
        self.assertEqual((one["frontends"], two["frontends"]), (1, 2))
        self.assertEqual(one["hits_rps_rounds"], [700.0, 600.0, 720.0])
        self.assertEqual((one["ceiling_rps"], one["hits_rps"], one["misses_rps"]), (1000.0, 700.0, 100.0))
        self.assertEqual(one["hits_of_ceiling"], 0.7)  # 0.7, 0.75, 0.6: the median
        self.assertEqual(two["hits_rps"], 1300.0)  # the lower of two
        self.assertEqual(two["hits_of_ceiling"], 0.75)  # round 1 only: round 2 had no ceiling
        self.assertEqual(two["ceiling_rps_rounds"], [2000.0])
        self.assertEqual(one["hits_speedup"], 1.0)
        self.assertAlmostEqual(two["hits_speedup"], 1300 / 700)
        self.assertEqual(two["ceiling_speedup"], 2.0)
        self.assertEqual(frontends.frontends_rows({}), [])

    def test_cpu(self) -> None:
        """Requests per CPU second and cores, from the serving processes' CPU over the run."""
        row: dict[str, Any] = {"requests": 3000, "seconds": 2.0}
        frontends.cpu(row, 10.0, 11.5)
        self.assertEqual((row["cores"], row["per_cpu_second"]), (0.75, 2000.0))
        unknown: dict[str, Any] = {"requests": 3000, "seconds": 2.0}
        frontends.cpu(unknown, None, 11.5)
        frontends.cpu(unknown, 11.5, 11.5)  # no CPU counted: nothing to divide by
        self.assertEqual(unknown, {"requests": 3000, "seconds": 2.0})
        runs = {k: {"rps": v, "per_cpu_second": v * 2, "cores": 0.5} for k, v in FRONTEND_RUNS.items()}
        one = frontends.frontends_rows(runs)[0]
        self.assertEqual((one["hits_per_cpu_second"], one["hits_cores"]), (1400.0, 0.5))

    def test_notes(self) -> None:
        rows = frontends.frontends_rows({k: {"rps": v} for k, v in FRONTEND_RUNS.items()})
        prices = [
            {"frontends": 1, "p50_ms": 2.0, "errors": 0, "rounds_p50_ms": [2.0, 2.5]},
            {"frontends": 4, "p50_ms": 3.0, "errors": 2, "rounds_p50_ms": [3.0, 2.0]},
        ]
        notes = frontends.frontends_notes(rows, prices, ["no ceiling (2 front end(s), round 2/3): x"])
        self.assertEqual(notes[0], "no ceiling (2 front end(s), round 2/3): x")
        self.assertIn("2 front end(s), each round's req/s: ceiling 2,000, hits 1,500 / 1,300", notes[2])
        self.assertIn("a price update's p50: 2.00 ms with 1 front end(s), 3.00 ms with 4 (1.50x)", notes[3])
        self.assertEqual(
            notes[4],
            "a price update's p50 in each round, 1 / 4: 2.00 / 3.00 ms (1.50x), 2.50 / 2.00 ms (0.80x)",
        )
        self.assertEqual(notes[5], "price updates, 4 front end(s): 2 not 2xx")

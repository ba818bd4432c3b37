"""Tests for ``bazar.bench``'s pure parts: statistics, tables, files, HTTP parsing, wrk, arguments.

The parts that need a cluster (the experiments, starting and stopping processes) are covered
end to end by ``tests/integration/test_bench.py``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import signal
import socket
import tempfile
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from bazar import wire
from bazar.bench import cli, floor, hang, machine, memory, options, plots, report, stats, wrk
from bazar.bench.ceiling import body_of_size
from bazar.bench.cluster import ClusterInfo, catalog_reads, count_reads, cpu_seconds
from bazar.bench.experiments import (
    EXPERIMENTS,
    MEMORY_SEARCH_SHARE,
    MEMORY_WRITE_SHARE,
    cpu_note,
    lower_median,
    median_round,
    memory_plan,
    of_hits,
    phase_order,
    rounds_notes,
    summary_row,
    zipf_weights,
)
from bazar.bench.load import (
    HTTPConnection,
    ProtocolError,
    RequestError,
    Response,
    Sample,
    Target,
    build_request,
    parse_response,
)
from bazar.bench.progress import Progress, format_duration, status_line
from bazar.launch import listening_pid


class PercentileTests(SynchronousTestCase):
    def test_interpolates_between_ranks(self) -> None:
        """Linear interpolation, as numpy's default: p50 of 1..4 is 2.5, p99 of 1..100 is 99.01."""
        self.assertEqual(stats.percentile([1, 2, 3, 4], 50), 2.5)
        self.assertAlmostEqual(stats.percentile(list(range(1, 101)), 99), 99.01)
        self.assertAlmostEqual(stats.percentile([10, 20], 25), 12.5)

    def test_order_does_not_matter(self) -> None:
        self.assertEqual(stats.percentile([5, 1, 4, 2, 3], 50), 3)

    def test_extremes_and_single_value(self) -> None:
        values = [3.0, 1.0, 2.0]
        self.assertEqual(stats.percentile(values, 0), 1.0)
        self.assertEqual(stats.percentile(values, 100), 3.0)
        self.assertEqual(stats.percentile([7.0], 99), 7.0)

    def test_no_values_or_bad_q(self) -> None:
        self.assertRaises(ValueError, stats.percentile, [], 50)
        self.assertRaises(ValueError, stats.percentile, [1.0], 101)
        self.assertRaises(ValueError, stats.percentile, [1.0], -1)


class SummaryTests(SynchronousTestCase):
    def test_summary_of_values(self) -> None:
        summary = stats.summarize([1.0, 2.0, 3.0, 4.0], errors=2)
        self.assertEqual(summary.n, 4)
        self.assertEqual(summary.errors, 2)
        self.assertEqual(summary.avg_ms, 2.5)
        self.assertEqual(summary.p50_ms, 2.5)
        self.assertEqual((summary.min_ms, summary.max_ms), (1.0, 4.0))
        self.assertAlmostEqual(summary.p99_ms or 0, 3.97)

    def test_summary_of_nothing_is_empty_not_an_error(self) -> None:
        """A cell with no samples (buys at p = 0) has no numbers, and says so with None."""
        summary = stats.summarize([], errors=3)
        self.assertEqual((summary.n, summary.errors), (0, 3))
        self.assertIsNone(summary.avg_ms)
        self.assertIsNone(summary.p99_ms)

    def test_ratio(self) -> None:
        self.assertEqual(stats.ratio(10.0, 2.0), 5.0)
        self.assertIsNone(stats.ratio(None, 2.0))
        self.assertIsNone(stats.ratio(1.0, 0))

    def test_summary_row_counts_errors_conflicts_and_hits(self) -> None:
        samples = [
            Sample("query", "/bazar/info/1", 0.0, 1.0, 200, "hit", ""),
            Sample("query", "/bazar/info/2", 0.0, 3.0, 200, "miss", "catalog-1"),
            Sample("query", "/bazar/info/3", 0.0, 2.0, 200, "hit", ""),
            Sample("buy", "/bazar/purchase/2", 0.0, 5.0, 409, "", "order-1"),
            Sample("buy", "/bazar/purchase/2", 0.0, 0.0, 0, "", "", "timed out"),
        ]
        row = summary_row(samples, cache="on")
        self.assertEqual(row["cache"], "on")
        self.assertEqual(row["n"], 3)
        self.assertEqual(row["errors"], 2)
        self.assertEqual(row["status_409"], 1)
        self.assertAlmostEqual(row["hit_ratio"], 2 / 3)
        self.assertEqual(row["avg_ms"], 2.0)


class FormattingTests(SynchronousTestCase):
    def test_milliseconds_keep_three_significant_digits(self) -> None:
        self.assertEqual(report.fmt_ms(0.41234), "0.412")
        self.assertEqual(report.fmt_ms(3.514), "3.51")
        self.assertEqual(report.fmt_ms(27.34), "27.3")
        self.assertEqual(report.fmt_ms(1203.4), "1203")
        self.assertEqual(report.fmt_ms(None), report.MISSING)
        self.assertEqual(report.fmt_ms(math.nan), report.MISSING)

    def test_ratio_percent_count(self) -> None:
        self.assertEqual(report.fmt_ratio(12.345), "12.3x")
        self.assertEqual(report.fmt_percent(0.5), "50.0 %")
        self.assertEqual(report.fmt_count(12345.0), "12,345")
        self.assertEqual(report.fmt_ratio(None), report.MISSING)

    def test_markdown_table(self) -> None:
        """Header, an alignment rule (right for numeric columns), padded cells, escaped pipes."""
        table = report.markdown_table(["op", "ms"], [["info", "1.5"], ["a|b", "22.0"]], [False, True])
        self.assertEqual(
            table.splitlines(),
            [
                "| op   |   ms |",
                "| ---- | ---: |",
                "| info |  1.5 |",
                "| a\\|b | 22.0 |",
            ],
        )

    def test_markdown_table_rejects_ragged_rows(self) -> None:
        self.assertRaises(ValueError, report.markdown_table, ["a", "b"], [["only one"]])

    def latency_result(self) -> dict[str, object]:
        def row(op: str, cache: str, avg: float) -> dict[str, object]:
            return {"operation": op, "cache": cache, "avg_ms": avg, "p50_ms": avg, "p99_ms": 2 * avg}

        return {
            "operations": ["info", "buy"],
            "rows": [row("info", "off", 2.0), row("info", "on", 0.2), row("buy", "on", 20.0)],
        }

    def test_latency_table_ratio_and_missing_cells(self) -> None:
        """Speed-up is no cache ÷ cache; a cell without a measurement shows a dash, not 0."""
        lines = report.latency_table(self.latency_result()).splitlines()
        self.assertIn("request", lines[0])
        info = [c.strip() for c in lines[2].strip("|").split("|")]
        self.assertEqual(info[0], "info")
        self.assertEqual(info[1], "2.00")
        self.assertEqual(info[4], "0.200")
        self.assertEqual(info[8], "10.0x")
        buy = [c.strip() for c in lines[3].strip("|").split("|")]
        self.assertEqual(buy[1], report.MISSING)
        self.assertEqual(buy[8], report.MISSING)

    def test_markdown_report_headings_notes_and_skips(self) -> None:
        results = {
            "machine": {
                "cpu_model": "Test CPU",
                "cpus": 2,
                "python": "3.11",
                "twisted": "24",
                "date": "today",
            },
            "experiments": {
                "latency": {**self.latency_result(), "caption": "The caption.", "notes": ["a note"]},
                "throughput": {"skipped": "wrk is not installed"},
            },
        }
        text = report.markdown_report(results)
        self.assertIn("Machine: Test CPU, 2 CPUs", text)
        self.assertIn("#### 1. Response time with and without the cache (ms)", text)
        self.assertIn("The caption.", text)
        self.assertIn("- a note", text)
        self.assertIn("#### 5. Throughput\n\nSkipped: wrk is not installed", text)

    def test_sweep_and_throughput_tables(self) -> None:
        sweep = {
            "probabilities": [0.0, 0.5],
            "rows": [
                {
                    "p": 0.0,
                    "cache": "on",
                    "operation": "query",
                    "avg_ms": 1.0,
                    "p99_ms": 2.0,
                    "hit_ratio": 0.5,
                },
                {
                    "p": 0.5,
                    "cache": "on",
                    "operation": "buy",
                    "avg_ms": 30.0,
                    "p99_ms": 40.0,
                    "status_409": 2,
                },
            ],
        }
        lines = report.sweep_table(sweep).splitlines()
        self.assertEqual(len(lines), 4)
        self.assertIn("1.00 / 2.00", lines[2])
        self.assertIn("50.0 %", lines[2])
        self.assertTrue(lines[3].rstrip().endswith("2 |"))
        throughput = {
            "rows": [
                {"workload": "ceiling", "rps": 20000.0, "p50_ms": 1.0, "p99_ms": 3.0, "of_ceiling": 1.0},
                {"workload": "hits", "rps": 15000.0, "p50_ms": 1.5, "p99_ms": 4.0, "of_ceiling": 0.75},
            ]
        }
        self.assertIn("75.0 %", report.throughput_table(throughput))
        throughput["rows"][1]["rps_rounds"] = [14000.0, 15000.0, 16000.5]
        self.assertIn("| 14,000 / 15,000 / 16,000 |", report.throughput_table(throughput))

    def test_median_round(self) -> None:
        """A workload measured in rounds shows its median round, and the median of its shares
        of each round's ceiling (which need not come from the same round)."""
        rounds = [
            {"workload": "hits", "round": 1, "rps": 300.0, "p99_ms": 1.0, "of_ceiling": 0.9},
            {"workload": "hits", "round": 2, "rps": 100.0, "p99_ms": 2.0, "of_ceiling": 0.7},
            {"workload": "hits", "round": 3, "rps": 200.0, "p99_ms": 3.0, "of_ceiling": 0.6},
        ]
        row = median_round(rounds)
        self.assertEqual((row["rps"], row["p99_ms"]), (200.0, 3.0))  # round 3's run, whole
        self.assertEqual(row["of_ceiling"], 0.7)
        self.assertEqual(row["rps_rounds"], [300.0, 100.0, 200.0])
        self.assertEqual(row["of_ceiling_rounds"], [0.9, 0.7, 0.6])
        self.assertEqual(row["rounds"], 3)
        self.assertNotIn("round", row)
        self.assertEqual(median_round(rounds[:2])["rps"], 100.0)  # an even count: the lower middle
        self.assertEqual(lower_median([0.5, 0.25, 0.75, 1.0]), 0.5)
        ceiling = median_round([{"workload": "ceiling", "round": 1, "rps": 5.0}])
        self.assertNotIn("of_ceiling", ceiling)

    def test_misses_are_compared_with_the_hits_of_their_own_round(self) -> None:
        rounds = [
            {"workload": "hits", "round": 1, "rps": 100.0, "of_ceiling": 0.8},
            {"workload": "misses", "round": 1, "rps": 50.0},
            {"workload": "hits", "round": 2, "rps": 200.0, "of_ceiling": 0.7},
            {"workload": "misses", "round": 2, "rps": 60.0},
        ]
        hits, misses = median_round(rounds[0::2]), median_round(rounds[1::2])
        of_hits(rounds, hits, misses)
        self.assertEqual((misses["of_hits_rounds"], misses["of_hits"]), ([0.5, 0.3], 0.3))
        notes = rounds_notes(hits, misses)
        self.assertEqual(notes[0], "cache hits ÷ the ceiling, round by round: 80.0 %, 70.0 %")
        self.assertTrue(notes[1].endswith("0.50, 0.30"), notes)
        self.assertEqual(rounds_notes(None, misses), [])


class FileTests(SynchronousTestCase):
    def tmpdir(self) -> Path:
        """A directory removed after the test (mktemp would leave one in the cwd under pytest)."""
        directory = tempfile.TemporaryDirectory(prefix="test-bench-")
        self.addCleanup(directory.cleanup)
        return Path(directory.name)

    def test_json_is_strict_and_nan_becomes_null(self) -> None:
        path = self.tmpdir() / "results.json"
        report.write_json(path, {"a": math.nan, "b": [1.5, math.inf], "c": (1, 2)})
        self.assertEqual(json.loads(path.read_text()), {"a": None, "b": [1.5, None], "c": [1, 2]})
        self.assertFalse(path.with_name(path.name + ".tmp").exists())

    def test_csv_columns_are_every_key_in_first_seen_order(self) -> None:
        path = self.tmpdir() / "rows.csv"
        report.write_csv(path, [{"op": "info", "ms": 1.23456789}, {"op": "buy", "status": 409, "ms": None}])
        with path.open() as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(list(rows[0]), ["op", "ms", "status"])
        self.assertEqual(rows[0], {"op": "info", "ms": "1.234568", "status": ""})
        self.assertEqual(rows[1], {"op": "buy", "ms": "", "status": "409"})


class HTTPParsingTests(SynchronousTestCase):
    def test_content_length(self) -> None:
        raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Bazar-Cache: hit\r\n\r\n[]"
        parsed = parse_response(raw)
        assert parsed is not None
        self.assertEqual(
            (parsed.status, parsed.body, parsed.consumed, parsed.close), (200, b"[]", len(raw), False)
        )
        self.assertEqual(parsed.headers["x-bazar-cache"], "hit")

    def test_incomplete_response_needs_more(self) -> None:
        self.assertIsNone(parse_response(b"HTTP/1.1 200 OK\r\nContent-Len"))
        self.assertIsNone(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"))

    def test_chunked(self) -> None:
        head = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
        raw = head + b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
        parsed = parse_response(raw)
        assert parsed is not None
        self.assertEqual((parsed.status, parsed.body, parsed.consumed), (404, b"abcde", len(raw)))
        self.assertIsNone(parse_response(raw[:-2]))

    def test_only_the_first_response_is_consumed(self) -> None:
        first = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
        parsed = parse_response(first + b"HTTP/1.1 200 OK\r\n")
        assert parsed is not None
        self.assertEqual(parsed.consumed, len(first))

    def test_connection_close(self) -> None:
        parsed = parse_response(b"HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        assert parsed is not None
        self.assertTrue(parsed.close)

    def test_garbage_is_a_protocol_error(self) -> None:
        self.assertRaises(ProtocolError, parse_response, b"SSH-2.0-OpenSSH\r\n\r\n")
        self.assertRaises(ProtocolError, parse_response, b"HTTP/1.1 200 OK\r\n\r\nbody without a length")
        self.assertRaises(ProtocolError, parse_response, b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")

    def test_build_request(self) -> None:
        self.assertEqual(
            build_request("GET", "/bazar/info/1", "127.0.0.1:5000"),
            b"GET /bazar/info/1 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n",
        )
        post = build_request("POST", "/bazar/purchase/1", "h", b'{"quantity":1}')
        self.assertIn(b"Content-Length: 14\r\n", post)
        self.assertTrue(post.endswith(b'\r\n\r\n{"quantity":1}'))

    def test_build_request_with_headers(self) -> None:
        """Extra headers (the cluster secret for /metrics) go between Host and the blank line."""
        self.assertEqual(
            build_request("GET", "/metrics", "h", headers={"X-Bazar-Secret": "s3"}),
            b"GET /metrics HTTP/1.1\r\nHost: h\r\nX-Bazar-Secret: s3\r\n\r\n",
        )


class ConnectionTests(SynchronousTestCase):
    def connection(self) -> tuple[HTTPConnection, StringTransport, Clock]:
        clock = Clock()
        connection = HTTPConnection(clock)
        transport = StringTransport()
        connection.makeConnection(transport)
        return connection, transport, clock

    def test_response_in_pieces(self) -> None:
        connection, transport, _ = self.connection()
        d = connection.send(b"GET / HTTP/1.1\r\n\r\n", timeout=5)
        self.assertEqual(transport.value(), b"GET / HTTP/1.1\r\n\r\n")
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Le")
        self.assertNoResult(d)
        connection.dataReceived(b"ngth: 2\r\n\r\n{}")
        response = self.successResultOf(d)
        self.assertIsInstance(response, Response)
        self.assertEqual((response.status, response.body), (200, b"{}"))
        self.assertGreaterEqual(response.elapsed, 0)
        self.assertTrue(connection.reusable)

    def test_timeout_fails_the_request(self) -> None:
        connection, transport, clock = self.connection()
        d = connection.send(b"GET / HTTP/1.1\r\n\r\n", timeout=5)
        clock.advance(5)
        self.assertTrue(transport.disconnecting)
        connection.connectionLost()
        self.assertIn("timed out", str(self.failureResultOf(d, RequestError).value))
        self.assertFalse(connection.reusable)

    def test_one_request_at_a_time(self) -> None:
        connection, _, _ = self.connection()
        connection.send(b"GET / HTTP/1.1\r\n\r\n", timeout=5)
        self.assertRaises(RuntimeError, connection.send, b"GET / HTTP/1.1\r\n\r\n", 5)


class TargetTests(SynchronousTestCase):
    def test_loopback_only(self) -> None:
        self.assertEqual(Target.from_url("http://127.0.0.1:5000"), Target("127.0.0.1", 5000))
        self.assertEqual(Target.from_url("http://localhost:8080/"), Target("127.0.0.1", 8080))
        for url in ("http://example.com:5000", "https://127.0.0.1:5000", "http://127.0.0.1:5000/bazar", "x"):
            self.assertRaises(ValueError, Target.from_url, url)


WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:5000/bazar/info/0
  2 threads and 50 connections
Requests/sec:  15000.00
BAZAR-BENCH {"requests":30000,"duration_us":2000000,"bytes":9000000,"connect":0,"read":1,"write":0,\
"status":7,"timeout":2,"p50_us":1500.0,"p99_us":4200.5,"mean_us":1700.0,"max_us":9000.0}
"""


class WrkTests(SynchronousTestCase):
    def test_parse_output(self) -> None:
        result = wrk.parse_output(WRK_OUTPUT)
        self.assertEqual(result.requests, 30000)
        self.assertEqual(result.rps, 15000.0)
        self.assertEqual((result.non_2xx, result.socket_errors), (7, 3))
        self.assertAlmostEqual(result.p99_ms, 4.2005)
        self.assertEqual(result.as_dict()["rps"], 15000.0)

    def test_output_without_our_line(self) -> None:
        self.assertRaises(
            ValueError, wrk.parse_output, "unable to connect to 127.0.0.1:1 Connection refused\n"
        )

    def test_scripts(self) -> None:
        self.assertIn("done = function", wrk.get_script())
        rotating = wrk.rotating_get_script(["/bazar/info/0", "/bazar/info/1"])
        self.assertIn('local paths = {"/bazar/info/0", "/bazar/info/1"}', rotating)
        post = wrk.post_script('{"quantity":1}', ["/bazar/purchase/0"])
        self.assertIn('wrk.method = "POST"', post)
        self.assertIn('wrk.body = "{\\"quantity\\":1}"', post)
        self.assertIn("application/json", post)
        self.assertIn('"/bazar/search/x-" .. tid', wrk.unique_get_script("/bazar/search/x-"))

    def test_command_is_bounded(self) -> None:
        args = wrk.command("wrk", "http://127.0.0.1:1/", Path("s.lua"), threads=2, connections=50, duration=5)
        self.assertEqual(args[:4], ["wrk", "-t2", "-c50", "-d5s"])
        self.assertIn("--timeout", args)
        self.assertEqual(args[-1], "http://127.0.0.1:1/")


def usage_error(test: SynchronousTestCase, parse: Any, *argv: str) -> str:
    """What ``parse(argv)`` printed as it exited with status 2 (argparse's usage error)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), test.assertRaises(SystemExit) as raised:
        parse(list(argv))
    test.assertEqual(raised.exception.code, 2)
    return stderr.getvalue()


class ArgumentTests(SynchronousTestCase):
    def parse_error(self, *argv: str) -> str:
        return usage_error(self, options.parse_args, *argv)

    def test_defaults(self) -> None:
        """By default: 1,000 samples per figure, into bench-results/, every experiment, own clusters."""
        args = options.parse_args([])
        self.assertEqual(args.samples, 1000)
        self.assertEqual(args.out, Path("bench-results"))
        self.assertEqual(args.experiments, EXPERIMENTS)
        self.assertIsNone(args.url)
        settings = options.settings_from(args)
        self.assertEqual(settings.probabilities, (0.0, 0.2, 0.4, 0.6, 0.8))
        self.assertEqual(settings.concurrency, 5)

    def test_options(self) -> None:
        args = options.parse_args(
            [
                "--url",
                "http://127.0.0.1:5000/",
                "--url-nocache",
                "http://localhost:5001",
                "--samples",
                "20",
                "--experiments",
                "sweep,latency",
                "--probabilities",
                "0,0.5,1",
                "--duration",
                "1.5",
            ]
        )
        self.assertEqual(args.url, "http://127.0.0.1:5000")
        self.assertEqual(args.samples, 20)
        self.assertEqual(args.experiments, ("latency", "sweep"))  # the report's order
        self.assertEqual(args.probabilities, (0.0, 0.5, 1.0))
        self.assertEqual(args.duration, 1.5)

    def test_bad_arguments(self) -> None:
        self.assertIn("at least 1", self.parse_error("--samples", "0"))
        self.assertIn("within 0..1", self.parse_error("--probabilities", "0.5,2"))
        self.assertIn("unknown experiment", self.parse_error("--experiments", "latency,nope"))
        self.assertIn("127.0.0.1", self.parse_error("--url", "http://example.com:5000"))
        self.assertIn("needs --url", self.parse_error("--url-nocache", "http://127.0.0.1:5001"))
        self.assertIn("needs --url", self.parse_error("--secret-file", "secret"))
        self.assertIn("more than 0", self.parse_error("--memory-seconds", "0"))

    def test_frontend_counts(self) -> None:
        """The frontends experiment's counts: 1, 2, 4 unless told; sorted, each once, 1..64."""
        self.assertEqual(options.settings_from(options.parse_args([])).frontends, (1, 2, 4))
        args = options.parse_args(["--frontends", "4,1,1"])
        self.assertEqual(options.settings_from(args).frontends, (1, 4))
        self.assertIn("within 1..64", self.parse_error("--frontends", "0,2"))
        self.assertIn("integers", self.parse_error("--frontends", "two"))

    def test_memory_options(self) -> None:
        """The memory experiment is part of "all"; its run is bounded by requests and by seconds."""
        self.assertIn("memory", EXPERIMENTS)
        defaults = options.settings_from(options.parse_args([]))
        self.assertIsNone(defaults.memory_requests)  # 60 x --samples
        self.assertEqual(defaults.memory_seconds, 30.0)
        args = options.parse_args(
            [
                *("--experiments", "memory", "--memory-requests", "500", "--memory-seconds", "4"),
                *("--url", "http://127.0.0.1:5000", "--secret-file", "bazar-data/secret"),
            ]
        )
        self.assertEqual(args.experiments, ("memory",))
        self.assertEqual(args.secret_file, Path("bazar-data/secret"))
        settings = options.settings_from(args)
        self.assertEqual((settings.memory_requests, settings.memory_seconds), (500, 4.0))

    def test_secret_file(self) -> None:
        directory = tempfile.TemporaryDirectory(prefix="test-bench-")
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "secret"
        path.write_text("s3cret\n")
        self.assertEqual(cli.read_secret(path), "s3cret")
        path.write_text("")
        self.assertRaises(options.UsageError, cli.read_secret, path)
        self.assertRaises(options.UsageError, cli.read_secret, path.with_name("missing"))


class MachineTests(SynchronousTestCase):
    def test_cpu_model(self) -> None:
        cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
        self.assertEqual(machine.cpu_model(cpuinfo), "AMD EPYC 7B13")
        self.assertEqual(machine.cpu_model("Hardware\t: BCM2835\n"), "BCM2835")
        self.assertIsNone(machine.cpu_model(""))

    def test_cpu_ticks(self) -> None:
        """Busy = user + nice + system + irq + softirq; idle and iowait are not; steal apart."""
        stat = "cpu  100 5 50 9000 30 2 3 7 0 0\ncpu0 50 2 25 4500 15 1 1 3 0 0\n"
        self.assertEqual(machine.cpu_ticks(stat), (160, 7))
        self.assertRaises(ValueError, machine.cpu_ticks, "intr 1 2 3\n")

    def test_cpu_watch_reports_shares(self) -> None:
        report_ = machine.CpuWatch().report()
        if report_ is not None:  # None only without /proc
            self.assertGreaterEqual(report_["cpu_seconds_others"], 0)
            self.assertIn("others_share", report_)

    def test_machine_info_has_what_results_json_promises(self) -> None:
        info = machine.machine_info(None)
        for key in ("cpu_model", "cpus", "python", "twisted", "date"):
            self.assertIn(key, info)


class ProgressTests(SynchronousTestCase):
    def test_durations(self) -> None:
        self.assertEqual(format_duration(0.42), "0.4 s")
        self.assertEqual(format_duration(12.4), "12 s")
        self.assertEqual(format_duration(185), "3 min 05 s")

    def test_status_line_eta_is_capped_by_the_time_limit(self) -> None:
        self.assertEqual(status_line("x", 250, 1000, 1.0), "x: 250/1,000 (25 %), 1.0 s, ETA 3.0 s")
        self.assertEqual(status_line("x", 250, 1000, 1.0, limit=2.0), "x: 250/1,000 (25 %), 1.0 s, ETA 1.0 s")

    def test_log_lines_when_not_a_terminal(self) -> None:
        """Without a terminal: a first line, one every 5 s, and a last line; no carriage returns."""
        now = [0.0]
        stream = io.StringIO()
        task = Progress(stream, interactive=False, clock=lambda: now[0]).task("[1/5 latency] info", 100)
        task.update(10)
        now[0] = 6.0
        task.update(50)
        task.finish("ok")
        lines = stream.getvalue().splitlines()
        self.assertEqual(lines[0], "[1/5 latency] info: 100 to go")
        self.assertTrue(lines[1].startswith("[1/5 latency] info: 50/100 (50 %), 6.0 s, ETA"))
        self.assertEqual(lines[2], "[1/5 latency] info: 50 in 6.0 s — ok")
        self.assertNotIn("\r", stream.getvalue())


class WorkloadTests(SynchronousTestCase):
    def test_ceiling_body_has_the_exact_size(self) -> None:
        for size in (2, 9, 10, 133, 4096):
            body = body_of_size(size)
            self.assertEqual(len(body), size)
            json.loads(body)
        self.assertRaises(ValueError, body_of_size, 1)

    def test_zipf_and_phases(self) -> None:
        weights = zipf_weights(4)
        self.assertEqual(weights[0], 1.0)
        self.assertEqual(weights, sorted(weights, reverse=True))
        keys = list("abcdefg")
        self.assertEqual(phase_order(keys, 0), keys)
        self.assertEqual(phase_order(keys, 1)[:3], ["d", "e", "f"])
        self.assertEqual(sorted(phase_order(keys, 2)), keys)


MIB = memory.MIB


def rss_samples(
    values_mib: list[float],
    warmup_mib: tuple[float, ...] = (),
    per_second: int = 4,
    requests_per_sample: int = 100,
) -> list[dict[str, Any]]:
    """Fabricated samples every 1/per_second s: the warm-up's, then the run's."""
    out = []
    for i, value in enumerate([*warmup_mib, *values_mib]):
        out.append(
            {
                "t": i / per_second,
                "phase": "warm-up" if i < len(warmup_mib) else "run",
                "requests": i * requests_per_sample,
                "rss_bytes": int(value * MIB),
                "open_fds": 20,
                "cache_entries": min(i, 5),
            }
        )
    return out


class MemoryVerdictTests(SynchronousTestCase):
    def test_noisy_but_bounded_is_flat(self) -> None:
        """RSS that goes up and down by a MiB (arenas taken and given back) is flat."""
        values = [50 + (0.9 if i % 3 == 0 else -0.4 if i % 3 == 1 else 0.2) for i in range(40)]
        result = memory.judge(rss_samples(values), capacity=5)
        self.assertEqual(result["verdict"], "flat", result["why"])
        self.assertAlmostEqual(result["start_mib"], 50.9, places=5)
        self.assertAlmostEqual(result["max_mib"], 50.9, places=5)
        self.assertAlmostEqual(result["end_mib"], 50.9, places=5)  # i = 39
        self.assertAlmostEqual(result["second_half_growth_mib"], 0.0)
        self.assertAlmostEqual(result["allowed_growth_mib"], 0.05 * 50.9, places=5)  # more than 2 MiB
        self.assertTrue(result["cache_within_capacity"])
        self.assertEqual(result["samples"], 40)

    def test_a_leak_is_growing(self) -> None:
        """A steady climb of 10 MiB over the run: the second half's peak is ~5 MiB above the first's."""
        values = [50 + 10 * i / 39 for i in range(40)]
        result = memory.judge(rss_samples(values), capacity=5)
        self.assertEqual(result["verdict"], "growing")
        self.assertAlmostEqual(result["growth_mib"], 10.0)
        self.assertAlmostEqual(result["growth_pct"], 20.0)
        self.assertAlmostEqual(result["second_half_growth_mib"], 10 * 20 / 39, places=6)
        self.assertIn("beyond", result["why"])
        # 10 MiB over 3,900 requests: the slope shows the leak per request.
        self.assertAlmostEqual(result["second_half_slope_bytes_per_request"], 10 * MIB / 3900, places=3)
        self.assertGreater(result["second_half_slope_kib_per_s"], 0)

    def test_threshold_is_the_larger_of_2_mib_and_5_percent(self) -> None:
        """At 100 MiB the allowance is 5 MiB: +4.9 MiB in the second half passes, +5.1 fails."""
        for step, verdict in ((4.9, "flat"), (5.1, "growing")):
            values = [100.0] * 20 + [100.0 + step] * 20
            result = memory.judge(rss_samples(values), capacity=5)
            self.assertEqual(result["allowed_growth_mib"], 5.0)
            self.assertEqual(result["verdict"], verdict, step)
        for step, verdict in ((1.9, "flat"), (2.1, "growing")):  # at 20 MiB, 2 MiB is the larger
            values = [20.0] * 20 + [20.0 + step] * 20
            self.assertEqual(memory.judge(rss_samples(values), capacity=5)["verdict"], verdict, step)

    def test_warm_up_growth_does_not_count(self) -> None:
        """Filling the cache and buffers in the warm-up raises RSS; only the run after it is judged."""
        result = memory.judge(rss_samples([70.0] * 20, warmup_mib=(40, 50, 60, 70)), capacity=5)
        self.assertEqual(result["verdict"], "flat")
        self.assertEqual(result["start_mib"], 70.0)
        self.assertEqual(result["growth_mib"], 0.0)
        self.assertEqual(result["samples"], 20)

    def test_a_late_jump_is_caught_a_early_one_is_not(self) -> None:
        """A step up in the first half is a new plateau (flat); the same step in the second is growth."""
        early = memory.judge(rss_samples([50.0] * 5 + [60.0] * 35), capacity=5)
        late = memory.judge(rss_samples([50.0] * 35 + [60.0] * 5), capacity=5)
        self.assertEqual(early["verdict"], "flat")
        self.assertEqual(late["verdict"], "growing")
        self.assertEqual(early["growth_mib"], late["growth_mib"])  # end - start cannot tell them apart

    def test_too_few_samples_is_inconclusive(self) -> None:
        result = memory.judge(rss_samples([50.0, 50.0, 51.0, 51.0]), capacity=5)
        self.assertEqual(result["verdict"], "inconclusive")
        self.assertIn("fewer than 3", result["why"])
        self.assertEqual(result["max_mib"], 51.0)
        self.assertEqual(memory.judge([], capacity=5)["verdict"], "inconclusive")

    def test_cache_over_capacity(self) -> None:
        samples = rss_samples([50.0] * 10)
        self.assertTrue(memory.judge(samples, capacity=5)["cache_within_capacity"])
        samples[4]["cache_entries"] = 6
        result = memory.judge(samples, capacity=5)
        self.assertFalse(result["cache_within_capacity"])
        self.assertEqual(result["cache_entries_max"], 6)
        self.assertIsNone(memory.judge(samples, capacity=None)["cache_within_capacity"])

    def test_detectable_leak(self) -> None:
        """The allowance spread over the second half's requests: the smallest leak the run catches."""
        result = memory.judge(rss_samples([50.0] * 40, requests_per_sample=1000), capacity=5)
        self.assertEqual(result["second_half_requests"], 20_000)
        self.assertEqual(result["allowed_growth_mib"], 2.5)  # 5 % of 50 MiB
        self.assertAlmostEqual(result["detectable_leak_bytes_per_request"], 2.5 * MIB / 20_000)

    def test_slope(self) -> None:
        self.assertAlmostEqual(memory.slope([0, 1, 2, 3], [1, 3, 5, 7]) or 0, 2.0)
        self.assertIsNone(memory.slope([1, 1], [1, 2]))
        self.assertIsNone(memory.slope([1], [1]))


class MemoryReadingTests(SynchronousTestCase):
    def test_unlabelled_metrics(self) -> None:
        text = (
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            "# TYPE process_resident_memory_bytes gauge\n"
            "process_resident_memory_bytes 6.2914560e+07\n"
            'bazar_requests_total{method="GET",route="/",status="200"} 3.0\n'
            "bazar_cache_entries 5.0\n"
            "garbage\n"
        )
        values = memory.parse_unlabelled(text)
        self.assertEqual(values, {"process_resident_memory_bytes": 62914560.0, "bazar_cache_entries": 5.0})

    def test_proc_status(self) -> None:
        self.assertEqual(
            memory.status_rss("Name:\tpython\nVmRSS:\t   61440 kB\nVmSwap: 0 kB\n"), 61440 * 1024
        )
        self.assertIsNone(memory.status_rss("Name:\tkthreadd\n"))  # kernel threads have none

    def test_own_process(self) -> None:
        """This test's process: its RSS, its descriptors, and the port it listens on lead to it."""
        if not Path("/proc/self/status").exists():
            raise SkipTest("no /proc")
        rss = memory.proc_rss(os.getpid())
        self.assertIsNotNone(rss)
        self.assertGreater(rss or 0, MIB)
        self.assertGreater(memory.proc_open_fds(os.getpid()) or 0, 0)
        self.assertIsNone(memory.proc_rss(-1))
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        self.assertEqual(listening_pid(port), os.getpid())
        listener.close()
        self.assertIsNone(listening_pid(port))


class MemoryPlanTests(SynchronousTestCase):
    def test_mix_of_requests(self) -> None:
        """Searches name a topic no other request names; writes move a lab book's price by a cent or two."""
        prices = {0: 10.0, 1: 20.5}
        plan = memory_plan(1, "bench-memory-", [0, 1], prices)
        calls = [plan(i) for i in range(5000)]
        searches = [c for c in calls if c.op == "search"]
        writes = [c for c in calls if c.op == "update_price"]
        infos = [c for c in calls if c.op == "info"]
        self.assertEqual(len(searches) + len(writes) + len(infos), 5000)
        self.assertEqual(len({c.path for c in searches}), len(searches))  # every search a new key
        self.assertTrue(all(c.path.startswith("/bazar/search/bench-memory-") for c in searches))
        self.assertLess(abs(len(searches) / 5000 - MEMORY_SEARCH_SHARE), 0.03)
        self.assertLess(abs(len(writes) / 5000 - MEMORY_WRITE_SHARE), 0.01)
        for call in writes:
            book_id = int(call.path.rsplit("/", 1)[1])
            new = json.loads(call.body or b"")["price"]
            self.assertIn(round(new - prices[book_id], 2), (0.01, 0.02))
        self.assertEqual({c.path for c in infos}, {"/bazar/info/0", "/bazar/info/1"})
        again = memory_plan(1, "bench-memory-", [0, 1], prices)
        self.assertEqual([again(i) for i in range(100)], calls[:100])  # seeded: reproducible


def memory_result(verdict_samples: list[dict[str, Any]]) -> dict[str, Any]:
    figures = memory.judge(verdict_samples, capacity=5)
    figures.update(requests=3900, run_seconds=9.75, source="metrics")
    return {
        "caption": "The caption.",
        "memory": figures,
        "samples": verdict_samples,
        "rows": [
            {"operation": "search", "n": 2730, "errors": 0, "avg_ms": 1.5, "p99_ms": 6.0, "hit_ratio": 0.0}
        ],
        "notes": ["memory read from metrics"],
    }


class MemoryReportTests(SynchronousTestCase):
    def test_table(self) -> None:
        text = report.memory_table(memory_result(rss_samples([50 + 10 * i / 39 for i in range(40)])))
        self.assertIn("| verdict ", text)
        self.assertIn("**growing**", text)
        self.assertIn("50.0 MiB", text)  # after the warm-up
        self.assertIn("60.0 MiB", text)  # max and end
        self.assertIn("+10.00 MiB (+20.0 %)", text)
        self.assertIn("+5.13 MiB (+9.3 %), allowed 2.74 MiB", text)  # 5 % of the first half's 54.9
        self.assertIn("5 (capacity 5)", text)
        self.assertIn("3,900 in 9.8 s (400 req/s)", text)
        self.assertIn("| search ", text)
        report_text = report.markdown_report(
            {"experiments": {"memory": memory_result(rss_samples([50.0] * 8))}}
        )
        self.assertIn("#### 6. The front end's memory under a long run", report_text)
        self.assertIn("**flat**", report_text)

    def test_over_capacity_is_shown(self) -> None:
        samples = rss_samples([50.0] * 8)
        samples[3]["cache_entries"] = 9
        self.assertIn("9 (capacity 5) — OVER CAPACITY", report.memory_table(memory_result(samples)))

    def test_plot(self) -> None:
        plt = plots.load_pyplot()
        if plt is None:
            raise SkipTest("matplotlib is not installed")
        directory = tempfile.TemporaryDirectory(prefix="test-bench-")
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "memory.png"
        plots.plot_memory(plt, memory_result(rss_samples([50.0] * 20, warmup_mib=(40, 45))), path)
        self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")


class CpuTests(SynchronousTestCase):
    def test_note_names_each_process_and_the_sum(self) -> None:
        row = {"cache": "on", "p50_ms": 12.0, "cpu_ms_frontend": 2.0, "cpu_ms_order-1": 3.25, "n": 10}
        note = cpu_note(row, cores=2)
        self.assertIn("frontend 2.00, order-1 3.25; 5.2 ms in all, on 2 cores", note)
        self.assertIn("for a p50 of 12.0 ms (no less than 2.6 ms even if the 2 cores were never idle)", note)

    def test_reads_are_the_catalogs_data_gets(self) -> None:
        """Books, lookups and searches count; writes, status probes and other routes do not."""
        text = "\n".join(
            [
                "# HELP bazar_requests_total HTTP requests answered",
                'bazar_requests_total{method="GET",route="/catalog/books/:id",status="200"} 3.0',
                'bazar_requests_total{method="GET",route="/catalog/lookup",status="200"} 5.0',
                'bazar_requests_total{method="GET",route="/catalog/search/:arg",status="200"} 7.0',
                'bazar_requests_total{method="PUT",route="/catalog/books/:id/price",status="200"} 11.0',
                'bazar_requests_total{method="GET",route="/internal/status",status="200"} 13.0',
            ]
        )
        self.assertEqual(count_reads([text, text]), 30)
        self.assertIsNone(count_reads(['bazar_requests_total{method="GET",route="/catalog/lookup"} x']))

    def test_unknown_without_the_secret(self) -> None:
        """A cluster given by --url: no secret, so no /metrics, so no figure (rather than a guess)."""
        cluster = ClusterInfo(label="cache", url="http://127.0.0.1:1", cache_size=5)
        self.assertIsNone(cpu_seconds(cluster))
        self.assertIsNone(catalog_reads(cluster))


CALL = wire.Request("", "POST", "/", b"{}")


class FloorTests(SynchronousTestCase):
    """The floor's processes (``bazar.bench.floor``): their arguments, what each does in what
    order, and its table. ``tests/integration/test_bench.py`` runs the chain for real."""

    def parse_error(self, *argv: str) -> str:
        return usage_error(self, floor.parse_args, *argv)

    def test_arguments(self) -> None:
        args = floor.parse_args(["catalog", "--port", "1", "--peer", "2", "--peer", "3", "--peer", "4"])
        self.assertEqual((args.role, args.port, args.peer, args.durable), ("catalog", 1, [2, 3, 4], None))
        self.assertEqual(floor.parse_args(["follower", "--port", "1", "--durable", "d"]).durable, Path("d"))
        self.assertIn("order takes 3 --peer, not 1", self.parse_error("order", "--port", "1", "--peer", "2"))
        self.assertIn("follower takes 0 --peer", self.parse_error("follower", "--port", "1", "--peer", "2"))
        self.assertIn("it needs one", self.parse_error("front", "--port", "1", "--peer", "2"))
        self.assertIn("for the front end", self.parse_error("follower", "--port", "1", "--channel-port", "2"))

    def test_a_sequencer_writes_then_calls_its_peers_then_answers(self) -> None:
        """The catalog sequencer's order, as Bazar's: its own commit, then every peer at once,
        then the answer; a follower only commits."""
        events: list[str] = []
        commit: Deferred[None] = Deferred()
        calls: Deferred[None] = Deferred()

        class Recorder:
            def write(self) -> Deferred[None]:
                events.append("write")
                return commit

            def call_all(self, ports: list[int]) -> Deferred[None]:
                events.append(f"call {ports}")
                return calls

        recorder: Any = Recorder()
        answer = floor.Responder(recorder, recorder, [2, 3, 4]).answer(CALL)
        answers: list[Any] = []
        answer.addCallback(answers.append)
        self.assertEqual(events, ["write"])
        commit.callback(None)
        self.assertEqual((events, answers), (["write", "call [2, 3, 4]"], []))
        calls.callback(None)
        self.assertEqual(answers, [floor.ANSWER])

        events.clear()
        commit = Deferred()
        follower = floor.Responder(recorder, recorder, []).answer(CALL)
        commit.callback(None)
        self.assertEqual((events, self.successResultOf(follower)), (["write"], floor.ANSWER))

    def test_without_durable_a_write_is_nothing(self) -> None:
        self.assertIsNone(self.successResultOf(floor.Durable(None).write()))

    def test_table(self) -> None:
        result = {
            "rows": [
                {"chain": "floor: the messages alone", "n": 10, "errors": 0, "p50_ms": 2.5, "of_floor": 0.5},
                {"chain": "Bazar, cache on", "n": 10, "errors": 1, "p50_ms": 7.5, "of_floor": 1.5},
            ]
        }
        lines = report.floor_table(result).splitlines()
        self.assertEqual(len(lines), 4)
        self.assertIn("of floor", lines[0])
        self.assertTrue(lines[3].startswith("| Bazar, cache on"))
        cells = [cell.strip() for cell in lines[3].strip("|").split("|")]
        missing = report.MISSING
        self.assertEqual(cells, ["Bazar, cache on", "10", "1", missing, "7.50", missing, "1.5x"])
        self.assertIn("floor", EXPERIMENTS)

    def test_the_order_sequencer_answers_after_its_followers(self) -> None:
        """Over the channel, as Bazar's order sequencer takes the front end's purchases: the catalog
        sequencer, its own write, its followers, then the answer; a peer's failure fails it."""
        calls: list[Any] = []

        class Peers:
            def __init__(self, answer: Deferred[Any]) -> None:
                self.answer = answer

            def call(self, port: int) -> Deferred[Any]:
                calls.append(port)
                return self.answer

            def call_all(self, ports: list[int]) -> Deferred[Any]:
                calls.append(ports)
                return succeed(None)

        peers: Any = Peers(succeed(None))
        order = floor.OrderSequencer(floor.Durable(None), peers, 7, [8, 9])
        self.assertEqual(self.successResultOf(order.answer(CALL)), floor.ORDER)
        self.assertEqual(calls, [7, [8, 9]])
        peers.answer = fail(ConnectionDone("the catalog sequencer went away"))
        self.failureResultOf(order.answer(CALL), ConnectionDone)

    def test_the_front_end_passes_the_answer_on_and_500_if_the_call_fails(self) -> None:
        """The client's POST goes to the order sequencer over the channel (``Peers.call``), as Bazar's
        front end sends its writes over the internal channel; its answer's body comes back."""
        sent: list[tuple[int, bytes]] = []
        answer: Deferred[Any] = succeed(floor.ORDER)

        class Peers:
            def call(self, port: int, body: bytes) -> Deferred[Any]:
                sent.append((port, body))
                return answer

        front = floor.FrontEnd(cast(Any, Peers()), 5)
        request = DummyRequest([b""])
        request.method = b"POST"
        self.assertEqual(front.render(request), NOT_DONE_YET)
        self.assertEqual((sent, request.finished), ([(5, b'{"quantity":1}')], 1))
        self.assertEqual(b"".join(request.written), b'{"ok":true}')

        answer = fail(ConnectionDone("the order sequencer went away"))
        request = DummyRequest([b""])
        request.method = b"POST"
        front.render(request)
        self.assertEqual((request.responseCode, request.finished), (500, 1))
        self.assertEqual(len(self.flushLoggedErrors(ConnectionDone)), 1)

    def test_peers_connect_at_the_first_call(self) -> None:
        """Calls made while the first connection is under way wait for it and go on it; one
        connection per port; a connection that fails fails the calls that waited for it."""
        connecting: list[Deferred[Any]] = []

        class Connection:
            def __init__(self) -> None:
                self.bodies: list[bytes] = []

            def call(self, request: wire.Request) -> Deferred[Any]:
                self.bodies.append(request.body)
                return succeed(floor.ANSWER)

        class Lazy(floor.Peers):
            def _connect(self, port: int) -> Deferred[Any]:
                connecting.append(Deferred())
                return connecting[-1]

        peers = Lazy(cast(Any, None))
        first, second = peers.call(5, b"1"), peers.call(5, b"2")
        self.assertEqual(len(connecting), 1)
        self.assertNoResult(first)
        connection = Connection()
        connecting[0].callback(connection)
        self.assertEqual([self.successResultOf(d) for d in (first, second)], [floor.ANSWER] * 2)
        self.successResultOf(peers.call(5, b"3"))
        self.assertEqual((connection.bodies, len(connecting)), ([b"1", b"2", b"3"], 1))

        lost = peers.call(6)
        connecting[1].errback(ConnectionDone("refused"))
        self.failureResultOf(lost, ConnectionDone)
        self.assertNotIn(6, peers.connections)


class ElectionsNoteTests(SynchronousTestCase):
    def test_counts_every_cluster_and_role(self) -> None:
        """The note adds up the elections of every cluster and role and names each."""
        note = cli.elections_note(
            {"cache": {"catalog": 0, "order": 1}, "nocache": {"catalog": 0, "order": 0}}
        )
        self.assertEqual(
            note,
            "elections during the run, where no fault was injected: 1 "
            "(cache: catalog 0, order 1; nocache: catalog 0, order 0)",
        )


class InterruptTests(SynchronousTestCase):
    """``bazar-bench`` can always be interrupted, so that it stops the clusters it started."""

    def setUp(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))

    def test_sigint_even_when_ignored(self) -> None:
        """A background job starts with SIGINT ignored: Ctrl-C (or kill -INT) interrupts all the same."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cli.handle_interrupts()
        self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)

    def test_sigterm_interrupts_too(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        cli.handle_interrupts()
        with self.assertRaises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)  # handled before os.kill returns to us

    def test_a_sigterm_handler_of_the_callers_is_kept(self) -> None:
        def mine(signum: int, frame: Any) -> None:
            pass

        signal.signal(signal.SIGTERM, mine)
        cli.handle_interrupts()
        self.assertIs(signal.getsignal(signal.SIGTERM), mine)


class HangPercentileTests(SynchronousTestCase):
    def test_nearest_rank(self) -> None:
        """``bazar.bench.hang.percentile``: a value of the list, by nearest rank; p99 of few is their max."""
        values = [float(v) for v in range(100, 0, -1)]
        self.assertEqual(hang.percentile(values, 0.5), 51.0)
        self.assertEqual(hang.percentile(values, 0.99), 99.0)
        self.assertEqual(hang.percentile([1.3, 1.1, 1.2], 0.99), 1.3)

"""``bazar-bench`` end to end: it starts its own clusters, measures, writes its files, stops everything.

Tiny sample counts keep it short; the point is that every experiment runs against real
processes, that the outputs exist and parse, that the consistency experiment finds no
violation, and that no process the benchmark started outlives it — also after Ctrl-C.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bazar.bench.cluster import start_floor
from bazar.launch import Cluster, Processes, get_json, group_alive
from tests.integration.cluster import kill_processes_under

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 90.0
# Every experiment with --samples 20 --duration 1, the frontends experiment with 1 and 2 front
# ends (the default run: 5-10 min).
TINY_RUN_TIMEOUT = 240.0


def bench_command() -> list[str]:
    """The console script when installed next to this interpreter, else ``python -m bazar.bench``."""
    script = Path(sys.executable).with_name("bazar-bench")
    if script.exists():
        return [str(script)]
    found = shutil.which("bazar-bench")
    return [found] if found else [sys.executable, "-m", "bazar.bench"]


@pytest.fixture(autouse=True)
def nothing_left_behind(tmp_path: Path) -> Iterator[None]:
    """However the test ends, nothing it started outlives it. The benchmark's clusters run in
    sessions of their own (so killing the benchmark's group would miss them), but everything
    runs under ``tmp_path`` (the benchmark's temporary directory is made there): that finds it."""
    yield
    left = kill_processes_under(tmp_path)
    assert not left, f"processes outlived the test, killed now: {left}"


def start(tmp_path: Path, *args: str, ignore_sigint: bool = False) -> subprocess.Popen[str]:
    """``bazar-bench args`` in ``tmp_path``, its temporary directory there too. With
    ``ignore_sigint``, as a shell starts a background job: SIGINT ignored (which Python's own
    Ctrl-C handling then leaves ignored)."""
    command = [*bench_command(), *args]
    if ignore_sigint:
        command = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
    return subprocess.Popen(
        command,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)},
        start_new_session=True,  # so a test failure can kill whatever it left, by group
    )


def finish(process: subprocess.Popen[str], timeout: float = RUN_TIMEOUT) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # it stops the clusters it started (their own sessions)
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            _, err = process.communicate()
        raise AssertionError(f"bazar-bench ran over {timeout:.0f} s; interrupted\n{err[-3000:]}") from None


def cluster_pids(stderr: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"front end at http://127\.0\.0\.1:\d+ \(pid (\d+)\)", stderr)]


def assert_gone(pids: list[int]) -> None:
    """Each cluster process, and every replica in its process group, has exited."""
    deadline = time.monotonic() + 10
    for pid in pids:
        while group_alive(pid):
            assert time.monotonic() < deadline, f"cluster {pid} or one of its replicas is still running"
            time.sleep(0.05)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert rows, f"{path.name} has no rows"
    return rows


def test_bench_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results"
    process = start(
        tmp_path,
        *("--samples", "20", "--duration", "1", "--wrk-connections", "10", "--frontends", "1,2"),
        *("--out", str(out)),
    )
    # Within TINY_RUN_TIMEOUT, or the sample counts were not honoured (the defaults take minutes):
    # about 50 s alone on 2 cores, over a minute with other test runs on the machine.
    stdout, stderr = finish(process, TINY_RUN_TIMEOUT)
    assert process.returncode == 0, stderr[-3000:]

    pids = cluster_pids(stderr)
    assert len(pids) == 2, stderr  # one cluster with the cache, one with cache_size = 0
    assert_gone(pids)
    assert "stopped bazar-cluster-nocache" in stderr

    # The table, in Markdown, on stdout.
    assert "#### 1. Response time with and without the cache (ms)" in stdout
    assert "| request " in stdout and "| info " in stdout and "| buy " in stdout

    results = json.loads((out / "results.json").read_text())
    machine = results["machine"]
    assert machine["cpus"] >= 1 and machine["python"] and machine["twisted"] and machine["date"]
    experiments = results["experiments"]
    assert list(experiments) == [
        "latency",
        "consistency",
        "sweep",
        "lru",
        "throughput",
        "memory",
        "floor",
        "writes",
        "frontends",
    ]

    latency = experiments["latency"]
    cells = {(r["operation"], r["cache"]): r for r in latency["rows"]}
    assert set(cells) == {(op, cache) for op in ("info", "search", "buy") for cache in ("on", "off")}
    for row in cells.values():
        assert row["n"] == 20 and row["errors"] == 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"], row
    for cache in ("on", "off"):  # where a purchase's CPU time went, process by process
        cpu = {k: v for k, v in cells["buy", cache].items() if k.startswith("cpu_ms_")}
        assert len(cpu) == 7 and all(ms > 0 for ms in cpu.values()), cpu
    assert "CPU time per purchase (cache on" in stdout
    assert cells["info", "on"]["hit_ratio"] == 1.0  # the warmed working set fits in the cache
    assert cells["info", "off"]["hit_ratio"] == 0.0  # cache_size = 0: every read is a miss

    consistency = experiments["consistency"]
    assert consistency["samples"] == 20
    assert consistency["violations"] == 0, consistency["counts"]
    assert consistency["counts"]["not_cached_before_write"] == 0, consistency["counts"]

    sweep = experiments["sweep"]
    assert {r["p"] for r in sweep["rows"]} == {0.0, 0.2, 0.4, 0.6, 0.8}
    assert sum(r["status_409"] for r in sweep["rows"]) == 0  # stock was topped up

    lru = experiments["lru"]
    assert len(lru["phases"]) == 3 and lru["snapshots"]
    last = lru["snapshots"][-1]
    assert last["hits"] + last["misses"] > 0 and last["size"] <= last["capacity"]

    for name in ("latency", "consistency", "sweep", "lru"):
        read_csv(out / f"{name}.csv")
        read_csv(out / f"{name}_samples.csv")
    assert {"t", "hits", "misses", "evictions", "invalidations"} <= set(read_csv(out / "lru.csv")[0])

    throughput = experiments["throughput"]
    if shutil.which("wrk"):
        workloads = [r["workload"] for r in throughput["rows"]]
        assert workloads[0].startswith("ceiling"), workloads
        assert any(w.startswith("cache hits") for w in workloads)
        assert any(w.startswith("purchases") for w in workloads)
        assert all(r["rps"] > 0 for r in throughput["rows"])
        # The ceiling, hits and misses ran in three interleaved rounds; the rest once.
        assert [r.get("rounds") for r in throughput["rows"]] == [3, 3, 3, None, None], throughput["rows"]
        assert throughput["rows"][0]["of_ceiling"] == 1.0
        assert len(throughput["rows"][2]["of_hits_rounds"]) == 3
        runs = read_csv(out / "throughput_samples.csv")
        assert sorted((r["round"], r["workload"].split(":")[0]) for r in runs) == sorted(
            (str(n), w) for n in (1, 2, 3) for w in ("ceiling", "cache hits", "misses (cache_size = 0)")
        )
        read_csv(out / "throughput.csv")
    else:
        assert "apt-get install -y wrk" in throughput["skipped"]

    check_memory(experiments["memory"], out, requests=20 * 60)
    assert "#### 6. The front end's memory under a long run" in stdout

    floor = experiments["floor"]
    assert [r["chain"] for r in floor["rows"]] == [
        "floor: the messages alone",
        "floor: the messages + one durable row per write",
        "Bazar, cache on",
    ]
    for row in floor["rows"]:
        assert row["n"] == 20 and row["errors"] == 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"], row
    assert floor["rows"][1]["of_floor"] == 1.0
    assert any(note.startswith("Bazar's purchase p50 is") for note in floor["notes"]), floor["notes"]
    assert "#### 7. A purchase's floor: its messages without Bazar's work" in stdout
    assert len(read_csv(out / "floor_samples.csv")) == 3 * 20

    writes = experiments["writes"]  # purchases, then price updates, at 1, 10 and 50 clients
    assert [(r["op"], r["clients"]) for r in writes["rows"]] == [
        (op, clients) for op in ("purchase", "price update") for clients in (1, 10, 50)
    ]
    for row in writes["rows"]:
        assert row["writes_per_s"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"], row
        assert row["cpu_ms"] > 0, row  # the seven processes' CPU time per 2xx write
    assert not floor_processes(), "a process of the floor outlived the benchmark"

    frontends = experiments["frontends"]
    if shutil.which("wrk"):
        # 1 and 2 front ends on one port, each beside as many bare processes: three rounds each.
        rows = {row["frontends"]: row for row in frontends["rows"]}
        assert sorted(rows) == [1, 2], frontends["rows"]
        for row in rows.values():
            for workload in ("ceiling", "hits", "misses"):
                assert len(row[f"{workload}_rps_rounds"]) == 3 and row[f"{workload}_rps"] > 0, row
            assert 0 < row["hits_of_ceiling"] and 0 < row["misses_of_ceiling"], row
            assert row["hit_fraction"] > 0.9, row  # the hits' run was served from the caches
        assert rows[1]["hits_speedup"] == 1.0
        prices = [(p["frontends"], p["n"], p["errors"]) for p in frontends["prices"]]
        assert prices == [(1, 20, 0), (2, 20, 0)], frontends["prices"]
        assert "#### 9. Several front ends on one port" in stdout
        assert len(read_csv(out / "frontends_samples.csv")) == 2 * 3 * 3
    else:
        assert "apt-get install -y wrk" in frontends["skipped"]

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in stderr
        assert stderr.splitlines()[-1].endswith("(results.json, *.csv, results.md)"), stderr
    else:
        assert stderr.splitlines()[-1].endswith("(results.json, *.csv, *.png, results.md)"), stderr
        for name in ("latency", "sweep", "lru", "consistency", "memory"):
            assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if shutil.which("wrk"):
            assert (out / "throughput.png").exists()
            assert (out / "frontends.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.md").read_text().startswith("Machine:")


def floor_processes() -> list[int]:
    """PIDs of processes running ``bazar.bench.floor``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"bazar.bench.floor" in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:  # it exited meanwhile
            continue
    return pids


def test_the_floor_chain_writes_once_at_every_replica(tmp_path: Path) -> None:
    """The floor passes each purchase through all seven processes: after N purchases, each of
    the six replicas of the durable chain has committed exactly N rows."""
    processes = Processes()
    try:
        started, port = start_floor(processes, tmp_path, durable=True)
        assert len(started) == 7
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _ in range(5):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b"{}", method="POST")
            with opener.open(request, timeout=5) as response:
                assert response.status == 200 and json.loads(response.read()) == {"ok": True}
        replicas = sorted(tmp_path.glob("floor-*/floor.sqlite"))
        names = ("catalog-1", "catalog-2", "catalog-3", "order-1", "order-2", "order-3")
        assert [p.parent.name for p in replicas] == [f"floor-{name}" for name in names]
        for path in replicas:
            with contextlib.closing(sqlite3.connect(path)) as db:
                assert db.execute("SELECT COUNT(*) FROM log").fetchone() == (5,), path
    finally:
        processes.stop_all()
    assert not set(floor_processes()) & {p.pid for p in started}


def check_memory(memory: dict[str, Any], out: Path, requests: int, source: str = "metrics") -> None:
    """The memory experiment ran its bounded load, sampled the front end's RSS and wrote its files."""
    figures = memory["memory"]
    assert figures["source"].startswith(source), figures
    assert figures["requests"] == requests, figures  # the request bound, well within the time bound
    assert figures["verdict"] in ("flat", "growing", "inconclusive"), figures
    assert 1 < figures["start_mib"] <= figures["max_mib"] < 4096, figures
    assert figures["cache_within_capacity"] is True, figures  # never more entries than cache_size
    assert figures["cache_entries_max"] == figures["cache_capacity"] == 5, figures  # and it filled up
    ops = {row["operation"]: row for row in memory["rows"]}
    assert set(ops) == {"search", "info", "update_price"}, ops
    assert all(row["errors"] == 0 for row in ops.values()), ops
    assert ops["search"]["hit_ratio"] == 0.0  # a new key every time
    assert memory["cache_counters"]["evictions"] > 0  # far more keys than entries
    samples = read_csv(out / "memory.csv")
    assert {"t", "phase", "requests", "rss_bytes", "cache_entries"} <= set(samples[0])
    assert sum(1 for row in samples if row["phase"] == "run") >= 2
    assert {row["operation"] for row in read_csv(out / "memory_requests.csv")} == set(ops)


def test_memory_against_url(cluster: Cluster, tmp_path: Path) -> None:
    """Against --url: the front end's /metrics with --secret-file, else /proc of the process on its
    port; the prices it changed are put back."""
    before = cluster.status()
    books = {b["id"]: b["price"] for b in json_get(cluster.frontend + "/bazar/info/all")}
    secret = tmp_path / "secret"
    secret.write_text(cluster.secret + "\n")
    common = ["--url", cluster.frontend, "--experiments", "memory", "--samples", "10", "--no-plots"]
    for extra, source in ((["--secret-file", str(secret)], "metrics"), ([], "/proc/")):
        out = tmp_path / f"results-{source.strip('/')}"
        process = start(tmp_path, *common, *extra, "--memory-seconds", "20", "--out", str(out))
        stdout, stderr = finish(process)
        assert process.returncode == 0, stderr[-3000:]
        assert "#### 6. The front end's memory under a long run" in stdout
        # Its last line names the files it wrote: no plots with --no-plots.
        assert stderr.splitlines()[-1].endswith(f"results in {out}/ (results.json, *.csv, results.md)"), (
            stderr
        )
        memory = json.loads((out / "results.json").read_text())["experiments"]["memory"]
        check_memory(memory, out, requests=10 * 60, source=source)
        assert "front end at" not in stderr  # it started no cluster of its own
        if source == "/proc/":
            assert memory["memory"]["source"] == f"/proc/{cluster.pid_of('frontend')}/status"
    assert {b["id"]: b["price"] for b in json_get(cluster.frontend + "/bazar/info/all")} == books
    assert cluster.status()["cache"]["capacity"] == before["cache"]["capacity"]


def json_get(url: str) -> Any:
    code, body = get_json(url)
    assert code == 200, (url, code, body)
    return body


def test_interrupt_stops_every_cluster(tmp_path: Path) -> None:
    """Ctrl-C in the middle of a measurement: exit status 130, and no cluster process left;
    also when started as a background job would be, with SIGINT ignored."""
    process = start(
        tmp_path,
        "--samples",
        "1000000",
        "--experiments",
        "latency",
        "--max-seconds",
        "30",
        "--no-plots",
        "--out",
        str(tmp_path / "results"),
        ignore_sigint=True,
    )
    seen = ""
    deadline = time.monotonic() + 90  # two clusters to start: over 45 s on a loaded machine
    assert process.stderr is not None
    try:
        while "[1/1 latency] info, no cache" not in seen:
            line = process.stderr.readline()
            if not line or time.monotonic() > deadline:
                raise AssertionError(f"the benchmark did not start measuring:\n{seen}")
            seen += line
        process.send_signal(signal.SIGINT)
        _, rest = finish(process, timeout=45)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    stderr = seen + rest
    assert process.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr
    pids = cluster_pids(stderr)
    assert len(pids) == 2, stderr
    assert_gone(pids)


def test_the_channel_bench_measures_both_ends(tmp_path: Path) -> None:
    """``python -m bazar.bench.channel``: two real processes on loopback, each end's CPU per
    call and the rate in its table, and neither process left behind (``nothing_left_behind``)."""
    arguments = ["--calls", "200", "--concurrency", "4", "--rounds", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "bazar.bench.channel", *arguments],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| /")]
    assert len(rows) == 1, done.stdout
    both, caller, server, rate = (float(cell.split()[0]) for cell in rows[0].strip("|").split("|")[1:])
    assert caller > 0 and server > 0 and rate > 0, rows
    assert abs(both - (caller + server)) <= 1, rows

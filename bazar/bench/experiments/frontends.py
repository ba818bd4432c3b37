"""9. ``frontends``: 1, 2 and 4 front ends on one shared port (``bazar.shared_port``): wrk's
cache hits and misses per second through that port, each beside as many bare twisted.web
processes sharing a port (the ceiling scales with them); and a price update's latency with
the fewest and the most front ends (each write waits for every front end to drop its keys).

Why: several front ends are there to use several cores (docs/frontends.md); what they buy is
only visible next to what the same number of bare processes gets on this machine. Each count
gets a cluster of its own (started here, stopped before the next: idle processes cost on a
small machine); the ceiling, hits and misses run in turn, ``FRONTENDS_ROUNDS`` times, and each
round's hits are compared with that round's ceiling (a shared machine drifts within minutes).

The load: ``_drive``; the statistics: ``frontends_rows`` (pure); the words:
``frontends_caption``, ``frontends_notes``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.task import deferLater

from bazar.bench import wrk
from bazar.bench.cluster import ClusterInfo, frontends_cpu, processes_cpu, start_ceilings, start_cluster
from bazar.bench.experiments.context import Context, summary_row
from bazar.bench.experiments.throughput import lower_median
from bazar.bench.experiments.writes import PRICE, write_plan
from bazar.bench.load import Sample
from bazar.bench.stats import ratio
from bazar.launch import StartError

FRONTENDS_ROUNDS = 3
CEILING = "ceiling"
HITS = "hits"
MISSES = "misses"
WORKLOADS = (CEILING, HITS, MISSES)
PRICE_WARM_UP = 20  # price updates before the measured ones, on each cluster
PRICE_ROUNDS = 5  # alternate rounds of price updates on the two clusters
FRONTENDS_READY_SECONDS = 30.0  # every front end listed healthy, once the cluster is up


@dataclass
class Runs:
    wrk_args: str = ""
    size: int = 0
    # (front ends, round, workload) -> wrk's figures
    wrk: dict[tuple[int, int, str], dict[str, Any]] = field(default_factory=dict)
    prices: dict[int, dict[str, Any]] = field(default_factory=dict)  # front ends -> summary row
    problems: list[str] = field(default_factory=list)


# -- the load --------------------------------------------------------------------------------


async def _drive(ctx: Context, stage: str) -> Runs:
    s = ctx.settings
    measured = Runs(wrk_args=s.wrk_args)
    for count in s.frontends:
        directory = ctx.workdir / f"frontends-{count}"
        ctx.progress.say(f"{stage} starting a cluster with {count} front end(s) on one port ...")
        try:
            cluster = start_cluster(ctx.processes, directory, f"frontends-{count}", 5, frontends=count)
        except StartError as e:
            measured.problems.append(f"{count} front ends: no cluster: {e}")
            continue
        try:
            try:
                await _frontends_ready(ctx, cluster, count)
            except StartError as e:
                measured.problems.append(f"{count} front ends: {e}")
                continue
            await _rounds(ctx, stage, cluster, count, measured)
        finally:
            _stop(ctx, cluster)
    await _prices(ctx, stage, sorted({min(s.frontends), max(s.frontends)}), measured)
    return measured


def _stop(ctx: Context, cluster: ClusterInfo) -> None:
    ctx.forget(cluster)
    if cluster.process is not None:
        cluster.process.stop()
        ctx.processes.started.remove(cluster.process)


async def _frontends_ready(ctx: Context, cluster: ClusterInfo, count: int) -> None:
    """Until ``/bazar/cluster`` lists ``count`` healthy front ends (each has its socket on the port)."""
    deadline = time.monotonic() + FRONTENDS_READY_SECONDS
    while True:
        status = await ctx.json(cluster, "GET", "/bazar/cluster")
        healthy = [f for f in status.get("frontends", [{"healthy": True}]) if f.get("healthy")]
        if len(healthy) == count:
            return
        if time.monotonic() > deadline:
            raise StartError(f"{count} front ends started, {len(healthy)} healthy: {status.get('frontends')}")
        await deferLater(ctx.reactor, 0.2, lambda: None)


async def _rounds(ctx: Context, stage: str, cluster: ClusterInfo, count: int, measured: Runs) -> None:
    sample = await ctx.request(cluster, "GET", "/bazar/info/0")
    measured.size = len(sample.body)

    async def run_wrk(label: str, url: str, script: str) -> dict[str, Any] | None:
        return await ctx.wrk(stage, label, url, script, measured.problems)

    for number in range(1, FRONTENDS_ROUNDS + 1):
        tag = f"{count} front end(s), round {number}/{FRONTENDS_ROUNDS}"
        try:
            ceilings, port = start_ceilings(ctx.processes, ctx.workdir, measured.size, count)
        except StartError as e:
            measured.problems.append(f"no ceiling ({tag}): {e}")
        else:
            try:
                cpu_before = processes_cpu(ceilings)
                url = f"http://127.0.0.1:{port}/"
                row = await run_wrk(f"ceiling x{count} ({tag})", url, wrk.get_script())
                cpu(row, cpu_before, processes_cpu(ceilings))
            finally:
                for process in ceilings:
                    process.stop()
                    ctx.processes.started.remove(process)
            if row:
                measured.wrk[count, number, CEILING] = row
        before, cpu_before = await served(ctx, cluster), frontends_cpu(cluster)
        if row := await run_wrk(f"hits ({tag})", cluster.url + "/bazar/info/0", wrk.get_script()):
            after = await served(ctx, cluster)
            cpu(row, cpu_before, frontends_cpu(cluster))
            served_each = {
                name: [a - b for a, b in zip(after[name], before.get(name, (0, 0)), strict=True)]
                for name in after
            }
            hits = sum(h for h, _ in served_each.values())
            misses = sum(m for _, m in served_each.values())
            row["hit_fraction"] = hits / (hits + misses) if hits + misses else None
            # How the kernel spread the connections: each front end's share of what was served.
            total = hits + misses
            row["shares"] = [round((h + m) / total, 3) for h, m in served_each.values()] if total else []
            measured.wrk[count, number, HITS] = row
        script = wrk.unique_get_script(f"/bazar/search/bench-{count}-{number}-")
        cpu_before = frontends_cpu(cluster)
        if row := await run_wrk(f"misses ({tag})", cluster.url + "/bazar/search/bench", script):
            cpu(row, cpu_before, frontends_cpu(cluster))
            measured.wrk[count, number, MISSES] = row


def cpu(row: dict[str, Any] | None, before: float | None, after: float | None) -> None:
    """The CPU the serving processes (front ends, or ceilings) used over a run, on its row:
    ``cores`` (CPU seconds per second) and ``per_cpu_second`` (requests per CPU second). On a
    machine others load too, req/s says how much CPU the processes got; these say what they
    did with it."""
    if row is None or before is None or after is None or after <= before:
        return
    used = after - before
    row["cores"] = used / row["seconds"] if row.get("seconds") else None
    row["per_cpu_second"] = row["requests"] / used


async def served(ctx: Context, cluster: ClusterInfo) -> dict[str, tuple[int, int]]:
    """(hits, misses) each of the cluster's front ends has served so far, by name."""
    status = await ctx.json(cluster, "GET", "/bazar/cluster")
    return {
        f["name"]: (f["cache"]["hits"], f["cache"]["misses"])
        for f in status.get("frontends", [])
        if f.get("healthy")
    }


async def _prices(ctx: Context, stage: str, counts: Sequence[int], measured: Runs) -> None:
    """Price updates from one client, one at a time, through each cluster's shared port: a
    cluster of the fewest front ends and one of the most, both running, in ``PRICE_ROUNDS``
    alternate rounds. One cluster after the other, their p50s differed by more than the
    fan-out costs (0.83x to 1.38x in three runs of the same code): a machine that drifts
    within minutes drifts for both this way, and both have the other's idle processes beside
    them."""
    clusters: dict[int, ClusterInfo] = {}
    try:
        for count in counts:
            ctx.progress.say(f"{stage} starting a cluster with {count} front end(s) for price updates ...")
            directory = ctx.workdir / f"prices-{count}"
            try:
                clusters[count] = start_cluster(
                    ctx.processes, directory, f"prices-{count}", 5, frontends=count
                )
                await _frontends_ready(ctx, clusters[count], count)
            except StartError as e:
                measured.problems.append(f"price updates, {count} front ends: {e}")
                return
        plan = write_plan(PRICE, ctx.book_ids)
        for count, cluster in clusters.items():
            label = f"{stage} price updates, {count} front end(s), warm-up"
            await ctx.loop(cluster, label, plan, PRICE_WARM_UP, 1)
        samples: dict[int, list[Sample]] = {count: [] for count in counts}
        rounds: dict[int, list[float]] = {count: [] for count in counts}
        each = max(1, ctx.settings.samples // PRICE_ROUNDS)
        for number in range(1, PRICE_ROUNDS + 1):
            for count in counts if number % 2 else reversed(counts):
                label = f"{stage} price updates, {count} front end(s), round {number}/{PRICE_ROUNDS}"
                result = await ctx.loop(clusters[count], label, plan, each, 1)
                samples[count].extend(result.samples)
                if ok := [sample.ms for sample in result.samples if sample.ok]:
                    rounds[count].append(statistics.median(ok))
        for count in counts:
            measured.prices[count] = summary_row(samples[count], frontends=count, rounds_p50_ms=rounds[count])
    finally:
        for cluster in clusters.values():
            _stop(ctx, cluster)


async def frontends(ctx: Context, stage: str) -> dict[str, Any]:
    if ctx.wrk_path is None:
        ctx.progress.say(f"{stage} skipped: {wrk.INSTALL_HINT}")
        return {"skipped": wrk.INSTALL_HINT}
    measured = await _drive(ctx, stage)
    rows = frontends_rows(measured.wrk)
    prices = [measured.prices[n] for n in sorted(measured.prices)]
    return {
        "caption": frontends_caption(measured.wrk_args, measured.size, ctx.settings.samples),
        "wrk_args": measured.wrk_args,
        "rounds": FRONTENDS_ROUNDS,
        "rows": rows,
        "prices": prices,
        "notes": frontends_notes(rows, prices, measured.problems),
        "raw": [
            {"frontends": n, "round": r, "workload": w, **row} for (n, r, w), row in measured.wrk.items()
        ],
    }


# -- the statistics --------------------------------------------------------------------------


def frontends_rows(runs: Mapping[tuple[int, int, str], Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per front-end count: each workload's median req/s over the rounds, every
    round's, hits and misses as shares of their own round's ceiling (the median share), and
    each workload's speed-up over the fewest front ends."""
    counts = sorted({n for n, _, _ in runs})
    rows = []
    for count in counts:
        row: dict[str, Any] = {"frontends": count}
        rounds = sorted({r for n, r, _ in runs if n == count})
        for workload in WORKLOADS:
            rps = [runs[count, r, workload]["rps"] for r in rounds if (count, r, workload) in runs]
            row[f"{workload}_rps"] = lower_median(rps) if rps else None
            row[f"{workload}_rps_rounds"] = rps
        for workload in (HITS, MISSES):
            shares = [
                x
                for r in rounds
                if (x := ratio(_rps(runs, count, r, workload), _rps(runs, count, r, CEILING))) is not None
            ]
            row[f"{workload}_of_ceiling"] = lower_median(shares) if shares else None
        for workload in WORKLOADS:
            runs_of = [runs[count, r, workload] for r in rounds if (count, r, workload) in runs]
            per = [x["per_cpu_second"] for x in runs_of if x.get("per_cpu_second")]
            row[f"{workload}_per_cpu_second"] = lower_median(per) if per else None
            cores = [x["cores"] for x in runs_of if x.get("cores")]
            row[f"{workload}_cores"] = lower_median(cores) if cores else None
        first = runs.get((count, rounds[0], HITS), {}) if rounds else {}
        row["hits_shares"] = list(first.get("shares", []))
        fractions = [
            f for r in rounds if (f := runs.get((count, r, HITS), {}).get("hit_fraction")) is not None
        ]
        row["hit_fraction"] = min(fractions) if fractions else None  # the lowest round's
        rows.append(row)
    base = rows[0] if rows else {}
    for row in rows:
        for workload in WORKLOADS:
            row[f"{workload}_speedup"] = ratio(row[f"{workload}_rps"], base.get(f"{workload}_rps"))
    return rows


def _rps(
    runs: Mapping[tuple[int, int, str], Mapping[str, Any]], count: int, number: int, workload: str
) -> Any:
    run = runs.get((count, number, workload))
    return None if run is None else run["rps"]


# -- the words -------------------------------------------------------------------------------


def frontends_caption(wrk_args: str, size: int, samples: int) -> str:
    return (
        f"`{wrk_args}` per run, against one port shared by N front ends (SO_REUSEPORT; a cluster of "
        f"N front ends + 3 + 3 replicas, cache on), beside N bare twisted.web processes sharing a port "
        f"and answering the same {size} bytes (the ceiling). Hits: GET /bazar/info/0; misses: a search "
        f"for a topic no other request names (each one a read at a catalog replica). The ceiling, "
        f"hits and misses ran in turn, {FRONTENDS_ROUNDS} rounds per N: each figure is the median "
        f"round, its share of the ceiling the median of each round's share. CPU: what the serving "
        "processes (the front ends, or the bare ones) used over each run, as cores (CPU seconds per "
        "second) and requests per CPU second (medians of the rounds): on a machine others load too, "
        f"req/s is how much CPU they got, requests per CPU second what they did with it. Then {samples} "
        "price updates from one client, one at a time, with the fewest and the most front ends: two "
        f"clusters running at once, in {PRICE_ROUNDS} alternate rounds."
    )


def frontends_notes(
    rows: Sequence[Mapping[str, Any]], prices: Sequence[Mapping[str, Any]], problems: Sequence[str]
) -> list[str]:
    notes = list(problems)
    for row in rows:
        rounds = ", ".join(
            f"{w} " + " / ".join(f"{x:,.0f}" for x in row[f"{w}_rps_rounds"]) for w in WORKLOADS
        )
        notes.append(f"{row['frontends']} front end(s), each round's req/s: {rounds}")
        if row.get("hits_shares") and len(row["hits_shares"]) > 1:
            shares = " / ".join(f"{100 * x:.0f} %" for x in row["hits_shares"])
            notes.append(
                f"{row['frontends']} front ends: each one's share of the hits' run (round 1): {shares}"
            )
    if len(prices) == 2 and prices[0].get("p50_ms") and prices[1].get("p50_ms"):
        few, many = prices
        notes.append(
            f"a price update's p50: {few['p50_ms']:.2f} ms with {few['frontends']} front end(s), "
            f"{many['p50_ms']:.2f} ms with {many['frontends']} "
            f"({many['p50_ms'] / few['p50_ms']:.2f}x): the sequencer pushes its keys to every front end "
            "before the write is acknowledged"
        )
        pairs = list(zip(few.get("rounds_p50_ms", []), many.get("rounds_p50_ms", []), strict=False))
        if pairs:
            each = ", ".join(f"{a:.2f} / {b:.2f} ms ({b / a:.2f}x)" for a, b in pairs)
            notes.append(
                f"a price update's p50 in each round, {few['frontends']} / {many['frontends']}: {each}"
            )
    for row in prices:
        if row.get("errors"):
            notes.append(f"price updates, {row['frontends']} front end(s): {row['errors']} not 2xx")
    return notes

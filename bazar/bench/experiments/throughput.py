"""5. ``throughput``: wrk against cache hits, misses and purchases, next to a bare twisted.web
server sending the same bytes (the machine's ceiling)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from bazar.bench import wrk
from bazar.bench.cluster import catalog_reads, start_ceiling
from bazar.bench.experiments.context import BUY_BODY, Context
from bazar.bench.load import Call, Target, closed_loop
from bazar.bench.stats import ratio, summarize
from bazar.launch import StartError

T = TypeVar("T")

# The ceiling, cache hits and misses are measured in turn, this many times. A shared machine's
# speed drifts within minutes (the ceiling has moved by a quarter between two runs a minute
# apart), so a ratio of two runs taken far apart measures the drift as much as Bazar; each
# round's ratio compares runs seconds apart, and the table shows the median round.
THROUGHPUT_ROUNDS = 3


def median_round(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One workload's rounds as one row: the round with the median req/s (a real run, not a mix
    of several), with every round's req/s and, where they have one, ratio to their round's ceiling."""
    row = dict(lower_median(rows, key=lambda row: row["rps"]))
    row.pop("round", None)
    row["rounds"] = len(rows)
    row["rps_rounds"] = [r["rps"] for r in rows]
    ratios = [r["of_ceiling"] for r in rows if r.get("of_ceiling") is not None]
    if ratios:
        row["of_ceiling_rounds"] = ratios
        row["of_ceiling"] = lower_median(ratios)
    return row


def lower_median(values: Sequence[T], key: Callable[[T], Any] | None = None) -> T:
    """The middle value (the lower of the two middle ones for an even count): always one of ``values``."""
    return sorted(values, key=key)[(len(values) - 1) // 2]  # type: ignore[type-var, arg-type]


async def throughput(ctx: Context, stage: str) -> dict[str, Any]:
    s = ctx.settings
    if ctx.wrk_path is None:
        ctx.progress.say(f"{stage} skipped: {wrk.INSTALL_HINT}")
        return {"skipped": wrk.INSTALL_HINT}
    if ctx.cache is None:
        return {"skipped": "needs a cluster with a cache (the ceiling is compared with its hits)"}
    cluster = ctx.cache
    notes: list[str] = []
    wrk_args = f"wrk -t{s.wrk_threads} -c{s.wrk_connections} -d{max(1, round(s.duration))}s"

    async def run_wrk(label: str, url: str, script: str) -> dict[str, Any] | None:
        ctx.progress.say(f"{stage} {label}: {wrk_args} {url} ...")
        try:
            result = await wrk.run(
                ctx.reactor,
                ctx.wrk_path or "wrk",
                url,
                script,
                ctx.workdir,
                threads=s.wrk_threads,
                connections=s.wrk_connections,
                duration=s.duration,
            )
        except RuntimeError as e:
            notes.append(f"{label}: {e}")
            ctx.progress.say(f"{stage} {label}: failed: {e}")
            return None
        ctx.progress.say(f"{stage} {label}: {result.rps:,.0f} req/s, p99 {result.p99_ms:.1f} ms")
        return {"workload": label, **result.as_dict()}

    sample = await ctx.request(cluster, "GET", "/bazar/info/0")
    size = len(sample.body)
    ceiling_label = f"ceiling: bare twisted.web, {size} B"
    hits_label = "cache hits: GET /bazar/info/0"
    paths = [f"/bazar/info/{i}" for i in ctx.book_ids]
    misses_label = f"misses (cache_size = 0): GET /bazar/info/0..{len(paths) - 1}"
    selfcheck: dict[str, Any] = {}
    rounds: list[dict[str, Any]] = []  # every run of the rounds, labelled with its round
    reads = requests = 0  # the catalog's reads for the misses, and the misses' requests
    for number in range(1, THROUGHPUT_ROUNDS + 1):
        measured: list[dict[str, Any]] = []
        tag = f"round {number}/{THROUGHPUT_ROUNDS}"
        # The ceiling's process is stopped before Bazar is measured: on a small machine an idle
        # extra process still costs.
        try:
            ceiling_process, port = start_ceiling(ctx.processes, ctx.workdir, size)
        except StartError as e:
            notes.append(f"no ceiling in {tag}: {e}")
            ctx.progress.say(f"{stage} no ceiling in {tag}: {e}")
        else:
            try:
                row = await run_wrk(f"{ceiling_label} ({tag})", f"http://127.0.0.1:{port}/", wrk.get_script())
                if row:
                    measured.append({**row, "workload": ceiling_label})
                if number == 1:
                    selfcheck = await _selfcheck(ctx, stage, Target("127.0.0.1", port))
            finally:
                ceiling_process.stop()
                ctx.processes.started.remove(ceiling_process)

        await ctx.request(cluster, "GET", "/bazar/info/0")
        before = await ctx.cache_stats(cluster)
        row = await run_wrk(f"{hits_label} ({tag})", cluster.url + "/bazar/info/0", wrk.get_script())
        after = await ctx.cache_stats(cluster)
        if row:
            served = (after["hits"] - before["hits"]) + (after["misses"] - before["misses"])
            row["hit_fraction"] = (after["hits"] - before["hits"]) / served if served else None
            measured.append({**row, "workload": hits_label})

        if ctx.nocache is not None:
            reads_before = catalog_reads(ctx.nocache)
            row = await run_wrk(
                f"{misses_label} ({tag})", ctx.nocache.url + paths[0], wrk.rotating_get_script(paths)
            )
            reads_after = catalog_reads(ctx.nocache)
            if row:
                if reads_before is not None and reads_after is not None:
                    reads += reads_after - reads_before
                    requests += row["requests"]
                measured.append({**row, "workload": misses_label})

        ceiling_rps = next((r["rps"] for r in measured if r["workload"] == ceiling_label), None)
        for row in measured:
            row["round"] = number
            row["of_ceiling"] = ratio(row["rps"], ceiling_rps)
        rounds += measured

    rows = [
        median_round(runs)
        for label in (ceiling_label, hits_label, misses_label)
        if (runs := [r for r in rounds if r["workload"] == label])
    ]
    by_label = {row["workload"]: row for row in rows}
    notes += compare_rounds(rounds, by_label.get(hits_label), by_label.get(misses_label))
    if requests:
        by_label[misses_label]["backend_reads_per_request"] = reads / requests
        notes.append(
            f"misses: the catalog replicas answered {reads:,} reads for {requests:,} front-end "
            f"requests ({reads / requests:.3f} per request): concurrent misses of one key share one "
            "backend read, and misses of several books in one turn of the front end's reactor one lookup"
        )
    if selfcheck:
        note = (
            f"the benchmark's own load generator (experiments 1-4) reached {selfcheck['rps']:,.0f} req/s "
            f"with {s.concurrency} clients against the ceiling (p50 {selfcheck['p50_ms']:.2f} ms)"
        )
        if ctx.fastest_loop_rps:
            note += f"; the fastest Bazar run of this benchmark went at {ctx.fastest_loop_rps:,.0f} req/s"
        notes.append(note)

    if ctx.nocache is not None:
        unique = await run_wrk(
            "misses, none shared: GET /bazar/search/<unique topic>",
            ctx.nocache.url + "/bazar/search/bench",
            wrk.unique_get_script("/bazar/search/bench-"),
        )
        if unique:
            rows.append(unique)
            notes.append(
                "misses, none shared: every request names a topic no other request names (the answer is "
                "`[]`, 2 bytes), so each one is a read at a catalog replica: the miss path without coalescing"
            )
    else:
        notes.append("misses not measured: no cluster without a cache")

    await ctx.top_up(cluster)
    purchase_paths = [f"/bazar/purchase/{i}" for i in ctx.book_ids]
    purchases = await run_wrk(
        "purchases: POST /bazar/purchase/<id> {quantity: 1}",
        cluster.url + purchase_paths[0],
        wrk.post_script(BUY_BODY.decode(), purchase_paths),
    )
    if purchases:
        rows.append(purchases)
    ceiling = by_label[ceiling_label]["rps"] if ceiling_label in by_label else None
    for row in rows:
        if "of_ceiling" not in row:  # measured once, after the rounds: against the median ceiling
            row["of_ceiling"] = ratio(row["rps"], ceiling)
    for row in rounds + rows[len(by_label) :]:
        if row.get("non_2xx") or row.get("socket_errors"):
            where = f" (round {row['round']})" if "round" in row else ""
            notes.append(
                f"{row['workload']}{where}: {row['non_2xx']} non-2xx answers, "
                f"{row['socket_errors']} socket errors"
            )
    return {
        "caption": (
            f"`{wrk_args}` per run (wrk's own latency percentiles). The ceiling is a bare twisted.web "
            f"resource answering the same {size} bytes as GET /bazar/info/0, with Content-Length, in a "
            f"process of its own. The ceiling, hits and misses ran in turn, {THROUGHPUT_ROUNDS} rounds: "
            "each row is its median round (by req/s), and its share of the ceiling is the median of "
            "each round's share of that round's ceiling. Then, once, unshared misses and purchases."
        ),
        "wrk_args": wrk_args,
        "body_bytes": size,
        "rounds": THROUGHPUT_ROUNDS,
        "rows": rows,
        "selfcheck": selfcheck,
        "notes": notes,
        "raw": rounds,
    }


def compare_rounds(
    rounds: Sequence[Mapping[str, Any]], hits: dict[str, Any] | None, misses: dict[str, Any] | None
) -> list[str]:
    """Notes on how hits compared with the ceiling, and misses with hits, round by round; the
    misses' row gets its median share of the hits (``of_hits``), each against its own round's."""
    notes = []
    if hits is not None and hits.get("of_ceiling_rounds"):
        notes.append(
            "cache hits ÷ the ceiling, round by round: "
            + ", ".join(f"{100 * x:.1f} %" for x in hits["of_ceiling_rounds"])
        )
    if hits is not None and misses is not None:
        hits_rps = {r["round"]: r["rps"] for r in rounds if r["workload"] == hits["workload"]}
        misses_runs = [r for r in rounds if r["workload"] == misses["workload"]]
        shares = [x for r in misses_runs if (x := ratio(r["rps"], hits_rps.get(r["round"]))) is not None]
        if shares:
            misses["of_hits_rounds"] = shares
            misses["of_hits"] = lower_median(shares)
            notes.append(
                "misses ÷ hits, round by round (each against the hits of its own round): "
                + ", ".join(f"{x:.2f}" for x in shares)
            )
    return notes


async def _selfcheck(ctx: Context, stage: str, ceiling: Target) -> dict[str, Any]:
    """The bench's own client against the ceiling: the most it could drive in experiments 1-4."""
    s = ctx.settings
    result = await closed_loop(
        ctx.reactor,
        ceiling,
        lambda i: Call("ceiling", "GET", "/"),
        count=2 * s.samples,
        concurrency=s.concurrency,
        max_seconds=s.max_seconds,
        timeout=s.timeout,
    )
    ok = [x.ms for x in result.samples if x.ok]
    ctx.progress.say(
        f"{stage} the bench's own client against the ceiling, {s.concurrency} clients: "
        f"{result.throughput:,.0f} req/s (the most it could drive in experiments 1-4)"
    )
    return {
        "concurrency": s.concurrency,
        "rps": result.throughput,
        **summarize(ok, len(result.samples) - len(ok)).as_dict(),
    }

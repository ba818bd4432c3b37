"""5. ``throughput``: wrk against cache hits, misses and purchases, next to a bare twisted.web
server sending the same bytes (the machine's ceiling).

The load: ``_drive``; the statistics: ``throughput_rows`` and the functions it uses (pure);
the words: ``throughput_caption``, ``throughput_notes``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bazar.bench import wrk
from bazar.bench.cluster import catalog_reads, start_ceiling
from bazar.bench.experiments.context import BUY_BODY, Context
from bazar.bench.load import Call, LoopResult, Target, closed_loop
from bazar.bench.stats import ratio, summarize
from bazar.launch import StartError

T = TypeVar("T")

# The ceiling, cache hits and misses are measured in turn, this many times. A shared machine's
# speed drifts within minutes (the ceiling has moved by a quarter between two runs a minute
# apart), so a ratio of two runs taken far apart measures the drift as much as Bazar; each
# round's ratio compares runs seconds apart, and the table shows the median round.
THROUGHPUT_ROUNDS = 3
HITS = "cache hits: GET /bazar/info/0"
UNIQUE = "misses, none shared: GET /bazar/search/<unique topic>"
PURCHASES = "purchases: POST /bazar/purchase/<id> {quantity: 1}"


@dataclass(frozen=True)
class Round:
    """One round as measured: wrk's figures per workload (ceiling, hits, misses: those that
    ran), and the cache's counters before and after the hits' run."""

    number: int
    runs: list[dict[str, Any]]
    hit_counters: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None


@dataclass
class ThroughputRuns:
    wrk_args: str
    size: int  # bytes of GET /bazar/info/0's answer, which the ceiling sends too
    nocache: bool  # whether a cluster without a cache was measured (the misses)
    rounds: list[Round] = field(default_factory=list)
    backend_reads: list[tuple[int, int]] = field(default_factory=list)  # misses: (catalog reads, requests)
    selfcheck: LoopResult | None = None  # the bench's own client against the ceiling
    unique: dict[str, Any] | None = None
    purchases: dict[str, Any] | None = None
    problems: dict[str, list[str]] = field(default_factory=dict)  # by phase: rounds, unique, purchases

    @property
    def ceiling(self) -> str:
        return f"ceiling: bare twisted.web, {self.size} B"

    def misses(self, books: int) -> str:
        return f"misses (cache_size = 0): GET /bazar/info/0..{books - 1}"


# -- the load --------------------------------------------------------------------------------


async def _drive(ctx: Context, stage: str) -> ThroughputRuns:
    s = ctx.settings
    assert ctx.cache is not None
    cluster = ctx.cache
    wrk_args = s.wrk_args
    problems: list[str] = []

    async def run_wrk(label: str, url: str, script: str) -> dict[str, Any] | None:
        row = await ctx.wrk(stage, label, url, script, problems)
        return None if row is None else {"workload": label, **row}

    sample = await ctx.request(cluster, "GET", "/bazar/info/0")
    measured = ThroughputRuns(wrk_args, len(sample.body), ctx.nocache is not None)
    paths = [f"/bazar/info/{i}" for i in ctx.book_ids]
    misses = measured.misses(len(paths))
    for number in range(1, THROUGHPUT_ROUNDS + 1):
        runs: list[dict[str, Any]] = []
        tag = f"round {number}/{THROUGHPUT_ROUNDS}"
        # The ceiling's process is stopped before Bazar is measured: on a small machine an idle
        # extra process still costs.
        try:
            ceiling_process, port = start_ceiling(ctx.processes, ctx.workdir, measured.size)
        except StartError as e:
            problems.append(f"no ceiling in {tag}: {e}")
            ctx.progress.say(f"{stage} no ceiling in {tag}: {e}")
        else:
            try:
                url = f"http://127.0.0.1:{port}/"
                if row := await run_wrk(f"{measured.ceiling} ({tag})", url, wrk.get_script()):
                    runs.append({**row, "workload": measured.ceiling})
                if number == 1:
                    measured.selfcheck = await _selfcheck(ctx, stage, Target("127.0.0.1", port))
            finally:
                ceiling_process.stop()
                ctx.processes.started.remove(ceiling_process)

        await ctx.request(cluster, "GET", "/bazar/info/0")
        before = await ctx.cache_stats(cluster)
        row = await run_wrk(f"{HITS} ({tag})", cluster.url + "/bazar/info/0", wrk.get_script())
        after = await ctx.cache_stats(cluster)
        if row:
            runs.append({**row, "workload": HITS})

        if ctx.nocache is not None:
            reads_before = catalog_reads(ctx.nocache)
            script = wrk.rotating_get_script(paths)
            row = await run_wrk(f"{misses} ({tag})", ctx.nocache.url + paths[0], script)
            reads_after = catalog_reads(ctx.nocache)
            if row:
                if reads_before is not None and reads_after is not None:
                    measured.backend_reads.append((reads_after - reads_before, row["requests"]))
                runs.append({**row, "workload": misses})
        measured.rounds.append(Round(number, runs, (before, after)))
    measured.problems["rounds"], problems = problems, []

    if ctx.nocache is not None:
        script = wrk.unique_get_script("/bazar/search/bench-")
        measured.unique = await run_wrk(UNIQUE, ctx.nocache.url + "/bazar/search/bench", script)
    measured.problems["unique"], problems = problems, []

    await ctx.top_up(cluster)
    purchase_paths = [f"/bazar/purchase/{i}" for i in ctx.book_ids]
    script = wrk.post_script(BUY_BODY.decode(), purchase_paths)
    measured.purchases = await run_wrk(PURCHASES, cluster.url + purchase_paths[0], script)
    measured.problems["purchases"] = problems
    return measured


async def _selfcheck(ctx: Context, stage: str, ceiling: Target) -> LoopResult:
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
    ctx.progress.say(
        f"{stage} the bench's own client against the ceiling, {s.concurrency} clients: "
        f"{result.throughput:,.0f} req/s (the most it could drive in experiments 1-4)"
    )
    return result


async def throughput(ctx: Context, stage: str) -> dict[str, Any]:
    s = ctx.settings
    if ctx.wrk_path is None:
        ctx.progress.say(f"{stage} skipped: {wrk.INSTALL_HINT}")
        return {"skipped": wrk.INSTALL_HINT}
    if ctx.cache is None:
        return {"skipped": "needs a cluster with a cache (the ceiling is compared with its hits)"}
    measured = await _drive(ctx, stage)
    misses = measured.misses(len(ctx.book_ids))
    rounds, rows = throughput_rows(measured, misses)
    selfcheck = {} if measured.selfcheck is None else selfcheck_figures(measured.selfcheck, s.concurrency)
    return {
        "caption": throughput_caption(measured.wrk_args, measured.size),
        "wrk_args": measured.wrk_args,
        "body_bytes": measured.size,
        "rounds": THROUGHPUT_ROUNDS,
        "rows": rows,
        "selfcheck": selfcheck,
        "notes": throughput_notes(measured, rounds, rows, misses, selfcheck, ctx.fastest_loop_rps),
        "raw": rounds,
    }


# -- the statistics --------------------------------------------------------------------------


def lower_median(values: Sequence[T], key: Callable[[T], Any] | None = None) -> T:
    """The middle value (the lower of the two middle ones for an even count): always one of ``values``."""
    return sorted(values, key=key)[(len(values) - 1) // 2]  # type: ignore[type-var, arg-type]


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


def hit_fraction(before: Mapping[str, Any], after: Mapping[str, Any]) -> float | None:
    """The share of hits among what the cache served between two readings of its counters."""
    served = (after["hits"] - before["hits"]) + (after["misses"] - before["misses"])
    return (after["hits"] - before["hits"]) / served if served else None


def round_rows(measured: Round, ceiling: str) -> list[dict[str, Any]]:
    """A round's runs labelled with it, the hits' with their hit fraction, each with its share
    of this round's ceiling."""
    rows = []
    for run in measured.runs:
        row = dict(run)
        if row["workload"] == HITS and measured.hit_counters is not None:
            row["hit_fraction"] = hit_fraction(*measured.hit_counters)
        rows.append(row)
    ceiling_rps = next((r["rps"] for r in rows if r["workload"] == ceiling), None)
    for row in rows:
        row["round"] = measured.number
        row["of_ceiling"] = ratio(row["rps"], ceiling_rps)
    return rows


def of_hits(rounds: Sequence[Mapping[str, Any]], hits: Mapping[str, Any], misses: dict[str, Any]) -> None:
    """The misses' median share of the hits (``of_hits``), each round against its own round's hits."""
    hits_rps = {r["round"]: r["rps"] for r in rounds if r["workload"] == hits["workload"]}
    misses_runs = [r for r in rounds if r["workload"] == misses["workload"]]
    shares = [x for r in misses_runs if (x := ratio(r["rps"], hits_rps.get(r["round"]))) is not None]
    if shares:
        misses["of_hits_rounds"] = shares
        misses["of_hits"] = lower_median(shares)


def throughput_rows(
    measured: ThroughputRuns, misses: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every run of the rounds, and the table's rows: each workload's median round, then the
    unshared misses and the purchases (measured once: against the median ceiling)."""
    rounds = [row for each in measured.rounds for row in round_rows(each, measured.ceiling)]
    rows = [
        median_round(runs)
        for label in (measured.ceiling, HITS, misses)
        if (runs := [r for r in rounds if r["workload"] == label])
    ]
    by_label = {row["workload"]: row for row in rows}
    if HITS in by_label and misses in by_label:
        of_hits(rounds, by_label[HITS], by_label[misses])
    reads = sum(n for n, _ in measured.backend_reads)
    requests = sum(n for _, n in measured.backend_reads)
    if requests:
        by_label[misses]["backend_reads_per_request"] = reads / requests
    rows += [row for row in (measured.unique, measured.purchases) if row]
    ceiling = by_label[measured.ceiling]["rps"] if measured.ceiling in by_label else None
    for row in rows:
        if "of_ceiling" not in row:
            row["of_ceiling"] = ratio(row["rps"], ceiling)
    return rounds, rows


def selfcheck_figures(result: LoopResult, concurrency: int) -> dict[str, Any]:
    ok = [x.ms for x in result.samples if x.ok]
    return {
        "concurrency": concurrency,
        "rps": result.throughput,
        **summarize(ok, len(result.samples) - len(ok)).as_dict(),
    }


# -- the words -------------------------------------------------------------------------------


def throughput_caption(wrk_args: str, size: int) -> str:
    return (
        f"`{wrk_args}` per run (wrk's own latency percentiles). The ceiling is a bare twisted.web "
        f"resource answering the same {size} bytes as GET /bazar/info/0, with Content-Length, in a "
        f"process of its own. The ceiling, hits and misses ran in turn, {THROUGHPUT_ROUNDS} rounds: "
        "each row is its median round (by req/s), and its share of the ceiling is the median of "
        "each round's share of that round's ceiling. Then, once, unshared misses and purchases."
    )


def rounds_notes(hits: Mapping[str, Any] | None, misses: Mapping[str, Any] | None) -> list[str]:
    """How hits compared with the ceiling, and misses with hits, round by round."""
    notes = []
    if hits is not None and hits.get("of_ceiling_rounds"):
        notes.append(
            "cache hits ÷ the ceiling, round by round: "
            + ", ".join(f"{100 * x:.1f} %" for x in hits["of_ceiling_rounds"])
        )
    if hits is not None and misses is not None and misses.get("of_hits_rounds"):
        notes.append(
            "misses ÷ hits, round by round (each against the hits of its own round): "
            + ", ".join(f"{x:.2f}" for x in misses["of_hits_rounds"])
        )
    return notes


def throughput_notes(
    measured: ThroughputRuns,
    rounds: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    misses: str,
    selfcheck: Mapping[str, Any],
    fastest_loop_rps: float,
) -> list[str]:
    by_label = {row["workload"]: row for row in rows}
    notes = [*measured.problems.get("rounds", []), *rounds_notes(by_label.get(HITS), by_label.get(misses))]
    if "backend_reads_per_request" in by_label.get(misses, {}):
        reads = sum(n for n, _ in measured.backend_reads)
        requests = sum(n for _, n in measured.backend_reads)
        notes.append(
            f"misses: the catalog replicas answered {reads:,} reads for {requests:,} front-end "
            f"requests ({reads / requests:.3f} per request): concurrent misses of one key share one "
            "backend read, and misses of several books in one turn of the front end's reactor one lookup"
        )
    if selfcheck:
        note = (
            f"the benchmark's own load generator (experiments 1-4) reached {selfcheck['rps']:,.0f} req/s "
            f"with {selfcheck['concurrency']} clients against the ceiling (p50 {selfcheck['p50_ms']:.2f} ms)"
        )
        if fastest_loop_rps:
            note += f"; the fastest Bazar run of this benchmark went at {fastest_loop_rps:,.0f} req/s"
        notes.append(note)
    notes += measured.problems.get("unique", [])
    if measured.unique:
        notes.append(
            "misses, none shared: every request names a topic no other request names (the answer is "
            "`[]`, 2 bytes), so each one is a read at a catalog replica: the miss path without coalescing"
        )
    if not measured.nocache:
        notes.append("misses not measured: no cluster without a cache")
    notes += measured.problems.get("purchases", [])
    once = [row for row in rows if "rounds" not in row]
    for row in [*rounds, *once]:
        if row.get("non_2xx") or row.get("socket_errors"):
            where = f" (round {row['round']})" if "round" in row else ""
            notes.append(
                f"{row['workload']}{where}: {row['non_2xx']} non-2xx answers, "
                f"{row['socket_errors']} socket errors"
            )
    return notes

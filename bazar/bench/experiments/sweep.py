"""3. ``sweep``: a mix of queries and purchases (probability p of a purchase) from concurrent
clients, with and without the cache.

The load: ``_drive``; the statistics: ``sweep_rows`` (pure); the words: ``sweep_caption``,
``sweep_notes``."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from bazar.bench.experiments.context import (
    BUY_BODY,
    STOCK,
    Context,
    Run,
    Settings,
    cache_label,
    sample_rows,
    summary_row,
)
from bazar.bench.load import Call


async def _drive(ctx: Context, stage: str) -> list[Run]:
    """One run per cluster and probability, stock topped up before each."""
    s = ctx.settings
    query_paths = [f"/bazar/info/{i}" for i in ctx.book_ids] + [
        f"/bazar/search/{quote(t, safe='')}" for t in ctx.topics
    ]
    ids = ctx.book_ids
    runs: list[Run] = []
    for cluster in ctx.clusters:
        cache = cache_label(cluster)
        for p in s.probabilities:
            await ctx.top_up(cluster)
            rng = random.Random(f"{s.seed}-sweep-{p}")

            def plan(i: int, p: float = p, rng: random.Random = rng) -> Call:
                if rng.random() < p:
                    return Call("buy", "POST", f"/bazar/purchase/{rng.choice(ids)}", BUY_BODY)
                return Call("query", "GET", rng.choice(query_paths))

            label = f"{stage} p={p:.1f}, {'cache' if cache == 'on' else 'no cache'}"
            result = await ctx.loop(cluster, label, plan, s.samples, s.concurrency)
            runs.append(Run({"p": p, "cache": cache}, result))
    return runs


async def sweep(ctx: Context, stage: str) -> dict[str, Any]:
    s = ctx.settings
    runs = await _drive(ctx, stage)
    rows = sweep_rows(runs)
    return {
        "caption": sweep_caption(s, len(ctx.books), len(ctx.topics)),
        "probabilities": list(s.probabilities),
        "concurrency": s.concurrency,
        "samples": s.samples,
        "rows": rows,
        "notes": sweep_notes(rows, nocache=ctx.nocache is not None),
        "raw": [row for run in runs for row in sample_rows(run.result.samples, **run.labels)],
    }


def sweep_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Per run, a row for its queries and one for its purchases, each with the run's req/s."""
    rows = []
    for run in runs:
        for op in ("query", "buy"):
            row = summary_row(run.result.of(op), **run.labels, operation=op)
            row["run_throughput_rps"] = run.result.throughput
            rows.append(row)
    return rows


def sweep_caption(s: Settings, books: int, topics: int) -> str:
    return (
        f"{s.concurrency} concurrent clients, {s.samples:,} requests per run. Each request is a purchase "
        f"(quantity 1, random book) with probability p, else a query: info of one of "
        f"{books} books or search of one of {topics} topics, uniformly. Stock is "
        f"topped up to {STOCK:,} before each run. Purchases invalidate cached entries, so query "
        "hits fall as p grows."
    )


def sweep_notes(rows: Sequence[Mapping[str, Any]], *, nocache: bool) -> list[str]:
    notes = []
    if not nocache:
        notes.append("only the cluster with a cache was measured")
    bad = sum(r["errors"] for r in rows)
    if bad:
        notes.append(f"{bad} requests were not 2xx ({sum(r['status_409'] for r in rows)} of them 409)")
    return notes

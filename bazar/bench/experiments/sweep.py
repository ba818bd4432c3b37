"""3. ``sweep``: a mix of queries and purchases (probability p of a purchase) from concurrent
clients, with and without the cache."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import quote

from bazar.bench.experiments.context import BUY_BODY, STOCK, Context, cache_label, sample_rows, summary_row
from bazar.bench.load import Call


async def sweep(ctx: Context, stage: str) -> dict[str, Any]:
    s = ctx.settings
    query_paths = [f"/bazar/info/{i}" for i in ctx.book_ids] + [
        f"/bazar/search/{quote(t, safe='')}" for t in ctx.topics
    ]
    ids = ctx.book_ids
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
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
            for op in ("query", "buy"):
                row = summary_row(result.of(op), p=p, cache=cache, operation=op)
                row["run_throughput_rps"] = result.throughput
                rows.append(row)
            raw += sample_rows(result.samples, p=p, cache=cache)
    notes = []
    if ctx.nocache is None:
        notes.append("only the cluster with a cache was measured")
    bad = sum(r["errors"] for r in rows)
    if bad:
        notes.append(f"{bad} requests were not 2xx ({sum(r['status_409'] for r in rows)} of them 409)")
    return {
        "caption": (
            f"{s.concurrency} concurrent clients, {s.samples:,} requests per run. Each request is a purchase "
            f"(quantity 1, random book) with probability p, else a query: info of one of "
            f"{len(ctx.books)} books or search of one of {len(ctx.topics)} topics, uniformly. Stock is "
            f"topped up to {STOCK:,} before each run. Purchases invalidate cached entries, so query "
            "hits fall as p grows."
        ),
        "probabilities": list(s.probabilities),
        "concurrency": s.concurrency,
        "samples": s.samples,
        "rows": rows,
        "notes": notes,
        "raw": raw,
    }

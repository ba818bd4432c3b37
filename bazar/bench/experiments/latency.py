"""1. ``latency``: info, search and buy, one client, with and without the cache."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from bazar.bench.cluster import cpu_seconds
from bazar.bench.experiments.context import (
    BUY_BODY,
    CPU_PREFIX,
    Context,
    cache_label,
    sample_rows,
    summary_row,
)
from bazar.bench.load import Call
from bazar.bench.stats import ratio


def _paths(ctx: Context, capacity: int | None) -> tuple[list[str], list[str]]:
    """Info and search paths that fit in the cache together with nothing else: re-reads hit."""
    ids, topics = ctx.book_ids, ctx.topics
    if capacity:
        ids, topics = ids[:capacity], topics[:capacity]
    return [f"/bazar/info/{i}" for i in ids], [f"/bazar/search/{quote(t, safe='')}" for t in topics]


async def latency(ctx: Context, stage: str) -> dict[str, Any]:
    s = ctx.settings
    capacity = ctx.cache.cache_size if ctx.cache is not None else None
    info_paths, search_paths = _paths(ctx, capacity)
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    for cluster in ctx.clusters:
        cache = cache_label(cluster)
        name = "cache" if cache == "on" else "no cache"
        for op, paths in (("info", info_paths), ("search", search_paths)):
            for path in paths:  # fill the cache (and every replica's page cache) first
                await ctx.request(cluster, "GET", path)
            rng = random.Random(f"{s.seed}-{op}")  # the same sequence for both clusters

            def plan(i: int, op: str = op, paths: list[str] = paths, rng: random.Random = rng) -> Call:
                return Call(op, "GET", rng.choice(paths))

            result = await ctx.loop(cluster, f"{stage} {op}, {name}", plan, s.samples, 1)
            rows.append(summary_row(result.samples, operation=op, cache=cache))
            raw += sample_rows(result.samples, cache=cache)
        await ctx.top_up(cluster)
        rng = random.Random(f"{s.seed}-buy")
        ids = ctx.book_ids

        def buy(i: int, rng: random.Random = rng, ids: list[int] = ids) -> Call:
            return Call("buy", "POST", f"/bazar/purchase/{rng.choice(ids)}", BUY_BODY)

        cpu_before = cpu_seconds(cluster)
        result = await ctx.loop(cluster, f"{stage} buy, {name}", buy, s.samples, 1)
        cpu_after = cpu_seconds(cluster)
        row = summary_row(result.samples, operation="buy", cache=cache)
        if cpu_before is not None and cpu_after is not None and result.samples:
            # Where a purchase's time goes: each process's CPU time per purchase.
            for name in cpu_after:
                row[f"{CPU_PREFIX}{name}"] = (cpu_after[name] - cpu_before[name]) * 1000 / len(result.samples)
        rows.append(row)
        raw += sample_rows(result.samples, cache=cache)
    notes = []
    if ctx.nocache is None:
        notes.append("no cluster without a cache was measured (give --url-nocache, or no --url), so no ratio")
    if ctx.cache is None:
        notes.append("no cluster with a cache was measured")
    for row in rows:
        if any(key.startswith(CPU_PREFIX) for key in row):
            notes.append(cpu_note(row))
        if row["errors"]:
            notes.append(
                f"{row['operation']} (cache {row['cache']}): {row['errors']} requests were not 2xx "
                f"({row['status_409']} of them 409)"
            )
    for op in ("info", "search", "buy"):
        off = next((r for r in rows if r["operation"] == op and r["cache"] == "off"), None)
        on = next((r for r in rows if r["operation"] == op and r["cache"] == "on"), None)
        if off and on:
            for key in ("avg_ms", "p50_ms", "p99_ms"):
                on[f"speedup_{key[:-3]}"] = ratio(off[key], on[key])
    return {
        "caption": (
            f"{s.samples:,} requests per cell from one client, keep-alive, after one warm-up read per key. "
            f"Info reads books {info_paths[0].rsplit('/', 1)[1]} to {info_paths[-1].rsplit('/', 1)[1]} and "
            f"search reads {len(search_paths)} topics, uniformly at random: sets that fit in the cache "
            f"({capacity} entries), "
            "so with the cache every read is a hit, as the report's repeated request was. Without it "
            "(cache_size = 0) every read goes to a catalog replica. Buy = POST /bazar/purchase/<random id>, "
            "quantity 1. Speed-up = no cache ÷ cache."
        ),
        "operations": ["info", "search", "buy"],
        "samples": s.samples,
        "concurrency": 1,
        "rows": rows,
        "notes": notes,
        "raw": raw,
    }


def cpu_note(row: Mapping[str, Any], cores: int | None = None) -> str:
    """Where one client's purchases spent CPU time, process by process, and the latency that
    CPU time alone allows: spread over every core with none ever idle, it could not take less."""
    cpu = {key[len(CPU_PREFIX) :]: ms for key, ms in row.items() if key.startswith(CPU_PREFIX)}
    each = ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items())
    cores = cores or os.cpu_count() or 1
    total = sum(cpu.values())
    return (
        f"CPU time per purchase (cache {row['cache']}; ms, from each process's process_cpu_seconds_total): "
        f"{each}; {total:.1f} ms in all, on {cores} cores, for a p50 of {row['p50_ms']:.1f} ms "
        f"(no less than {total / cores:.1f} ms even if the {cores} cores were never idle)"
    )

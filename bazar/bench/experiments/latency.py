"""1. ``latency``: info, search and buy, one client, with and without the cache.

The load: ``_drive``; the statistics: ``latency_rows`` (pure); the words: ``latency_caption``,
``latency_notes`` and ``cpu_note``."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from bazar.bench.load import Call, Sample
from bazar.bench.stats import ratio

OPERATIONS = ("info", "search", "buy")


@dataclass(frozen=True)
class OperationRun:
    """One operation's loop against one cluster; for purchases, each process's CPU seconds
    before and after it (None where they could not be read)."""

    operation: str
    cache: str  # "on" or "off"
    samples: list[Sample]
    cpu_before: Mapping[str, float] | None = None
    cpu_after: Mapping[str, float] | None = None


# -- the load --------------------------------------------------------------------------------


def _paths(ctx: Context, capacity: int | None) -> tuple[list[str], list[str]]:
    """Info and search paths that fit in the cache together with nothing else: re-reads hit."""
    ids, topics = ctx.book_ids, ctx.topics
    if capacity:
        ids, topics = ids[:capacity], topics[:capacity]
    return [f"/bazar/info/{i}" for i in ids], [f"/bazar/search/{quote(t, safe='')}" for t in topics]


async def _drive(
    ctx: Context, stage: str, info_paths: list[str], search_paths: list[str]
) -> list[OperationRun]:
    """Per cluster: info and search reads after one warm-up read per key, then purchases."""
    s = ctx.settings
    runs: list[OperationRun] = []
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
            runs.append(OperationRun(op, cache, result.samples))
        await ctx.top_up(cluster)
        rng = random.Random(f"{s.seed}-buy")
        ids = ctx.book_ids

        def buy(i: int, rng: random.Random = rng, ids: list[int] = ids) -> Call:
            return Call("buy", "POST", f"/bazar/purchase/{rng.choice(ids)}", BUY_BODY)

        cpu_before = cpu_seconds(cluster)
        result = await ctx.loop(cluster, f"{stage} buy, {name}", buy, s.samples, 1)
        runs.append(OperationRun("buy", cache, result.samples, cpu_before, cpu_seconds(cluster)))
    return runs


async def latency(ctx: Context, stage: str) -> dict[str, Any]:
    capacity = ctx.cache.cache_size if ctx.cache is not None else None
    info_paths, search_paths = _paths(ctx, capacity)
    runs = await _drive(ctx, stage, info_paths, search_paths)
    rows = latency_rows(runs)
    return {
        "caption": latency_caption(ctx.settings.samples, info_paths, search_paths, capacity),
        "operations": list(OPERATIONS),
        "samples": ctx.settings.samples,
        "concurrency": 1,
        "rows": rows,
        "notes": latency_notes(rows, cache=ctx.cache is not None, nocache=ctx.nocache is not None),
        "raw": [row for run in runs for row in sample_rows(run.samples, cache=run.cache)],
    }


# -- the statistics --------------------------------------------------------------------------


def cpu_per_request(
    before: Mapping[str, float] | None, after: Mapping[str, float] | None, requests: int
) -> dict[str, float]:
    """Each process's CPU milliseconds per request (none when a reading or the requests are missing)."""
    if before is None or after is None or not requests:
        return {}
    return {name: (after[name] - before[name]) * 1000 / requests for name in after}


def latency_rows(runs: Sequence[OperationRun]) -> list[dict[str, Any]]:
    """One summary row per run, a purchase's CPU time per process, and on the cache's rows the
    speed-ups over the same operation without it (no cache ÷ cache)."""
    rows = []
    for run in runs:
        row = summary_row(run.samples, operation=run.operation, cache=run.cache)
        for name, ms in cpu_per_request(run.cpu_before, run.cpu_after, len(run.samples)).items():
            row[f"{CPU_PREFIX}{name}"] = ms
        rows.append(row)
    for op in OPERATIONS:
        off = next((r for r in rows if r["operation"] == op and r["cache"] == "off"), None)
        on = next((r for r in rows if r["operation"] == op and r["cache"] == "on"), None)
        if off and on:
            for key in ("avg_ms", "p50_ms", "p99_ms"):
                on[f"speedup_{key[:-3]}"] = ratio(off[key], on[key])
    return rows


# -- the words -------------------------------------------------------------------------------


def latency_caption(
    samples: int, info_paths: list[str], search_paths: list[str], capacity: int | None
) -> str:
    return (
        f"{samples:,} requests per cell from one client, keep-alive, after one warm-up read per key. "
        f"Info reads books {info_paths[0].rsplit('/', 1)[1]} to {info_paths[-1].rsplit('/', 1)[1]} and "
        f"search reads {len(search_paths)} topics, uniformly at random: sets that fit in the cache "
        f"({capacity} entries), "
        "so with the cache every read is a hit, as the report's repeated request was. Without it "
        "(cache_size = 0) every read goes to a catalog replica. Buy = POST /bazar/purchase/<random id>, "
        "quantity 1. Speed-up = no cache ÷ cache."
    )


def latency_notes(rows: Sequence[Mapping[str, Any]], *, cache: bool, nocache: bool) -> list[str]:
    """What the table alone would hide: a cluster not measured, CPU time, failed requests."""
    notes = []
    if not nocache:
        notes.append("no cluster without a cache was measured (give --url-nocache, or no --url), so no ratio")
    if not cache:
        notes.append("no cluster with a cache was measured")
    for row in rows:
        if any(key.startswith(CPU_PREFIX) for key in row):
            notes.append(cpu_note(row))
        if row["errors"]:
            notes.append(
                f"{row['operation']} (cache {row['cache']}): {row['errors']} requests were not 2xx "
                f"({row['status_409']} of them 409)"
            )
    return notes


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

"""4. ``lru``: the cache's counters over time under a skewed load whose hot keys shift."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from bazar.bench.experiments.context import BUY_BODY, COUNTERS, Context, sample_rows
from bazar.bench.load import Call, HTTPClient, RequestError, Target


def zipf_weights(n: int, exponent: float = 1.2) -> list[float]:
    """Popularity by rank: a few keys get most requests, as real catalogues do."""
    return [1 / (rank**exponent) for rank in range(1, n + 1)]


def phase_order(keys: Sequence[str], phase: int) -> list[str]:
    """Phase k ranks the keys rotated by k * 3, so a different set is hot each phase."""
    shift = (phase * 3) % len(keys)
    return list(keys[shift:]) + list(keys[:shift])


async def lru(ctx: Context, stage: str) -> dict[str, Any]:
    s = ctx.settings
    cluster = ctx.cache
    if cluster is None or not cluster.cache_size:
        return {"skipped": "needs a cluster with a cache"}
    keys = [f"info/{i}" for i in ctx.book_ids] + [f"search/{t}" for t in ctx.topics]
    paths = {k: "/bazar/" + (k if k.startswith("info/") else "search/" + quote(k[7:], safe="")) for k in keys}
    # The book a purchase takes when its key is drawn: the book itself, or the topic's first book.
    book_of = {f"info/{b['id']}": b["id"] for b in ctx.books}
    for b in reversed(ctx.books):
        book_of[f"search/{b['topic']}"] = b["id"]
    weights = zipf_weights(len(keys))
    await ctx.top_up(cluster)
    snapshots: list[dict[str, Any]] = []
    baseline: dict[str, int] = {}
    started = time.perf_counter()
    poller = HTTPClient(ctx.reactor, Target.from_url(cluster.url), s.timeout)
    phase_now = 0
    running = True

    async def snapshot(http: HTTPClient) -> dict[str, Any] | None:
        try:
            response = await http.request("GET", "/bazar/cluster")
            cache = json.loads(response.body)["cache"]
        except (RequestError, ValueError, KeyError):
            return None
        if not baseline:  # earlier experiments' counts are not this run's
            baseline.update({k: cache[k] for k in COUNTERS})
        snap = {
            "t": time.perf_counter() - started,
            "phase": phase_now,
            **{k: cache[k] - baseline[k] for k in COUNTERS},
            "size": cache["size"],
            "capacity": cache["capacity"],
            "keys": " ".join(cache.get("keys", [])),
        }
        snapshots.append(snap)
        return snap

    async def poll() -> None:
        deadline = started + s.max_seconds * s.lru_phases + s.timeout
        while running and time.perf_counter() < deadline:
            await snapshot(poller)
            await deferLater(ctx.reactor, s.lru_interval)

    phases: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    control = ctx.client(cluster)  # phase boundaries: a connection of their own, not the poller's
    first = await snapshot(control)
    polling = None
    try:
        polling = Deferred.fromCoroutine(poll())
        for phase in range(s.lru_phases):
            phase_now = phase + 1
            order = phase_order(keys, phase)
            rng = random.Random(f"{s.seed}-lru-{phase}")

            def plan(i: int, order: list[str] = order, rng: random.Random = rng) -> Call:
                key = rng.choices(order, weights)[0]
                if rng.random() < 0.03:  # an occasional purchase of a popular book invalidates its entries
                    return Call("buy", "POST", f"/bazar/purchase/{book_of[key]}", BUY_BODY)
                return Call("query", "GET", paths[key])

            before = await snapshot(control)
            result = await ctx.loop(cluster, f"{stage} phase {phase + 1}/{s.lru_phases}", plan, s.samples, 1)
            after = await snapshot(control)
            raw += sample_rows(result.samples, phase=phase + 1)
            entry: dict[str, Any] = {
                "phase": phase + 1,
                "hot_keys": order[:3],
                "start_t": before["t"] if before else None,
                "end_t": after["t"] if after else None,
                "requests": len(result.samples),
            }
            if before and after:
                for k in ("hits", "misses", "evictions", "invalidations"):
                    entry[k] = after[k] - before[k]
                total = entry["hits"] + entry["misses"]
                entry["hit_ratio"] = entry["hits"] / total if total else None
            phases.append(entry)
    finally:
        running = False
        if polling is not None:
            await polling
        poller.close()
    snapshots.sort(key=lambda snap: snap["t"])
    capacity = first["capacity"] if first else cluster.cache_size
    total_hits = sum(p.get("hits", 0) for p in phases)
    total_misses = sum(p.get("misses", 0) for p in phases)
    return {
        "caption": (
            f"One client, {s.samples:,} requests per phase over {len(keys)} keys ({len(ctx.books)} infos, "
            f"{len(ctx.topics)} searches) with Zipf popularity (exponent 1.2), 3 % purchases; each phase "
            f"makes different keys hot. GET /bazar/cluster every {s.lru_interval * 1000:.0f} ms records the "
            f"cache's counters (capacity {capacity})."
        ),
        "capacity": capacity,
        "phases": phases,
        "snapshots": snapshots,
        "hit_ratio": total_hits / (total_hits + total_misses) if total_hits + total_misses else None,
        "baseline": baseline,
        "notes": [
            f"{len(snapshots)} snapshots; counters count from the start of this run ('baseline' in JSON)"
        ],
        "raw": raw,
    }

"""4. ``lru``: the cache's counters over time under a skewed load whose hot keys shift.

The load: ``_drive``; the statistics: ``zipf_weights``, ``phase_order``, ``counters_since``,
``phase_figures`` and ``overall_hit_ratio`` (pure); the words: ``lru_caption``, ``lru_notes``."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from bazar.bench.experiments.context import BUY_BODY, COUNTERS, Context, Settings, sample_rows
from bazar.bench.load import Call, HTTPClient, RequestError, Target


@dataclass(frozen=True)
class Phase:
    """One phase as measured: its hottest keys, the snapshots around it, its requests."""

    number: int
    hot_keys: list[str]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    requests: int


@dataclass
class LruRuns:
    keys: list[str]
    first: dict[str, Any] | None = None  # the snapshot before the first phase
    baseline: dict[str, int] = field(default_factory=dict)  # the counters when this run began
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)


# -- the load --------------------------------------------------------------------------------


async def _drive(ctx: Context, stage: str) -> LruRuns:
    """Phases of Zipf-skewed reads (hot keys shifting each phase), while a poller of its own
    records the cache's counters every ``lru_interval``."""
    s = ctx.settings
    cluster = ctx.cache
    assert cluster is not None
    keys = [f"info/{i}" for i in ctx.book_ids] + [f"search/{t}" for t in ctx.topics]
    paths = {k: "/bazar/" + (k if k.startswith("info/") else "search/" + quote(k[7:], safe="")) for k in keys}
    # The book a purchase takes when its key is drawn: the book itself, or the topic's first book.
    book_of = {f"info/{b['id']}": b["id"] for b in ctx.books}
    for b in reversed(ctx.books):
        book_of[f"search/{b['topic']}"] = b["id"]
    weights = zipf_weights(len(keys))
    await ctx.top_up(cluster)
    measured = LruRuns(keys)
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
        if not measured.baseline:  # earlier experiments' counts are not this run's
            measured.baseline.update({k: cache[k] for k in COUNTERS})
        snap = {
            "t": time.perf_counter() - started,
            "phase": phase_now,
            **counters_since(cache, measured.baseline),
        }
        measured.snapshots.append(snap)
        return snap

    async def poll() -> None:
        deadline = started + s.max_seconds * s.lru_phases + s.timeout
        while running and time.perf_counter() < deadline:
            await snapshot(poller)
            await deferLater(ctx.reactor, s.lru_interval)

    control = ctx.client(cluster)  # phase boundaries: a connection of their own, not the poller's
    measured.first = await snapshot(control)
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
            measured.raw += sample_rows(result.samples, phase=phase + 1)
            measured.phases.append(Phase(phase + 1, order[:3], before, after, len(result.samples)))
    finally:
        running = False
        if polling is not None:
            await polling
        poller.close()
    measured.snapshots.sort(key=lambda snap: snap["t"])
    return measured


async def lru(ctx: Context, stage: str) -> dict[str, Any]:
    cluster = ctx.cache
    if cluster is None or not cluster.cache_size:
        return {"skipped": "needs a cluster with a cache"}
    measured = await _drive(ctx, stage)
    capacity = measured.first["capacity"] if measured.first else cluster.cache_size
    phases = [phase_figures(p.number, p.hot_keys, p.before, p.after, p.requests) for p in measured.phases]
    return {
        "caption": lru_caption(ctx.settings, len(measured.keys), len(ctx.books), len(ctx.topics), capacity),
        "capacity": capacity,
        "phases": phases,
        "snapshots": measured.snapshots,
        "hit_ratio": overall_hit_ratio(phases),
        "baseline": measured.baseline,
        "notes": lru_notes(measured.snapshots),
        "raw": measured.raw,
    }


# -- the statistics --------------------------------------------------------------------------


def zipf_weights(n: int, exponent: float = 1.2) -> list[float]:
    """Popularity by rank: a few keys get most requests, as real catalogues do."""
    return [1 / (rank**exponent) for rank in range(1, n + 1)]


def phase_order(keys: Sequence[str], phase: int) -> list[str]:
    """Phase k ranks the keys rotated by k * 3, so a different set is hot each phase."""
    shift = (phase * 3) % len(keys)
    return list(keys[shift:]) + list(keys[:shift])


def counters_since(cache: Mapping[str, Any], baseline: Mapping[str, int]) -> dict[str, Any]:
    """The cache's counters since ``baseline``, its size and capacity, and its keys in one string."""
    return {
        **{k: cache[k] - baseline[k] for k in COUNTERS},
        "size": cache["size"],
        "capacity": cache["capacity"],
        "keys": " ".join(cache.get("keys", [])),
    }


def phase_figures(
    phase: int,
    hot_keys: list[str],
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    requests: int,
) -> dict[str, Any]:
    """One phase: when it ran and, where both snapshots were taken, what the counters did."""
    entry: dict[str, Any] = {
        "phase": phase,
        "hot_keys": hot_keys,
        "start_t": before["t"] if before else None,
        "end_t": after["t"] if after else None,
        "requests": requests,
    }
    if before and after:
        for k in COUNTERS:
            entry[k] = after[k] - before[k]
        total = entry["hits"] + entry["misses"]
        entry["hit_ratio"] = entry["hits"] / total if total else None
    return entry


def overall_hit_ratio(phases: Sequence[Mapping[str, Any]]) -> float | None:
    hits = sum(p.get("hits", 0) for p in phases)
    misses = sum(p.get("misses", 0) for p in phases)
    return hits / (hits + misses) if hits + misses else None


# -- the words -------------------------------------------------------------------------------


def lru_caption(s: Settings, keys: int, books: int, topics: int, capacity: int) -> str:
    return (
        f"One client, {s.samples:,} requests per phase over {keys} keys ({books} infos, "
        f"{topics} searches) with Zipf popularity (exponent 1.2), 3 % purchases; each phase "
        f"makes different keys hot. GET /bazar/cluster every {s.lru_interval * 1000:.0f} ms records the "
        f"cache's counters (capacity {capacity})."
    )


def lru_notes(snapshots: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"{len(snapshots)} snapshots; counters count from the start of this run ('baseline' in JSON)"]

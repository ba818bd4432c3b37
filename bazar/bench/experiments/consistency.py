"""2. ``consistency``: price updates that must invalidate cached entries; the next read must
miss and show the new price.

The load: ``_drive`` (it records every answer); the statistics: ``consistency_figures`` (pure:
latencies, counts, violations); the words: ``CAPTION``, ``consistency_notes``."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bazar.bench.experiments.context import Context
from bazar.bench.load import HTTPClient, RequestError, Response, Target
from bazar.bench.stats import summarize
from bazar.protocol import CACHE_HEADER, REPLICA_HEADER

STEPS = (
    "info read, cached",
    "update_price (replicate + invalidate)",
    "info read right after the write",
    "search read right after the write",
    "info re-read (refilled)",
)
VIOLATIONS = (
    "info_hit_after_write",
    "search_hit_after_write",
    "info_stale_after_write",
    "search_stale_after_write",
)


@dataclass
class Round:
    """One book's turn: its reads by name (``warm info``, ``warm search``, ``cached info``,
    ``cached search``, ``after info``, ``after search``, ``reread``: those made; None where
    the request failed) and the write of ``price`` (None where it failed)."""

    i: int
    book: int
    info: str
    search: str
    price: float
    reads: dict[str, Response | None] = field(default_factory=dict)
    write: Response | None = None


# -- the load --------------------------------------------------------------------------------


async def _drive(ctx: Context, stage: str) -> list[Round]:
    """Books in turn: read until cached, write a new price, read both again, re-read the info."""
    s = ctx.settings
    assert ctx.cache is not None
    http = HTTPClient(ctx.reactor, Target.from_url(ctx.cache.url), s.timeout)
    rounds: list[Round] = []
    original = {book["id"]: book["price"] for book in ctx.books}
    task = ctx.progress.task(f"{stage} update_price + reads", s.samples, s.max_seconds)
    started = time.perf_counter()

    async def get(turn: Round, name: str, path: str) -> None:
        try:
            turn.reads[name] = await http.request("GET", path)
        except RequestError:
            turn.reads[name] = None

    try:
        for i in range(s.samples):
            if time.perf_counter() - started > s.max_seconds:
                break
            book = ctx.books[i % len(ctx.books)]
            price = round(1000 + i + book["id"] / 100, 2)  # never the price it had
            info, search = f"/bazar/info/{book['id']}", f"/bazar/search/{quote(book['topic'], safe='')}"
            turn = Round(i, book["id"], info, search, price)
            rounds.append(turn)
            for name, path in (("warm info", info), ("warm search", search)):
                await get(turn, name, path)
            for name, path in (("cached info", info), ("cached search", search)):
                await get(turn, name, path)
            try:
                body = json.dumps({"price": price}).encode()
                turn.write = await http.request("PUT", f"/bazar/update_price/{book['id']}", body)
            except RequestError:
                continue
            if turn.write.status != 200:
                continue
            await get(turn, "after info", info)
            await get(turn, "after search", search)
            await get(turn, "reread", info)
            task.update(i + 1)
        task.finish(f"{consistency_figures(rounds)[2]} consistency violations")
        for book_id, price in original.items():  # leave the catalogue as it was
            await http.request("PUT", f"/bazar/update_price/{book_id}", json.dumps({"price": price}).encode())
    finally:
        http.close()
    return rounds


async def consistency(ctx: Context, stage: str) -> dict[str, Any]:
    cluster = ctx.cache
    if cluster is None or not cluster.cache_size:
        return {"skipped": "needs a cluster with a cache"}
    if cluster.cache_size < 2:
        return {"skipped": "needs a cache of at least 2 entries (a book's info and its topic's search)"}
    rounds = await _drive(ctx, stage)
    latencies, counts, violations, raw = consistency_figures(rounds)
    return {
        "caption": CAPTION,
        "samples": counts["writes"],
        "rows": [{"step": step, **summarize(values).as_dict()} for step, values in latencies.items()],
        "counts": counts,
        "violations": violations,
        "notes": consistency_notes(counts),
        "raw": raw,
        "latencies": latencies,
    }


# -- the statistics --------------------------------------------------------------------------


def _ok(response: Response | None) -> Response | None:
    return response if response is not None and response.status == 200 else None


def consistency_figures(
    rounds: Sequence[Round],
) -> tuple[dict[str, list[float]], dict[str, int], int, list[dict[str, Any]]]:
    """Each step's latencies (ms), the counts (writes, failures, reads that were hits or showed
    the old price right after a write), the violations among them, and a row per answer."""
    latencies: dict[str, list[float]] = {step: [] for step in STEPS}
    counts = {
        "writes": 0,
        "write_errors": 0,
        "read_errors": 0,
        "not_cached_before_write": 0,
        "info_hit_after_write": 0,
        "search_hit_after_write": 0,
        "info_stale_after_write": 0,
        "search_stale_after_write": 0,
        "reread_not_hit": 0,
    }
    raw: list[dict[str, Any]] = []

    def record(step: str, turn: Round, path: str, response: Response, **extra: Any) -> None:
        latencies[step].append(response.elapsed * 1000)
        raw.append(
            {
                "i": turn.i,
                "step": step,
                "path": path,
                "latency_ms": response.elapsed * 1000,
                "status": response.status,
                "x_bazar_cache": response.header(CACHE_HEADER),
                "replica": response.header(REPLICA_HEADER),
                **extra,
            }
        )

    for turn in rounds:
        counts["read_errors"] += sum(1 for r in turn.reads.values() if _ok(r) is None)
        cached_info, cached_search = _ok(turn.reads.get("cached info")), _ok(turn.reads.get("cached search"))
        if cached_info is not None:
            record("info read, cached", turn, turn.info, cached_info)
        if not (cached_info and cached_search and cached_info.header(CACHE_HEADER) == "hit"):
            counts["not_cached_before_write"] += 1
        elif cached_search.header(CACHE_HEADER) != "hit":
            counts["not_cached_before_write"] += 1
        counts["writes"] += 1
        write = _ok(turn.write)
        if write is None:
            counts["write_errors"] += 1
            continue
        path = f"/bazar/update_price/{turn.book}"
        record("update_price (replicate + invalidate)", turn, path, write, price=turn.price)
        if (after_info := _ok(turn.reads.get("after info"))) is not None:
            record("info read right after the write", turn, turn.info, after_info, price=turn.price)
            if after_info.header(CACHE_HEADER) == "hit":
                counts["info_hit_after_write"] += 1
            if json.loads(after_info.body).get("price") != turn.price:
                counts["info_stale_after_write"] += 1
        if (after_search := _ok(turn.reads.get("after search"))) is not None:
            record("search read right after the write", turn, turn.search, after_search, price=turn.price)
            if after_search.header(CACHE_HEADER) == "hit":
                counts["search_hit_after_write"] += 1
            prices = {b["id"]: b["price"] for b in json.loads(after_search.body)}
            if prices.get(turn.book) != turn.price:
                counts["search_stale_after_write"] += 1
        if (reread := _ok(turn.reads.get("reread"))) is not None:
            record("info re-read (refilled)", turn, turn.info, reread)
            if reread.header(CACHE_HEADER) != "hit":
                counts["reread_not_hit"] += 1
    return latencies, counts, sum(counts[k] for k in VIOLATIONS), raw


# -- the words -------------------------------------------------------------------------------

CAPTION = (
    "One client, books in turn: read the book's info and its topic's search until both are cached, "
    "PUT /bazar/update_price (acknowledged only once all 3 catalog replicas have it and the "
    "front end dropped the cached entries), then read both again — each must be a miss showing "
    "the new price."
)


def consistency_notes(counts: Mapping[str, int]) -> list[str]:
    notes = [
        f"{counts['writes']:,} price updates; a read right after a write that was a cache hit, "
        f"or that showed the old price, is a violation: info {counts['info_hit_after_write']} hits / "
        f"{counts['info_stale_after_write']} stale, search {counts['search_hit_after_write']} hits / "
        f"{counts['search_stale_after_write']} stale."
    ]
    if counts["not_cached_before_write"]:
        notes.append(f"{counts['not_cached_before_write']} writes found their book not cached beforehand")
    if counts["write_errors"] or counts["read_errors"]:
        notes.append(f"{counts['write_errors']} writes and {counts['read_errors']} reads failed")
    if counts["reread_not_hit"]:
        notes.append(f"{counts['reread_not_hit']} re-reads after the refill were not hits")
    return notes

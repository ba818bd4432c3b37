"""2. ``consistency``: price updates that must invalidate cached entries; the next read must
miss and show the new price."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from bazar.bench.experiments.context import Context
from bazar.bench.load import HTTPClient, RequestError, Response, Target
from bazar.bench.stats import summarize
from bazar.protocol import CACHE_HEADER, REPLICA_HEADER


async def consistency(ctx: Context, stage: str) -> dict[str, Any]:
    s = ctx.settings
    cluster = ctx.cache
    if cluster is None or not cluster.cache_size:
        return {"skipped": "needs a cluster with a cache"}
    if cluster.cache_size < 2:
        return {"skipped": "needs a cache of at least 2 entries (a book's info and its topic's search)"}
    http = HTTPClient(ctx.reactor, Target.from_url(cluster.url), s.timeout)
    latencies: dict[str, list[float]] = {
        "info read, cached": [],
        "update_price (replicate + invalidate)": [],
        "info read right after the write": [],
        "search read right after the write": [],
        "info re-read (refilled)": [],
    }
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
    original = {book["id"]: book["price"] for book in ctx.books}
    task = ctx.progress.task(f"{stage} update_price + reads", s.samples, s.max_seconds)
    started = time.perf_counter()

    async def get(path: str) -> Response | None:
        try:
            response = await http.request("GET", path)
        except RequestError:
            counts["read_errors"] += 1
            return None
        if response.status != 200:
            counts["read_errors"] += 1
            return None
        return response

    def record(step: str, i: int, path: str, response: Response, **extra: Any) -> None:
        latencies[step].append(response.elapsed * 1000)
        raw.append(
            {
                "i": i,
                "step": step,
                "path": path,
                "latency_ms": response.elapsed * 1000,
                "status": response.status,
                "x_bazar_cache": response.header(CACHE_HEADER),
                "replica": response.header(REPLICA_HEADER),
                **extra,
            }
        )

    try:
        for i in range(s.samples):
            if time.perf_counter() - started > s.max_seconds:
                break
            book = ctx.books[i % len(ctx.books)]
            info = f"/bazar/info/{book['id']}"
            search = f"/bazar/search/{quote(book['topic'], safe='')}"
            await get(info)
            await get(search)
            cached_info, cached_search = await get(info), await get(search)
            if cached_info is not None:
                record("info read, cached", i, info, cached_info)
            if not (cached_info and cached_search and cached_info.header(CACHE_HEADER) == "hit"):
                counts["not_cached_before_write"] += 1
            elif cached_search.header(CACHE_HEADER) != "hit":
                counts["not_cached_before_write"] += 1
            price = round(1000 + i + book["id"] / 100, 2)  # never the price it had
            counts["writes"] += 1
            try:
                write = await http.request(
                    "PUT", f"/bazar/update_price/{book['id']}", json.dumps({"price": price}).encode()
                )
            except RequestError:
                counts["write_errors"] += 1
                continue
            if write.status != 200:
                counts["write_errors"] += 1
                continue
            record(
                "update_price (replicate + invalidate)",
                i,
                f"/bazar/update_price/{book['id']}",
                write,
                price=price,
            )
            after_info = await get(info)
            if after_info is not None:
                record("info read right after the write", i, info, after_info, price=price)
                if after_info.header(CACHE_HEADER) == "hit":
                    counts["info_hit_after_write"] += 1
                if json.loads(after_info.body).get("price") != price:
                    counts["info_stale_after_write"] += 1
            after_search = await get(search)
            if after_search is not None:
                record("search read right after the write", i, search, after_search, price=price)
                if after_search.header(CACHE_HEADER) == "hit":
                    counts["search_hit_after_write"] += 1
                prices = {b["id"]: b["price"] for b in json.loads(after_search.body)}
                if prices.get(book["id"]) != price:
                    counts["search_stale_after_write"] += 1
            reread = await get(info)
            if reread is not None:
                record("info re-read (refilled)", i, info, reread)
                if reread.header(CACHE_HEADER) != "hit":
                    counts["reread_not_hit"] += 1
            task.update(i + 1)
        violations = sum(
            counts[k]
            for k in (
                "info_hit_after_write",
                "search_hit_after_write",
                "info_stale_after_write",
                "search_stale_after_write",
            )
        )
        task.finish(f"{violations} consistency violations")
        for book_id, price in original.items():  # leave the catalogue as it was
            await http.request("PUT", f"/bazar/update_price/{book_id}", json.dumps({"price": price}).encode())
    finally:
        http.close()
    rows = [{"step": step, **summarize(values).as_dict()} for step, values in latencies.items()]
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
    return {
        "caption": (
            "One client, books in turn: read the book's info and its topic's search until both are cached, "
            "PUT /bazar/update_price (acknowledged only once all 3 catalog replicas have it and the "
            "front end dropped the cached entries), then read both again — each must be a miss showing "
            "the new price."
        ),
        "samples": counts["writes"],
        "rows": rows,
        "counts": counts,
        "violations": violations,
        "notes": notes,
        "raw": raw,
        "latencies": latencies,
    }

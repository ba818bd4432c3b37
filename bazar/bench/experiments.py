"""The lab report's experiments, each repeated enough times for percentiles.

1. ``latency``: info, search and buy, one client, with and without the cache.
2. ``consistency``: price updates that must invalidate cached entries; the next read must miss
   and show the new price.
3. ``sweep``: a mix of queries and purchases (probability p of a purchase) from concurrent
   clients, with and without the cache.
4. ``lru``: the cache's counters over time under a skewed load whose hot keys shift.
5. ``throughput``: wrk against cache hits, misses and purchases, next to a bare twisted.web
   server sending the same bytes (the machine's ceiling).
6. ``memory``: the front end's resident memory over a long run of reads of ever new cache
   keys (and price updates): it must stay flat, bounded by the cache's size.
7. ``floor``: purchases through a purchase's message chain with Bazar's work left out
   (``bazar.bench.floor``), with and without one durable SQLite row per write, next to
   Bazar's own purchases in the same minutes: the least a purchase could take here.

Each returns a JSON-able dict: ``rows`` (what the table and CSV show), a ``caption``,
``notes`` (anything the numbers alone would hide) and, under ``raw``, per-request samples
for the ``*_samples.csv`` files.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import deferLater

from bazar.bench import memory as mem
from bazar.bench import wrk
from bazar.bench.cluster import ClusterInfo, catalog_reads, cpu_seconds, start_ceiling, start_floor
from bazar.bench.load import Call, HTTPClient, LoopResult, RequestError, Response, Sample, Target, closed_loop
from bazar.bench.progress import Progress
from bazar.bench.report import ratio, summarize
from bazar.launch import Processes, StartError, listening_pid

T = TypeVar("T")

EXPERIMENTS = ("latency", "consistency", "sweep", "lru", "throughput", "memory", "floor")
CPU_PREFIX = "cpu_ms_"  # a latency row's CPU time per request of one process: cpu_ms_<name>
LAB_BOOKS = 7  # the report's catalogue: every experiment uses these books (ids 0-6) only
STOCK = 1_000_000
BUY_BODY = b'{"quantity":1}'
COUNTERS = ("hits", "misses", "evictions", "invalidations")


@dataclass(frozen=True)
class Settings:
    samples: int = 1000
    concurrency: int = 5
    probabilities: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8)
    duration: float = 5.0
    wrk_threads: int = 2
    wrk_connections: int = 50
    max_seconds: float = 120.0
    timeout: float = 10.0
    lru_interval: float = 0.05
    lru_phases: int = 3
    memory_requests: int | None = None  # None: MEMORY_REQUESTS_PER_SAMPLE x samples
    memory_seconds: float = 30.0
    memory_interval: float = 0.25
    seed: int = 1


@dataclass
class Context:
    reactor: Any
    settings: Settings
    progress: Progress
    workdir: Path
    processes: Processes
    cache: ClusterInfo | None
    nocache: ClusterInfo | None
    books: list[dict[str, Any]] = field(default_factory=list)
    wrk_path: str | None = None
    fastest_loop_rps: float = 0.0  # the most experiments 1-4 asked of the load generator
    _clients: dict[str, HTTPClient] = field(default_factory=dict)

    @property
    def clusters(self) -> list[ClusterInfo]:
        """Without the cache first: its numbers are the baseline the cache is compared with."""
        return [c for c in (self.nocache, self.cache) if c is not None]

    @property
    def topics(self) -> list[str]:
        return list(dict.fromkeys(book["topic"] for book in self.books))

    @property
    def book_ids(self) -> list[int]:
        return [book["id"] for book in self.books]

    def client(self, cluster: ClusterInfo) -> HTTPClient:
        """A connection for control requests (top-ups, cache counters), separate from the load."""
        if cluster.url not in self._clients:
            self._clients[cluster.url] = HTTPClient(
                self.reactor, Target.from_url(cluster.url), self.settings.timeout
            )
        return self._clients[cluster.url]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    async def request(self, cluster: ClusterInfo, method: str, path: str, body: Any = None) -> Response:
        data = None if body is None else json.dumps(body).encode()
        return await self.client(cluster).request(method, path, data)

    async def json(self, cluster: ClusterInfo, method: str, path: str, body: Any = None) -> Any:
        response = await self.request(cluster, method, path, body)
        if response.status != 200:
            raise RequestError(
                f"{method} {path} on {cluster.url} answered {response.status}: {response.body[:200]!r}"
            )
        return json.loads(response.body)

    async def cache_stats(self, cluster: ClusterInfo) -> dict[str, Any]:
        status = await self.json(cluster, "GET", "/bazar/cluster")
        cache: dict[str, Any] = status["cache"]
        return cache

    async def top_up(self, cluster: ClusterInfo) -> None:
        """Stock enough for any run, so purchases measure buying rather than 409 Conflict."""
        for book_id in self.book_ids:
            await self.json(cluster, "PUT", f"/bazar/update_quantity/{book_id}", {"quantity": STOCK})

    def loop(
        self,
        cluster: ClusterInfo,
        label: str,
        plan: Callable[[int], Call],
        count: int,
        concurrency: int,
        observe: Callable[[Call, Response | None], None] | None = None,
        max_seconds: float | None = None,
    ) -> Any:
        limit = self.settings.max_seconds if max_seconds is None else max_seconds
        task = self.progress.task(label, count, limit)

        async def run() -> LoopResult:
            result = await closed_loop(
                self.reactor,
                Target.from_url(cluster.url),
                plan,
                count=count,
                concurrency=concurrency,
                max_seconds=limit,
                timeout=self.settings.timeout,
                task=task,
                observe=observe,
            )
            self.fastest_loop_rps = max(self.fastest_loop_rps, result.throughput)
            failed = sum(1 for s in result.samples if not s.ok)
            outcome = f"{result.throughput:,.0f} req/s"
            if failed:
                outcome += f", {failed} not 2xx"
            if result.truncated:
                outcome += f", STOPPED by the {limit:.0f} s limit"
            task.finish(outcome)
            return result

        return run()


def cache_label(cluster: ClusterInfo) -> str:
    return "off" if cluster.cache_size == 0 else "on"


def summary_row(samples: Sequence[Sample], **labels: Any) -> dict[str, Any]:
    """Latency of the 2xx answers, plus how many were not 2xx, how many were 409 and the hit ratio."""
    ok = [s.ms for s in samples if s.ok]
    hits = sum(1 for s in samples if s.ok and s.cache == "hit")
    misses = sum(1 for s in samples if s.ok and s.cache == "miss")
    return {
        **labels,
        **summarize(ok, errors=len(samples) - len(ok)).as_dict(),
        "status_409": sum(1 for s in samples if s.status == 409),
        "hit_ratio": hits / (hits + misses) if hits + misses else None,
    }


def sample_rows(samples: Sequence[Sample], **labels: Any) -> list[dict[str, Any]]:
    return [
        {
            **labels,
            "op": s.op,
            "path": s.path,
            "start_s": s.start,
            "latency_ms": s.ms,
            "status": s.status,
            "x_bazar_cache": s.cache,
            "replica": s.replica,
            "error": s.error,
        }
        for s in samples
    ]


def _paths(ctx: Context, capacity: int | None) -> tuple[list[str], list[str]]:
    """Info and search paths that fit in the cache together with nothing else: re-reads hit."""
    ids, topics = ctx.book_ids, ctx.topics
    if capacity:
        ids, topics = ids[:capacity], topics[:capacity]
    return [f"/bazar/info/{i}" for i in ids], [f"/bazar/search/{quote(t, safe='')}" for t in topics]


# -- 1. latency with and without the cache -----------------------------------------------------


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


# -- 2. consistency: writes invalidate --------------------------------------------------------


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
                "x_bazar_cache": response.header("X-Bazar-Cache"),
                "replica": response.header("X-Bazar-Replica"),
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
            if not (cached_info and cached_search and cached_info.header("X-Bazar-Cache") == "hit"):
                counts["not_cached_before_write"] += 1
            elif cached_search.header("X-Bazar-Cache") != "hit":
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
                if after_info.header("X-Bazar-Cache") == "hit":
                    counts["info_hit_after_write"] += 1
                if json.loads(after_info.body).get("price") != price:
                    counts["info_stale_after_write"] += 1
            after_search = await get(search)
            if after_search is not None:
                record("search read right after the write", i, search, after_search, price=price)
                if after_search.header("X-Bazar-Cache") == "hit":
                    counts["search_hit_after_write"] += 1
                prices = {b["id"]: b["price"] for b in json.loads(after_search.body)}
                if prices.get(book["id"]) != price:
                    counts["search_stale_after_write"] += 1
            reread = await get(info)
            if reread is not None:
                record("info re-read (refilled)", i, info, reread)
                if reread.header("X-Bazar-Cache") != "hit":
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


# -- 3. the purchase-probability sweep ---------------------------------------------------------


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


# -- 4. the LRU over time ---------------------------------------------------------------------


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


# -- 5. throughput with wrk --------------------------------------------------------------------


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


# -- 6. the front end's memory under a long run ------------------------------------------------

MEMORY_REQUESTS_PER_SAMPLE = 60  # the run's request bound: 60 x --samples (60,000 by default)
MEMORY_SEARCH_SHARE = 0.70  # searches for a topic no other request names: a new cache key each
MEMORY_WRITE_SHARE = 0.02  # price updates of the lab's books: invalidations
SECRET_HEADER = "X-Bazar-Secret"


class MemoryProbe:
    """The front end's resident memory, open descriptors and cache entries, from its /metrics
    (needs the cluster secret) or else from /proc of the process listening on its port."""

    def __init__(self, reactor: Any, cluster: ClusterInfo, timeout: float) -> None:
        self.cluster = cluster
        self.http = HTTPClient(reactor, Target.from_url(cluster.url), timeout)
        self.lock = DeferredLock()  # the poller and the run's own samples share one connection
        self.source: str | None = None
        self.pid: int | None = None
        self.problems: list[str] = []

    async def setup(self) -> None:
        """Pick the source: /metrics if it has ``process_resident_memory_bytes``, else /proc."""
        if self.cluster.secret is not None:
            values = await self._metrics()
            if values is not None and "process_resident_memory_bytes" in values:
                self.source = "metrics"
                return
            self.problems.append(
                "the front end's /metrics has no process_resident_memory_bytes"
                if values is not None
                else "the front end's /metrics did not answer with the secret given"
            )
        else:
            self.problems.append("no cluster secret (--secret-file), so not from /metrics")
        port = Target.from_url(self.cluster.url).port
        pid = listening_pid(port)
        if pid is not None and mem.proc_rss(pid) is not None:
            self.source, self.pid = f"/proc/{pid}/status", pid
            return
        self.problems.append(f"no process of ours listening on port {port} could be read in /proc")

    async def _metrics(self) -> dict[str, float] | None:
        assert self.cluster.secret is not None
        try:
            headers = {SECRET_HEADER: self.cluster.secret}
            response = await self.http.request("GET", "/metrics", headers=headers)
        except RequestError:
            return None
        if response.status != 200:
            return None
        return mem.parse_unlabelled(response.body.decode("utf-8", "replace"))

    async def read(self) -> dict[str, Any] | None:
        await self.lock.acquire()
        try:
            if self.source == "metrics":
                values = await self._metrics()
                if values is None or "process_resident_memory_bytes" not in values:
                    return None
                entries = values.get("bazar_cache_entries")
                fds = values.get("process_open_fds")
                return {
                    "rss_bytes": int(values["process_resident_memory_bytes"]),
                    "open_fds": None if fds is None else int(fds),
                    "cache_entries": None if entries is None else int(entries),
                }
            if self.pid is not None:
                rss = mem.proc_rss(self.pid)
                if rss is None:
                    return None
                entries = None
                try:
                    response = await self.http.request("GET", "/bazar/cluster")
                    entries = json.loads(response.body)["cache"]["size"]
                except (RequestError, ValueError, KeyError, TypeError):
                    pass
                return {"rss_bytes": rss, "open_fds": mem.proc_open_fds(self.pid), "cache_entries": entries}
            return None
        finally:
            self.lock.release()

    def close(self) -> None:
        self.http.close()


def memory_plan(
    seed: int, prefix: str, ids: Sequence[int], prices: Mapping[int, float]
) -> Callable[[int], Call]:
    """Request ``i`` of the memory run: a search for topic ``<prefix><i>`` (no book has it: the
    answer is ``[]``, cached under a key no other request uses), an info read of a lab book, or
    now and then a price update of one (a cent or two above its price) that invalidates."""
    rng = random.Random(f"{seed}-{prefix}")

    def plan(i: int) -> Call:
        draw = rng.random()
        if draw < MEMORY_WRITE_SHARE:
            book_id = ids[i % len(ids)]
            body = json.dumps({"price": round(prices[book_id] + 0.01 * (1 + i % 2), 2)}).encode()
            return Call("update_price", "PUT", f"/bazar/update_price/{book_id}", body)
        if draw < MEMORY_WRITE_SHARE + MEMORY_SEARCH_SHARE:
            return Call("search", "GET", f"/bazar/search/{prefix}{i}")
        return Call("info", "GET", f"/bazar/info/{rng.choice(ids)}")

    return plan


async def memory(ctx: Context, stage: str) -> dict[str, Any]:
    s = ctx.settings
    cluster = ctx.cache or ctx.nocache
    if cluster is None:
        return {"skipped": "no cluster"}
    probe = MemoryProbe(ctx.reactor, cluster, s.timeout)
    await probe.setup()
    if probe.source is None:
        probe.close()
        return {"skipped": "cannot read the front end's memory: " + "; ".join(probe.problems)}
    ctx.progress.say(f"{stage} resident memory from {probe.source}")
    capacity = cluster.cache_size
    count = s.memory_requests or MEMORY_REQUESTS_PER_SAMPLE * s.samples
    limit = min(s.memory_seconds, s.max_seconds)
    warm_count = max(1, min(count // 2, max(count // 10, 2 * (capacity or 0))))
    warm_limit = limit / 5
    ids = ctx.book_ids
    prices = {book["id"]: float(book["price"]) for book in ctx.books}
    samples: list[dict[str, Any]] = []
    served = {"requests": 0, "errors": 0}
    state = {"phase": "warm-up", "running": True}
    started = time.perf_counter()

    def observe(call: Call, response: Response | None) -> None:
        served["requests"] += 1
        if response is None or not 200 <= response.status < 300:
            served["errors"] += 1

    async def take(phase: str | None = None) -> dict[str, Any] | None:
        figures = await probe.read()
        if figures is None:
            return None
        sample = {
            "t": time.perf_counter() - started,
            "phase": phase or state["phase"],
            "requests": served["requests"],
            "errors": served["errors"],
            "rss_bytes": figures["rss_bytes"],
            "rss_mib": figures["rss_bytes"] / mem.MIB,
            "open_fds": figures["open_fds"],
            "cache_entries": figures["cache_entries"],
            "cache_capacity": capacity,
        }
        samples.append(sample)
        return sample

    async def poll() -> None:
        deadline = started + warm_limit + limit + 2 * s.timeout  # however the loops end
        while state["running"] and time.perf_counter() < deadline:
            await take()
            await deferLater(ctx.reactor, s.memory_interval)

    await take("before")
    polling = Deferred.fromCoroutine(poll())
    counters_before: dict[str, Any] = {}
    counters_after: dict[str, Any] = {}
    try:
        warm_plan = memory_plan(s.seed, f"bench-memory-warmup-{s.seed}-", ids, prices)
        await ctx.loop(
            cluster,
            f"{stage} warm-up",
            warm_plan,
            warm_count,
            s.concurrency,
            observe,
            max_seconds=warm_limit,
        )
        state["phase"] = "run"
        await take("run")  # the start: after the warm-up
        counters_before = await ctx.cache_stats(cluster)
        run_started = served["requests"]
        result = await ctx.loop(
            cluster,
            f"{stage} unique searches, infos, price updates",
            memory_plan(s.seed, f"bench-memory-{s.seed}-", ids, prices),
            count,
            s.concurrency,
            observe,
            max_seconds=limit,
        )
        await take("run")  # the end
        counters_after = await ctx.cache_stats(cluster)
    finally:
        state["running"] = False
        await polling
        try:  # leave the catalogue as it was
            for book_id, price in prices.items():
                await ctx.request(cluster, "PUT", f"/bazar/update_price/{book_id}", {"price": price})
        finally:
            probe.close()
    samples.sort(key=lambda sample: sample["t"])
    figures = mem.judge(samples, capacity)
    run_requests = served["requests"] - run_started
    figures.update(
        source=probe.source,
        requests=run_requests,
        warmup_requests=run_started,
        run_seconds=result.elapsed,
        truncated_by_time=result.truncated,
        request_limit=count,
        time_limit_s=limit,
    )
    rows = [
        {**summary_row(result.of(op), operation=op), "share": len(result.of(op)) / len(result.samples)}
        for op in ("search", "info", "update_price")
        if result.of(op)
    ]
    counters = {
        k: counters_after[k] - counters_before[k]
        for k in COUNTERS
        if k in counters_after and k in counters_before
    }
    notes = [f"memory read from {probe.source}"]
    if probe.problems and probe.source != "metrics":
        notes.append("not from /metrics: " + "; ".join(probe.problems))
    notes.append(f"verdict: {figures['verdict']}: {figures['why']} — {mem.RULE}")
    if figures.get("detectable_leak_bytes_per_request"):
        notes.append(
            f"a leak of more than ~{figures['detectable_leak_bytes_per_request']:,.0f} bytes per request "
            f"would have failed this run ({figures['second_half_requests']:,} requests in its second half)"
        )
    if figures["cache_within_capacity"] is False:
        notes.append(
            f"the cache held {figures['cache_entries_max']} entries, more than its capacity of {capacity}"
        )
    if counters:
        notes.append(
            "cache counters over the run: "
            + ", ".join(f"{counters[k]:,} {k}" for k in COUNTERS if k in counters)
        )
    errors = sum(r["errors"] for r in rows)
    if errors:
        notes.append(f"{errors} requests were not 2xx")
    if result.truncated:
        notes.append(f"the run stopped at its {limit:g} s limit before its {count:,} requests")
    start, end, peak = figures.get("start_mib"), figures.get("end_mib"), figures.get("max_mib")
    if start is not None and end is not None and peak is not None:
        half = figures.get("second_half_growth_mib")
        ctx.progress.say(
            f"{stage} RSS {start:.1f} MiB after the warm-up, max {peak:.1f}, end {end:.1f} "
            f"({figures['growth_mib']:+.2f} MiB)"
            + ("" if half is None else f"; second half's peak {half:+.2f} MiB over the first's")
            + f": {figures['verdict']}"
        )
    return {
        "caption": (
            f"{s.concurrency} concurrent clients, up to {count:,} requests or {limit:g} s (after a "
            f"warm-up of up to {warm_count:,} requests): {100 * MEMORY_SEARCH_SHARE:.0f} % searches for "
            "a topic no other request names (each a new cache key, answered `[]`), "
            f"{100 * (1 - MEMORY_SEARCH_SHARE - MEMORY_WRITE_SHARE):.0f} % info reads of the lab's "
            f"{len(ids)} books, {100 * MEMORY_WRITE_SHARE:.0f} % price updates (invalidations; prices "
            f"restored afterwards). The front end's resident memory (and cache entries; capacity "
            f"{capacity}) every {s.memory_interval * 1000:.0f} ms from {probe.source}."
        ),
        "memory": figures,
        "samples": samples,
        "rows": rows,
        "cache_counters": counters,
        "notes": notes,
    }


# -- 7. the floor of a purchase --------------------------------------------------------------

FLOOR_WARM_UP = 50  # requests through each chain before it is timed (connections, page cache)
FLOOR_CHAINS = (
    (False, "floor: the messages alone"),
    (True, "floor: the messages + one durable row per write"),
)


async def floor(ctx: Context, stage: str) -> dict[str, Any]:
    """A purchase's message chain run by seven processes that do nothing else (see
    ``bazar.bench.floor``), then Bazar's purchases, in the same minutes and the same way:
    one client, sequential POSTs. What Bazar takes beyond the durable floor is its own work."""
    s = ctx.settings
    cluster = ctx.cache or ctx.nocache
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    notes: list[str] = []

    async def timed(target: ClusterInfo, label: str, path: str) -> dict[str, Any]:
        def buy(i: int) -> Call:
            return Call("buy", "POST", path, BUY_BODY)

        await ctx.loop(target, f"{stage} {label}, warm-up", buy, min(FLOOR_WARM_UP, s.samples), 1)
        result = await ctx.loop(target, f"{stage} {label}", buy, s.samples, 1)
        raw.extend(sample_rows(result.samples, chain=label))
        row = summary_row(result.samples, chain=label)
        rows.append(row)
        return row

    floors: dict[bool, dict[str, Any]] = {}
    for durable, label in FLOOR_CHAINS:
        try:
            started, port = start_floor(ctx.processes, ctx.workdir, durable)
        except StartError as e:
            notes.append(f"{label}: not measured: {e}")
            ctx.progress.say(f"{stage} {label}: not measured: {e}")
            continue
        try:
            floors[durable] = await timed(ClusterInfo(label, f"http://127.0.0.1:{port}", None), label, "/")
        finally:
            for process in reversed(started):  # stopped before the next chain: the cores are few
                process.stop()
                ctx.processes.started.remove(process)
    bazar = None
    if cluster is not None:
        await ctx.top_up(cluster)
        path = f"/bazar/purchase/{ctx.book_ids[0]}"
        bazar = await timed(cluster, f"Bazar, cache {cache_label(cluster)}", path)
    floor_p50 = floors[True]["p50_ms"] if True in floors else None
    for row in rows:
        row["of_floor"] = ratio(row["p50_ms"], floor_p50)
        if row["errors"]:
            notes.append(f"{row['chain']}: {row['errors']} requests were not 2xx")
    if bazar is not None and bazar["p50_ms"] is not None and floor_p50 is not None:
        notes.append(
            f"Bazar's purchase p50 is {bazar['p50_ms'] - floor_p50:.2f} ms above the durable floor's "
            f"({bazar['of_floor']:.2f} times it): Bazar's own work on a purchase's critical path"
        )
    return {
        "caption": (
            f"{s.samples:,} sequential POSTs per row from one client, after {FLOOR_WARM_UP} untimed. A floor "
            "is seven processes passing a purchase's messages as Bazar does (client → front end over HTTP, "
            "treq → order sequencer → catalog sequencer → its 2 followers and the front end, then the order "
            "sequencer → its 2 followers, over AMP) and doing nothing else; the durable floor also commits "
            "one SQLite row per write at each of the six replicas (WAL, synchronous=FULL, through a "
            "one-connection adbapi pool). Bazar: POST /bazar/purchase/<id> on the cluster, right after. "
            "Of floor = p50 / the durable floor's p50."
        ),
        "samples": s.samples,
        "rows": rows,
        "notes": notes,
        "raw": raw,
    }


async def elections(ctx: Context) -> dict[str, dict[str, int]]:
    """Per cluster and role, how many elections there were: its newest epoch less one (the
    bench starts every cluster anew, in epoch 1, and injects no fault)."""
    counts: dict[str, dict[str, int]] = {}
    for cluster in ctx.clusters:
        status = await ctx.json(cluster, "GET", "/bazar/cluster")
        epochs: dict[str, int] = {}
        for replica in status["replicas"]:
            role = replica["role"]
            epochs[role] = max(epochs.get(role, 1), int(replica.get("epoch") or 1))
        counts[cluster.label] = {role: epoch - 1 for role, epoch in epochs.items()}
    return counts


RUNNERS = {
    "latency": latency,
    "consistency": consistency,
    "sweep": sweep,
    "lru": lru,
    "throughput": throughput,
    "memory": memory,
    "floor": floor,
}

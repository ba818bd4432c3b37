"""6. ``memory``: the front end's resident memory over a long run of reads of ever new cache
keys (and price updates): it must stay flat, bounded by the cache's size."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import deferLater

from bazar.bench import memory as mem
from bazar.bench.cluster import ClusterInfo
from bazar.bench.experiments.context import COUNTERS, Context, summary_row
from bazar.bench.load import Call, HTTPClient, RequestError, Response, Target
from bazar.launch import listening_pid
from bazar.protocol import SECRET_HEADER
from bazar.reactors import IClientReactor

MEMORY_REQUESTS_PER_SAMPLE = 60  # the run's request bound: 60 x --samples (60,000 by default)
MEMORY_SEARCH_SHARE = 0.70  # searches for a topic no other request names: a new cache key each
MEMORY_WRITE_SHARE = 0.02  # price updates of the lab's books: invalidations


class MemoryProbe:
    """The front end's resident memory, open descriptors and cache entries, from its /metrics
    (needs the cluster secret) or else from /proc of the process listening on its port."""

    def __init__(self, reactor: IClientReactor, cluster: ClusterInfo, timeout: float) -> None:
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

"""6. ``memory``: the front end's resident memory over a long run of reads of ever new cache
keys (and price updates): it must stay flat, bounded by the cache's size.

The load: ``MemoryProbe``, ``memory_plan`` and ``_drive``; the statistics: ``memory_sample``,
``memory_figures`` (with ``bazar.bench.memory.judge``), ``operation_rows`` and ``counter_deltas``
(pure); the words: ``memory_caption``, ``memory_notes`` and ``rss_line``."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import deferLater

from bazar.bench import memory as mem
from bazar.bench.cluster import ClusterInfo
from bazar.bench.experiments.context import COUNTERS, Context, Settings, summary_row
from bazar.bench.load import Call, HTTPClient, LoopResult, RequestError, Response, Target
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


@dataclass
class MemoryRuns:
    """What the run measured: the memory samples, the run's loop, the requests served in all
    (warm-up included) and before the run, and the cache's counters around the run."""

    source: str
    problems: list[str]
    samples: list[dict[str, Any]]
    result: LoopResult
    served: int
    warmup_requests: int
    counters_before: dict[str, Any]
    counters_after: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """The run's bounds: its requests and seconds, the warm-up's, the cache's capacity."""

    count: int
    limit: float
    warm_count: int
    warm_limit: float
    capacity: int | None

    @classmethod
    def of(cls, s: Settings, capacity: int | None) -> Plan:
        count = s.memory_requests or MEMORY_REQUESTS_PER_SAMPLE * s.samples
        limit = min(s.memory_seconds, s.max_seconds)
        warm_count = max(1, min(count // 2, max(count // 10, 2 * (capacity or 0))))
        return cls(count, limit, warm_count, limit / 5, capacity)


# -- the load --------------------------------------------------------------------------------


async def _drive(
    ctx: Context, stage: str, cluster: ClusterInfo, probe: MemoryProbe, plan: Plan
) -> MemoryRuns:
    """A warm-up, then the run, while a poller samples the front end's memory; prices restored."""
    s = ctx.settings
    ids = ctx.book_ids
    prices = {book["id"]: float(book["price"]) for book in ctx.books}
    samples: list[dict[str, Any]] = []
    served = {"requests": 0, "errors": 0}
    state: dict[str, Any] = {"phase": "warm-up", "running": True}
    started = time.perf_counter()

    def observe(call: Call, response: Response | None) -> None:
        served["requests"] += 1
        if response is None or not 200 <= response.status < 300:
            served["errors"] += 1

    async def take(phase: str | None = None) -> None:
        figures = await probe.read()
        if figures is not None:
            at = time.perf_counter() - started
            samples.append(memory_sample(at, phase or state["phase"], served, figures, plan.capacity))

    async def poll() -> None:
        deadline = started + plan.warm_limit + plan.limit + 2 * s.timeout  # however the loops end
        while state["running"] and time.perf_counter() < deadline:
            await take()
            await deferLater(ctx.reactor, s.memory_interval)

    await take("before")
    polling = Deferred.fromCoroutine(poll())
    try:
        warm_plan = memory_plan(s.seed, f"bench-memory-warmup-{s.seed}-", ids, prices)
        label = f"{stage} warm-up"
        await ctx.loop(
            cluster, label, warm_plan, plan.warm_count, s.concurrency, observe, max_seconds=plan.warm_limit
        )
        state["phase"] = "run"
        await take("run")  # the start: after the warm-up
        counters_before = await ctx.cache_stats(cluster)
        run_started = served["requests"]
        result = await ctx.loop(
            cluster,
            f"{stage} unique searches, infos, price updates",
            memory_plan(s.seed, f"bench-memory-{s.seed}-", ids, prices),
            plan.count,
            s.concurrency,
            observe,
            max_seconds=plan.limit,
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
    assert probe.source is not None
    return MemoryRuns(
        probe.source,
        probe.problems,
        samples,
        result,
        served["requests"],
        run_started,
        counters_before,
        counters_after,
    )


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
    plan = Plan.of(s, cluster.cache_size)
    measured = await _drive(ctx, stage, cluster, probe, plan)
    figures = memory_figures(measured, plan)
    rows = operation_rows(measured.result)
    counters = counter_deltas(measured.counters_before, measured.counters_after)
    line = rss_line(figures)
    if line is not None:
        ctx.progress.say(f"{stage} {line}")
    return {
        "caption": memory_caption(s, plan, len(ctx.book_ids), measured.source),
        "memory": figures,
        "samples": measured.samples,
        "rows": rows,
        "cache_counters": counters,
        "notes": memory_notes(measured, plan, figures, rows, counters),
    }


# -- the statistics --------------------------------------------------------------------------


def memory_sample(
    at: float, phase: str, served: Mapping[str, int], figures: Mapping[str, Any], capacity: int | None
) -> dict[str, Any]:
    """One reading of the front end, with the requests served (and failed) so far."""
    return {
        "t": at,
        "phase": phase,
        "requests": served["requests"],
        "errors": served["errors"],
        "rss_bytes": figures["rss_bytes"],
        "rss_mib": figures["rss_bytes"] / mem.MIB,
        "open_fds": figures["open_fds"],
        "cache_entries": figures["cache_entries"],
        "cache_capacity": capacity,
    }


def memory_figures(measured: MemoryRuns, plan: Plan) -> dict[str, Any]:
    """The verdict on the samples (``bazar.bench.memory.judge``) and what the run was."""
    figures = mem.judge(measured.samples, plan.capacity)
    figures.update(
        source=measured.source,
        requests=measured.served - measured.warmup_requests,
        warmup_requests=measured.warmup_requests,
        run_seconds=measured.result.elapsed,
        truncated_by_time=measured.result.truncated,
        request_limit=plan.count,
        time_limit_s=plan.limit,
    )
    return figures


def operation_rows(result: LoopResult) -> list[dict[str, Any]]:
    """A summary row per kind of request, with its share of the run."""
    return [
        {**summary_row(result.of(op), operation=op), "share": len(result.of(op)) / len(result.samples)}
        for op in ("search", "info", "update_price")
        if result.of(op)
    ]


def counter_deltas(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    return {k: after[k] - before[k] for k in COUNTERS if k in after and k in before}


# -- the words -------------------------------------------------------------------------------


def memory_notes(
    measured: MemoryRuns,
    plan: Plan,
    figures: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    counters: Mapping[str, Any],
) -> list[str]:
    notes = [f"memory read from {measured.source}"]
    if measured.problems and measured.source != "metrics":
        notes.append("not from /metrics: " + "; ".join(measured.problems))
    notes.append(f"verdict: {figures['verdict']}: {figures['why']} — {mem.RULE}")
    if figures.get("detectable_leak_bytes_per_request"):
        notes.append(
            f"a leak of more than ~{figures['detectable_leak_bytes_per_request']:,.0f} bytes per request "
            f"would have failed this run ({figures['second_half_requests']:,} requests in its second half)"
        )
    if figures["cache_within_capacity"] is False:
        notes.append(
            f"the cache held {figures['cache_entries_max']} entries, "
            f"more than its capacity of {plan.capacity}"
        )
    if counters:
        notes.append(
            "cache counters over the run: "
            + ", ".join(f"{counters[k]:,} {k}" for k in COUNTERS if k in counters)
        )
    errors = sum(r["errors"] for r in rows)
    if errors:
        notes.append(f"{errors} requests were not 2xx")
    if measured.result.truncated:
        notes.append(f"the run stopped at its {plan.limit:g} s limit before its {plan.count:,} requests")
    return notes


def rss_line(figures: Mapping[str, Any]) -> str | None:
    """The run's memory in one line for the terminal (None without a start, end and peak)."""
    start, end, peak = figures.get("start_mib"), figures.get("end_mib"), figures.get("max_mib")
    if start is None or end is None or peak is None:
        return None
    half = figures.get("second_half_growth_mib")
    return (
        f"RSS {start:.1f} MiB after the warm-up, max {peak:.1f}, end {end:.1f} "
        f"({figures['growth_mib']:+.2f} MiB)"
        + ("" if half is None else f"; second half's peak {half:+.2f} MiB over the first's")
        + f": {figures['verdict']}"
    )


def memory_caption(s: Settings, plan: Plan, books: int, source: str) -> str:
    return (
        f"{s.concurrency} concurrent clients, up to {plan.count:,} requests or {plan.limit:g} s (after a "
        f"warm-up of up to {plan.warm_count:,} requests): {100 * MEMORY_SEARCH_SHARE:.0f} % searches for "
        "a topic no other request names (each a new cache key, answered `[]`), "
        f"{100 * (1 - MEMORY_SEARCH_SHARE - MEMORY_WRITE_SHARE):.0f} % info reads of the lab's "
        f"{books} books, {100 * MEMORY_WRITE_SHARE:.0f} % price updates (invalidations; prices "
        f"restored afterwards). The front end's resident memory (and cache entries; capacity "
        f"{plan.capacity}) every {s.memory_interval * 1000:.0f} ms from {source}."
    )

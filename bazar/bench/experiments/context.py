"""What every experiment shares: the settings, the context (clusters, clients, progress),
the labels and the summary rows, and the elections count taken after them all."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bazar.bench import wrk
from bazar.bench.cluster import ClusterInfo
from bazar.bench.load import Call, HTTPClient, LoopResult, RequestError, Response, Sample, Target, closed_loop
from bazar.bench.progress import Progress
from bazar.bench.stats import summarize
from bazar.launch import Processes
from bazar.reactors import IBenchReactor

EXPERIMENTS = (
    "latency",
    "consistency",
    "sweep",
    "lru",
    "throughput",
    "memory",
    "floor",
    "writes",
    "frontends",
)
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
    frontends: tuple[int, ...] = (1, 2, 4)  # the front-end counts of the frontends experiment

    @property
    def wrk_args(self) -> str:
        """The wrk command line of a run, as the reports show it."""
        return f"wrk -t{self.wrk_threads} -c{self.wrk_connections} -d{max(1, round(self.duration))}s"


@dataclass
class Context:
    reactor: IBenchReactor
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

    async def wrk(
        self, stage: str, label: str, url: str, script: str, problems: list[str]
    ) -> dict[str, Any] | None:
        """One wrk run (``Settings``' threads, connections, duration) at ``url``: its figures,
        or None with why in ``problems``."""
        s = self.settings
        self.progress.say(f"{stage} {label}: {s.wrk_args} {url} ...")
        try:
            result = await wrk.run(
                self.reactor,
                self.wrk_path or "wrk",
                url,
                script,
                self.workdir,
                threads=s.wrk_threads,
                connections=s.wrk_connections,
                duration=s.duration,
            )
        except RuntimeError as e:
            problems.append(f"{label}: {e}")
            self.progress.say(f"{stage} {label}: failed: {e}")
            return None
        self.progress.say(f"{stage} {label}: {result.rps:,.0f} req/s, p99 {result.p99_ms:.1f} ms")
        return result.as_dict()

    def forget(self, cluster: ClusterInfo) -> None:
        """Close the control connection to ``cluster`` (stopped, or about to be)."""
        client = self._clients.pop(cluster.url, None)
        if client is not None:
            client.close()

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


@dataclass(frozen=True)
class Run:
    """One closed loop as measured, and the labels its rows and its samples carry."""

    labels: dict[str, Any]
    result: LoopResult


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

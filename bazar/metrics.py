"""Prometheus metrics for every role, served at ``/metrics`` (with the cluster secret).

Each process has its own registry: requests by route and status, a latency histogram by
route (and the same two for calls over the internal channel, ``bazar.channel``), the
process's own figures (``process_resident_memory_bytes``, ``process_open_fds``, CPU
seconds: prometheus_client's ProcessCollector, where there is a ``/proc``), and whatever
its role registers (cache counters at the front end, sequence numbers and follower lag
at replicas, replica health as the front end sees it). Routes are labelled by their
pattern (``/bazar/info/:id``), never by the raw path, so the number of series stays
bounded whatever clients send.
"""

from __future__ import annotations

import functools
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from bazar.errors import BazarError
from bazar.jsonio import raw_header, respond
from bazar.protocol import SECRET_HEADER
from bazar.secret import verify_secret

METRICS_PATH = b"/metrics"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

# Path segments that name a route; any other segment is a parameter. Keeps label values bounded.
_ROUTE_WORDS = frozenset(
    "bazar info all search purchase update_price update_quantity orders cluster catalog books buy price"
    " quantity lookup order internal replicate status invalidate metrics openapi.json static".split()
)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


@functools.lru_cache(maxsize=4096)
def route_label(path: str) -> str:
    """The route a path belongs to: ``/bazar/info/7`` → ``/bazar/info/:id``, a topic → ``:arg``.
    Remembered: every request and channel call asks, mostly for the same few paths."""
    segments = path.split("/")[:6]
    return "/".join(s if s in _ROUTE_WORDS or not s else (":id" if s.isdigit() else ":arg") for s in segments)


class Metrics:
    def __init__(self, role: str, name: str) -> None:
        self.role = role
        self.name = name
        self.registry = CollectorRegistry()
        # Memory, file descriptors and CPU of this process, read from /proc when scraped (so a
        # long run can show that memory stays flat); nothing on systems without /proc.
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "bazar_requests", "HTTP requests answered", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "bazar_request_seconds",
            "Time from request to response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.calls = Counter(
            "bazar_channel_calls",
            "Internal channel calls answered (bazar.channel: replication, buys, invalidations)",
            ["route", "status"],
            registry=self.registry,
        )
        self.call_latency = Histogram(
            "bazar_channel_call_seconds",
            "Time from an internal channel call to its answer",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Label lookups take a lock and hash the values: do them once per series.
        # Keyed by the counter's label values: (route, method, status) or (route, status).
        self._series: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def collect_with(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Register a callback that reads its figures when scraped (no bookkeeping on the hot path)."""
        self.registry.register(_Callback(collect))

    def observe(self, path: str, method: str, status: int, seconds: float) -> None:
        route = route_label(path)
        self._count(self.requests, self.latency, (route, method, str(status)), route, seconds)

    def observe_call(self, path: str, status: int, seconds: float) -> None:
        """One call answered over the internal channel (``bazar.channel``)."""
        route = route_label(path)
        self._count(self.calls, self.call_latency, (route, str(status)), route, seconds)

    def _count(
        self, counter: Counter, histogram: Histogram, labels: tuple[str, ...], route: str, seconds: float
    ) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = (counter.labels(*labels), histogram.labels(route))
        series[0].inc()
        series[1].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def gauge(
    name: str, documentation: str, labels: list[str], samples: Iterable[tuple[list[str], float]]
) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for label_values, value in samples:
        family.add_metric(label_values, value)
    return family


# Batch sizes: 1 (a write or take that went alone) up to the largest batches allowed
# (``bazar.group_commit.MAX_WRITES``, ``bazar.protocol.messages.MAX_BUYS``).
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Sizes:
    """How many items each batch held: counts per bucket, their number and sum.

    Kept by the batching code itself (one bisect per batch, not per item) and read only
    when scraped (``histogram``), so a batch costs no prometheus_client call."""

    __slots__ = ("buckets", "count", "counts", "total")

    def __init__(self, buckets: tuple[int, ...] = SIZE_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last: above every bucket
        self.count = 0
        self.total = 0

    def record(self, size: int) -> None:
        self.counts[bisect_left(self.buckets, size)] += 1
        self.count += 1
        self.total += size

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


def histogram(name: str, documentation: str, sizes: Sizes) -> HistogramMetricFamily:
    """``sizes`` as a Prometheus histogram (cumulative buckets, ``_count`` and ``_sum``)."""
    cumulative, running = [], 0
    for bound, count in zip((*map(str, sizes.buckets), "+Inf"), sizes.counts, strict=True):
        running += count
        cumulative.append((bound, running))
    return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=sizes.total)


class MeasuredResource(Resource):
    """Wraps a role's whole resource: times and counts every request, and serves ``/metrics``."""

    isLeaf = True

    def __init__(self, inner: IResource, metrics: Metrics, secret: str) -> None:
        super().__init__()
        self.inner = inner
        self.metrics = metrics
        self.secret = secret

    def render(self, request: Request) -> Any:
        if request.path == METRICS_PATH:
            return self._exposition(request)
        started = time.perf_counter()
        body = self.inner.render(request)
        if body is NOT_DONE_YET and not request.finished:
            request.notifyFinish().addBoth(self._finished, request, started)
        else:  # answered already (a cache hit, an error): no Deferred needed to time it
            self._finished(None, request, started)
        return body

    def _finished(self, result: Any, request: Request, started: float) -> None:
        path = request.path.decode("utf-8", "replace")
        method = request.method.decode("latin-1")
        self.metrics.observe(
            path, method if method in _METHODS else "other", request.code, time.perf_counter() - started
        )

    def _exposition(self, request: IRequest) -> bytes:
        try:
            _check_scraper(request, self.secret)
        except BazarError as e:
            return respond(request, e.body(), e.code)
        body = self.metrics.exposition()
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST)
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return body


def _check_scraper(request: IRequest, secret: str) -> None:
    """The cluster secret, as ``X-Bazar-Secret`` or as a bearer token (what Prometheus can send)."""
    given = raw_header(request, SECRET_HEADER)
    authorization = raw_header(request, "Authorization")
    if given is None and authorization is not None:
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() == b"bearer":
            given = token.strip()
    verify_secret(given, secret)

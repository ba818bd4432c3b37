"""``/metrics`` on every role: Prometheus text, behind the cluster secret, with bounded labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from bazar.metrics import Sizes, histogram, route_label
from tests.unit.memcluster import SECRET, MemCluster


def samples(text: str, name: str) -> dict[str, float]:
    """``{'labels': value}`` of every sample of metric ``name`` in an exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key[len(name) :]] = float(value)
    return out


class RouteLabelTests(SynchronousTestCase):
    def test_parameters_become_placeholders(self) -> None:
        """Ids and topics never become label values, so series stay bounded whatever clients send."""
        table = {
            "/bazar/info/7": "/bazar/info/:id",
            "/bazar/info/all": "/bazar/info/all",
            "/bazar/search/distributed systems": "/bazar/search/:arg",
            "/catalog/books/3/buy": "/catalog/books/:id/buy",
            "/bazar/no/such/path/at/all/x/y": "/bazar/:arg/:arg/:arg/:arg",
            "/": "/",
        }
        for path, label in table.items():
            self.assertEqual(route_label(path), label, path)


class SizesTests(SynchronousTestCase):
    def test_counts_per_bucket_count_and_sum(self) -> None:
        """Each batch lands in the first bucket it fits; the histogram's buckets are cumulative,
        with +Inf for what is above them, and its count and sum are the batches' and items'."""
        sizes = Sizes((1, 4, 16))
        for size in (1, 1, 3, 4, 5, 17):
            sizes.record(size)
        self.assertEqual(sizes.counts, [2, 2, 1, 1])
        self.assertEqual((sizes.count, sizes.total), (6, 31))
        self.assertAlmostEqual(sizes.mean, 31 / 6)
        [*buckets, count, total] = histogram("x", "doc", sizes).samples
        self.assertEqual(
            [(b.labels["le"], b.value) for b in buckets], [("1", 2), ("4", 4), ("16", 5), ("+Inf", 6)]
        )
        self.assertEqual((count.name, count.value, total.name, total.value), ("x_count", 6, "x_sum", 31))

    def test_nothing_recorded(self) -> None:
        """Before any batch: every bucket 0 and a mean of 0, not a division by zero."""
        sizes = Sizes()
        self.assertEqual((sizes.count, sizes.mean), (0, 0.0))
        self.assertEqual({s.value for s in histogram("x", "doc", sizes).samples}, {0})


class BatchSizeMetricsTests(SynchronousTestCase):
    """Purchases that arrive together: the order sequencer's takes go in one call, and both
    sequencers commit them in one transaction; /metrics shows the batches' sizes."""

    def setUp(self) -> None:
        self.cluster = MemCluster(self, queued=True)
        self.addCleanup(self.cluster.close)

    def scrape(self, name: str) -> str:
        reply = self.cluster.wait(
            self.cluster.send("GET", "/metrics", to=name, headers={"X-Bazar-Secret": SECRET})
        )
        return str(reply.json)

    def test_batches_of_purchases(self) -> None:
        """Six purchases at once: one take alone, then five in one call; each sequencer commits
        one write, then five together."""
        sent = [self.cluster.send("POST", "/bazar/purchase/3", {}) for _ in range(6)]
        self.assertEqual([self.cluster.wait(d).code for d in sent], [200] * 6)
        order = self.scrape("order-1")
        takes = samples(order, "bazar_take_batch_takes_bucket")
        self.assertEqual((takes['{le="1"}'], takes['{le="4"}'], takes['{le="8"}']), (1, 1, 2))
        self.assertEqual(samples(order, "bazar_take_batch_takes_sum")[""], 6)
        for name in ("order-1", "catalog-1"):
            text = self.scrape(name)
            commits = samples(text, "bazar_group_commit_writes_bucket")
            self.assertEqual((commits['{le="1"}'], commits['{le="8"}']), (1, 2), name)
            self.assertEqual(samples(text, "bazar_group_commit_writes_count")[""], 2, name)
            self.assertEqual(samples(text, "bazar_group_commit_writes_sum")[""], 6, name)
        catalog = self.scrape("catalog-2")
        self.assertEqual(
            samples(catalog, "bazar_group_commit_writes_count")[""], 0
        )  # a follower sequences none
        self.assertNotIn("bazar_take_batch_takes", catalog)


class MetricsEndpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def metrics(self, name: str, **headers: Any) -> Any:
        return self.cluster.wait(self.cluster.send("GET", "/metrics", to=name, headers=headers))

    def test_needs_the_secret(self) -> None:
        """Without the secret 401, with a wrong one 403, as a bearer token or in X-Bazar-Secret 200."""
        for name in ("frontend", "catalog-1", "order-2"):
            self.assertEqual(self.metrics(name).code, 401)
            self.assertEqual(self.metrics(name, **{"X-Bazar-Secret": "nope"}).code, 403)
            self.assertEqual(self.metrics(name, **{"X-Bazar-Secret": b"\xff\xfe"}).code, 403)  # not UTF-8
            self.assertEqual(self.metrics(name, Authorization="Bearer nope").code, 403)
            self.assertEqual(self.metrics(name, Authorization=b"Bearer \xff\xfe").code, 403)
            self.assertEqual(self.metrics(name, Authorization=f"Bearer {SECRET}").code, 200)
            self.assertEqual(self.metrics(name, **{"X-Bazar-Secret": SECRET}).code, 200)

    def test_frontend_counts_requests_and_cache(self) -> None:
        """Requests by route and status, latency, cache counters and replica reachability."""
        self.cluster.get("/bazar/info/1")
        self.cluster.get("/bazar/info/1")
        self.cluster.get("/bazar/info/99")
        self.cluster.put("/bazar/update_price/1", {"price": 5})
        text = self.metrics("frontend", Authorization=f"Bearer {SECRET}").json
        requests = samples(text, "bazar_requests_total")
        self.assertEqual(requests['{method="GET",route="/bazar/info/:id",status="200"}'], 2)
        self.assertEqual(requests['{method="GET",route="/bazar/info/:id",status="404"}'], 1)
        self.assertEqual(requests['{method="PUT",route="/bazar/update_price/:id",status="200"}'], 1)
        self.assertEqual(samples(text, "bazar_request_seconds_count")['{route="/bazar/info/:id"}'], 3)
        self.assertEqual(samples(text, "bazar_cache_hits_total")[""], 1)
        self.assertEqual(samples(text, "bazar_cache_misses_total")[""], 2)
        self.assertEqual(samples(text, "bazar_cache_invalidations_total")[""], 1)
        up = samples(text, "bazar_replica_up")
        self.assertEqual(up['{replica="catalog-1",role="catalog"}'], 1.0)

    def test_process_memory_and_descriptors(self) -> None:
        """Every role reports its resident memory and open descriptors (what ``bazar-bench``'s memory
        experiment samples), read from /proc when scraped."""
        if not Path("/proc/self/stat").exists():
            raise SkipTest("no /proc: prometheus_client's ProcessCollector reports nothing here")
        for name in ("frontend", "catalog-1"):
            text = self.metrics(name, **{"X-Bazar-Secret": SECRET}).json
            rss = samples(text, "process_resident_memory_bytes")[""]
            self.assertGreater(rss, 1024 * 1024)  # a Python process is never under 1 MiB
            self.assertLess(rss, 64 * 1024**3)
            self.assertGreater(samples(text, "process_open_fds")[""], 0)
            self.assertIn("process_cpu_seconds_total", text)

    def test_sequencer_reports_replication(self) -> None:
        """The catalog sequencer exposes its last sequence number and each follower's, with no lag."""
        self.cluster.put("/bazar/update_price/1", {"price": 5})
        self.cluster.post("/bazar/purchase/1")
        text = self.metrics("catalog-1", **{"X-Bazar-Secret": SECRET}).json
        self.assertEqual(samples(text, "bazar_replication_last_seq")[""], 2)
        self.assertEqual(samples(text, "bazar_replication_follower_seq")['{follower="catalog-2"}'], 2)
        self.assertEqual(samples(text, "bazar_replication_lag")['{follower="catalog-3"}'], 0)
        follower = self.metrics("order-3", **{"X-Bazar-Secret": SECRET}).json
        self.assertEqual(samples(follower, "bazar_replication_last_seq")[""], 1)
        self.assertNotIn("bazar_replication_lag", follower)

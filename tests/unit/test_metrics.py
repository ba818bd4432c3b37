"""``/metrics`` on every role: Prometheus text, behind the cluster secret, with bounded labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from bazar.metrics import route_label
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

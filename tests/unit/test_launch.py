"""``bazar.launch.start_cluster``: when it calls a cluster started (without starting one).

The processes and the HTTP status polls are stand-ins; the config is written for real.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bazar.launch import cluster


class _Started:
    """Stands in for ``bazar.launch.Process``: a cluster that runs until stopped."""

    def __init__(self, name: str, args: list[str], cwd: Path, ports: Any = ()) -> None:
        self.name = name
        self.stopped = False

    def running(self) -> bool:
        return not self.stopped

    def stop(self, timeout: float) -> None:
        self.stopped = True


class StartClusterTests(SynchronousTestCase):
    def test_started_once_every_front_end_sees_every_replica_up(self) -> None:
        """With two front ends, ``start_cluster`` returns only once each one's ``/bazar/cluster``
        shows every replica healthy: the second one's first probes may not have seen them yet
        (it would answer writes 503), however healthy the default one says they are."""
        polls: Counter[str] = Counter()
        urls: list[str] = []

        def status(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
            polls[url] += 1
            healthy = url == urls[0] or polls[url] >= 2  # the second: from its second poll
            return {"replicas": [{"name": "catalog-1", "healthy": True}]} if healthy else None

        real_write_config = cluster.write_config

        def write_config(directory: Path, **settings: Any) -> cluster.Layout:
            layout = real_write_config(directory, **settings)
            urls[:] = [layout.url(name) for name in layout.frontends]
            return layout

        self.patch(cluster, "cluster_status", status)
        self.patch(cluster, "write_config", write_config)
        self.patch(cluster, "Process", _Started)
        started = cluster.start_cluster(Path(self.mktemp()), secret="s", frontends=2)
        self.assertEqual(len(urls), 2)
        self.assertEqual(polls[urls[1]], 2)  # asked until it saw every replica up
        self.assertFalse(started.process.stopped)


class ClusterStatusTests(SynchronousTestCase):
    def status_with(self, frontends: list[dict[str, Any]]) -> dict[str, Any] | None:
        body = {"replicas": [{"name": "catalog-1", "healthy": True}], "frontends": frontends}
        self.patch(cluster, "get_json", lambda url, timeout: (200, body))
        return cluster.cluster_status("http://127.0.0.1:5000")

    def test_ready_only_once_every_front_end_holds_its_leases(self) -> None:
        """Every replica healthy is not enough: until a front end holds its cache lease it
        answers every read as a miss (the walkthrough's second read would not be a hit)."""
        held = {"catalog": {"valid": True}, "order": {"valid": True}}
        lapsed = {"catalog": {"valid": False}, "order": {"valid": True}}
        one = {"name": "frontend-1", "healthy": True, "leases": held}
        self.assertIsNotNone(self.status_with([one]))
        self.assertIsNone(self.status_with([one, {"name": "frontend-2", "healthy": True, "leases": lapsed}]))
        self.assertIsNone(self.status_with([one, {"name": "frontend-2", "healthy": False, "error": "x"}]))

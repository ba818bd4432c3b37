"""``bazar.assembly``: the builders hand back a wired process and do no I/O of their own."""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bazar import config as bazar_config
from bazar.assembly import RoleService, build_frontend, build_replica
from bazar.catalog.app import CatalogApp
from bazar.catalog.store import CatalogStore
from bazar.client import ReplicaClient
from bazar.config import ConfigError
from bazar.endpoints import RequireSecret
from bazar.failover import Watchdog
from bazar.health import HealthProbe
from bazar.invalidation import LeaseRenewal
from bazar.metrics import MeasuredResource
from bazar.order.app import OrderApp
from bazar.order.store import OrderStore
from bazar.runners import InlineRunner
from tests.unit.memnet import MemNetwork

CONFIG = bazar_config.parse({"cluster": {"secret": "s", "data_dir": "/nonexistent"}}, source="test_assembly")


class BuildReplicaTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.client = ReplicaClient(MemNetwork().http, CONFIG.secret, self.clock)

    def store(self, store_type: type[CatalogStore] | type[OrderStore]) -> CatalogStore | OrderStore:
        store = store_type(InlineRunner(), **store_type.options(CONFIG))
        self.successResultOf(store.setup())
        self.addCleanup(store.close)
        return store

    def test_catalog_replica(self) -> None:
        """A catalog replica: its app, behind metrics and the secret, its channel, its services;
        no listener, nothing scheduled, and its data dir (which does not exist) untouched."""
        process = build_replica(CONFIG, "catalog-2", self.store(CatalogStore), self.client, self.clock)
        self.assertIsInstance(process.app, CatalogApp)
        self.assertIsInstance(process.resource, MeasuredResource)
        self.assertIsInstance(process.resource.inner, RequireSecret)
        self.assertEqual(process.app.stamp().replica, "catalog-2")
        self.assertEqual([type(s) for s in process.services], [RoleService, Watchdog, LeaseRenewal])
        self.assertFalse(any(isinstance(s, StreamServerEndpointService) for s in process.services))
        self.assertFalse(any(s.running for s in process.services))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_first_replica_sequences_once_started(self) -> None:
        """On a new store the first replica of its role sequences writes once its services start,
        as a freshly started cluster does; the second one does not."""
        first = build_replica(CONFIG, "order-1", self.store(OrderStore), self.client, self.clock)
        second = build_replica(CONFIG, "order-2", self.store(OrderStore), self.client, self.clock)
        self.assertIsInstance(first.app, OrderApp)
        self.assertIsNone(first.role.writer)  # built, not started
        for process in (first, second):
            for service in process.services:
                service.startService()
                self.addCleanup(service.stopService)
        self.assertIsNotNone(first.role.writer)
        self.assertIsNone(second.role.writer)
        self.assertEqual(first.role.sequencer.name, "order-1")

    def test_unknown_replica(self) -> None:
        with self.assertRaises(ConfigError):
            build_replica(CONFIG, "catalog-9", self.store(CatalogStore), self.client, self.clock)


class BuildFrontendTests(SynchronousTestCase):
    def test_frontend(self) -> None:
        """The front end: its public resource with metrics, its channel, its health probe (not started)."""
        clock = Clock()
        process = build_frontend(CONFIG, ReplicaClient(MemNetwork().http, CONFIG.secret, clock), clock)
        self.assertIsInstance(process.resource, MeasuredResource)
        self.assertNotIsInstance(process.resource.inner, RequireSecret)
        self.assertEqual([type(s) for s in process.services], [HealthProbe])
        self.assertFalse(process.services[0].running)
        self.assertEqual(clock.getDelayedCalls(), [])

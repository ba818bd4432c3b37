"""``twistd -n bazar-catalog --config FILE --replica NAME``: one catalog replica."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from bazar.catalog.app import CatalogApp
from bazar.catalog.store import CatalogStore
from bazar.client import ReplicaClient
from bazar.config import Config, Replica
from bazar.failover import Role
from bazar.invalidation import book_keys
from bazar.replica import replica_service
from bazar.replication import Sequencer
from bazar.service import ReplicaOptions


class Options(ReplicaOptions):
    synopsis = "--replica NAME [--config FILE]"
    longdesc = (
        "Run one catalog replica. The first catalog replica in the config sequences every catalog write."
    )


def _app(
    config: Config,
    replica: Replica,
    store: CatalogStore,
    client: ReplicaClient,
    writer: Sequencer | None,
    role: Role | None = None,
) -> CatalogApp:
    return CatalogApp(replica, store, client, config.catalog_sequencer, writer, config.secret, role)


def makeService(options: Options, reactor: Any = None) -> MultiService:
    return replica_service("catalog", options, CatalogStore, _app, book_keys, reactor)

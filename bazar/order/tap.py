"""``twistd -n bazar-order --config FILE --replica NAME``: one order replica."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from bazar.client import ReplicaClient
from bazar.config import Config, Replica
from bazar.failover import Role
from bazar.order.app import OrderApp
from bazar.order.store import OrderStore
from bazar.replica import replica_service
from bazar.replication import Sequencer
from bazar.service import ReplicaOptions


class Options(ReplicaOptions):
    synopsis = "--replica NAME [--config FILE]"
    longdesc = "Run one order replica. The first order replica in the config assigns order ids."


def _app(
    config: Config,
    replica: Replica,
    store: OrderStore,
    client: ReplicaClient,
    writer: Sequencer | None,
    role: Role | None = None,
) -> OrderApp:
    return OrderApp(
        replica, store, client, config.order_sequencer, writer, config.catalog, config.secret, role
    )


def makeService(options: Options, reactor: Any = None) -> MultiService:
    return replica_service("order", options, OrderStore, _app, reactor=reactor)

"""``twistd -n bazar-order --config FILE --replica NAME``: one order replica."""

from __future__ import annotations

from twisted.application.service import MultiService

from bazar.order.store import OrderStore
from bazar.reactors import IServerReactor
from bazar.service import ReplicaOptions, replica_service


class Options(ReplicaOptions):
    synopsis = "--replica NAME [--config FILE]"
    longdesc = "Run one order replica. The first order replica in the config assigns order ids."


def makeService(options: Options, reactor: IServerReactor | None = None) -> MultiService:
    return replica_service("order", options, OrderStore, reactor)

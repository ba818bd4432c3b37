"""``twistd -n bazar-order --config FILE --replica NAME``: one order replica."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from bazar.order.store import OrderStore
from bazar.service import ReplicaOptions, replica_service


class Options(ReplicaOptions):
    synopsis = "--replica NAME [--config FILE]"
    longdesc = "Run one order replica. The first order replica in the config assigns order ids."


def makeService(options: Options, reactor: Any = None) -> MultiService:
    return replica_service("order", options, OrderStore, reactor)

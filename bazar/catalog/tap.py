"""``twistd -n bazar-catalog --config FILE --replica NAME``: one catalog replica."""

from __future__ import annotations

from twisted.application.service import MultiService

from bazar.catalog.store import CatalogStore
from bazar.reactors import IServerReactor
from bazar.service import ReplicaOptions, replica_service


class Options(ReplicaOptions):
    synopsis = "--replica NAME [--config FILE]"
    longdesc = (
        "Run one catalog replica. The first catalog replica in the config sequences every catalog write."
    )


def makeService(options: Options, reactor: IServerReactor | None = None) -> MultiService:
    return replica_service("catalog", options, CatalogStore, reactor)

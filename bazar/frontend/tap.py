"""``twistd -n bazar-frontend [--config FILE]``: the front end."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from bazar.frontend.app import FrontendApp
from bazar.health import HealthProbe
from bazar.metrics import MeasuredResource
from bazar.service import (
    CallOnStop,
    ConfigOptions,
    check_port_free,
    load_config,
    replica_client,
    role_service,
    web_service,
)
from bazar.web import make_site


class Options(ConfigOptions):
    synopsis = "[--config FILE]"
    longdesc = "Run Bazar's front end: the public API, the LRU cache, round robin over the replicas."


def makeService(options: Options, reactor: Any = None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    config = load_config("frontend", options["config"])
    check_port_free("frontend", config.frontend.listen)
    client, close_pool = replica_client(reactor, config)
    app = FrontendApp(config, client)
    resource = MeasuredResource(app.resource(), app.metrics, config.secret)
    probe = HealthProbe(app.health, [*config.catalog, *config.order], client, reactor, config.probe_interval)
    return role_service(
        web_service(config.frontend.listen, make_site(resource), reactor), probe, CallOnStop(close_pool)
    )

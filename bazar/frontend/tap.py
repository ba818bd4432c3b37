"""``twistd -n bazar-frontend [--config FILE]``: the front end."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from bazar.channel import ChannelServer, Stamp
from bazar.frontend.app import FrontendApp
from bazar.health import HealthProbe
from bazar.http_limits import make_site
from bazar.metrics import MeasuredResource
from bazar.service import (
    CallOnStop,
    ConfigOptions,
    channel_service,
    check_ports_free,
    load_config,
    replica_client,
    role_service,
    web_service,
)


class Options(ConfigOptions):
    role = "frontend"
    synopsis = "[--config FILE]"
    longdesc = "Run Bazar's front end: the public API, the LRU cache, round robin over the replicas."


def makeService(options: Options, reactor: Any = None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    config = load_config("frontend", options["config"])
    check_ports_free("frontend", config.frontend)
    client, close_client = replica_client(reactor, config)  # treq only: no channel out
    app = FrontendApp(config, client)
    resource = MeasuredResource(app.resource(), app.metrics, config.secret)
    probe = HealthProbe(app.health, [*config.catalog, *config.order], client, reactor, config.probe_interval)
    # In: the sequencers' invalidation pushes, over the channel when it has one.
    stamp = Stamp(config.frontend.name)
    channel = ChannelServer(app.channel_handlers(), config.secret, lambda: stamp, app.metrics.observe_call)
    return role_service(
        web_service(config.frontend.listen, make_site(resource), reactor),
        *channel_service(config.frontend, channel, reactor),
        probe,
        CallOnStop(close_client),
    )

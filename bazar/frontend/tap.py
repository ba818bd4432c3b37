"""``twistd -n bazar-frontend [--config FILE]``: the front end."""

from __future__ import annotations

from twisted.application.service import MultiService

from bazar.assembly import build_frontend
from bazar.http_limits import make_site
from bazar.reactors import IServerReactor, running_reactor
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


def makeService(options: Options, reactor: IServerReactor | None = None) -> MultiService:
    if reactor is None:
        reactor = running_reactor(IServerReactor)
    config = load_config("frontend", options["config"])
    check_ports_free("frontend", config.frontend)
    # Out: writes over the channel to replicas that have one; reads over HTTP with treq.
    client, close_client = replica_client(reactor, config, channel=True)
    process = build_frontend(config, client, reactor)
    # In: the sequencers' invalidation pushes, over the channel when it has one.
    return role_service(
        web_service(config.frontend.listen, make_site(process.resource), reactor),
        *channel_service(config.frontend, process.channel, reactor),
        *process.services,
        CallOnStop(close_client),
    )

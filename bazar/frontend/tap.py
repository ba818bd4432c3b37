"""``twistd -n bazar-frontend [--config FILE] [--name NAME]``: a front end."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from twisted.application.service import MultiService

from bazar.assembly import build_frontend
from bazar.config import ConfigError
from bazar.http_limits import make_site
from bazar.reactors import IServerReactor, running_reactor
from bazar.service import (
    CallOnStop,
    ConfigOptions,
    channel_service,
    check_ports_free,
    fail,
    load_config,
    replica_client,
    role_service,
    web_service,
)
from bazar.shared_port import SharedPortService


class Options(ConfigOptions):
    role = "frontend"
    synopsis = "[--config FILE] [--name NAME]"
    longdesc = (
        "Run one of Bazar's front ends (by default the first in the config): the public API, "
        "its LRU cache, round robin over the replicas."
    )
    optParameters: ClassVar[list[list[Any]]] = [
        *ConfigOptions.optParameters,
        ["name", None, None, "Which front end of the config to run (default: the first)."],
    ]

    def process_name(self) -> str:
        name = self["name"]
        return name if name and name != "frontend" else "frontend"


def makeService(options: Options, reactor: IServerReactor | None = None) -> MultiService:
    if reactor is None:
        reactor = running_reactor(IServerReactor)
    config = load_config("frontend", options["config"])
    try:
        me = config.frontend_named(options["name"]) if options["name"] else config.frontend
    except ConfigError as e:
        raise fail("frontend", str(e)) from None
    check_ports_free("frontend", me)
    # Out: writes over the channel to replicas that have one; reads over HTTP with treq.
    client, close_client = replica_client(reactor, config, channel=True)
    # Its cache leases are counted on the monotonic clock (bazar.leases).
    process = build_frontend(config, client, reactor, me.name, now=time.monotonic)
    site = make_site(process.resource)
    # The public port, shared with the other front ends on this host (bazar.shared_port).
    public = [SharedPortService(me.public, site, reactor)] if me.public is not None else []
    # In: the sequencers' invalidation pushes and lease grants, over the channel when it has one.
    return role_service(
        web_service(me.listen, site, reactor),
        *public,
        *channel_service(me, process.channel, reactor),
        *process.services,
        CallOnStop(close_client),
    )

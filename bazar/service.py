"""What every role's ``tap.py`` shares: options, loading the config, checking ports, opening
the store, the listeners, cleanup: the process's I/O, around what ``bazar.assembly`` builds.

Errors a user can cause (bad config, unknown replica, port in use) end the process with
one clear line instead of a traceback: ``SystemExit`` carrying the message.
"""

from __future__ import annotations

import errno
import gc
import socket
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.python import usage
from twisted.web.server import Site

from bazar.assembly import build_replica
from bazar.channel import Channel, ChannelServer
from bazar.client import ReplicaClient, make_http, make_pool
from bazar.config import Config, ConfigError, Replica, load
from bazar.http_limits import make_site
from bazar.logs import register_secret
from bazar.reactors import IServerReactor, running_reactor
from bazar.storage import ReplicatedStore, SeedMismatch, open_store

# twistd's default --pidfile: one per working directory, so a second role started there
# would refuse to run ("Another twistd server is running").
TWISTD_PIDFILE = "twistd.pid"


class ConfigOptions(usage.Options):
    optParameters: ClassVar[list[list[Any]]] = [
        [
            "config",
            "c",
            None,
            "The cluster's TOML config (default: ./etc/bazar.toml if present, else built-in).",
        ],
    ]
    role: ClassVar[str]  # "frontend" or "cluster"; a replica is called by its --replica name

    def process_name(self) -> str:
        """What this process is called in its pidfile's name."""
        return self.role

    def postOptions(self) -> None:
        """Unless --pidfile was given: none with -n (nothing to find the process by that its
        terminal does not give), else ``bazar-<name>.pid``; and a daemon logs to
        ``bazar-<name>.log`` unless --logfile was given (twistd's default, twistd.log, would be
        written and rotated by every daemon at once). So several roles run from one directory.
        ``parent`` is twistd's own options, which take both."""
        twistd = getattr(self, "parent", None)
        if twistd is None:
            return
        name, daemon = self.process_name(), not twistd.get("nodaemon")
        if twistd.get("pidfile") == TWISTD_PIDFILE:
            twistd["pidfile"] = f"bazar-{name}.pid" if daemon else ""
        if daemon and twistd.get("logfile") is None:
            twistd["logfile"] = f"bazar-{name}.log"


class ReplicaOptions(ConfigOptions):
    optParameters: ClassVar[list[list[Any]]] = [
        ["replica", "r", None, "This replica's name in the config, e.g. catalog-1."]
    ]

    def process_name(self) -> str:
        return str(self["replica"])

    def postOptions(self) -> None:
        if not self["replica"]:
            raise usage.UsageError("--replica NAME is required (e.g. --replica catalog-1)")
        super().postOptions()


def fail(role: str, message: str) -> SystemExit:
    """The way a tap reports a problem the user can fix: one line, exit status 1."""
    return SystemExit(f"bazar-{role}: {message}")


def load_config(role: str, path: str | None) -> Config:
    try:
        config = load(path)
    except ConfigError as e:
        raise fail(role, str(e)) from None
    register_secret(config.secret)  # from here on, no log line of this process can show it
    return config


def tcp_address(listen: str) -> tuple[str, int] | None:
    """(interface, port) of a ``tcp:`` endpoint string, or None for other kinds of endpoint."""
    kind, _, rest = listen.partition(":")
    if kind != "tcp":
        return None
    interface, port = "", None
    for part in rest.split(":"):
        key, eq, value = part.partition("=")
        if not eq:
            port = key
        elif key == "port":
            port = value
        elif key == "interface":
            interface = value
    if port is None or not port.isdigit():
        return None
    return interface, int(port)


def check_port_free(role: str, listen: str) -> None:
    """Fail clearly now rather than with a traceback from the reactor later."""
    address = tcp_address(listen)
    if address is None or address[1] == 0:
        return
    probe = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's own listener does
    try:
        probe.bind(address)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise fail(role, f"cannot listen on {listen}: port {address[1]} is already in use") from None
        raise fail(role, f"cannot listen on {listen}: {e.strerror}") from None
    finally:
        probe.close()


def check_ports_free(role: str, process: Replica) -> None:
    """Both of a process's ports: its HTTP server's and its channel's."""
    check_port_free(role, process.listen)
    if process.channel_listen is not None:
        check_port_free(role, process.channel_listen)


class CallOnStop(Service):
    """Runs cleanups (closing connection pools, databases) when the process stops."""

    def __init__(self, *cleanups: Callable[[], Any]) -> None:
        self.cleanups = cleanups

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return DeferredList([maybeDeferred(c) for c in self.cleanups], consumeErrors=True)


def replica_client(
    reactor: IServerReactor, config: Config, *, channel: bool = False
) -> tuple[ReplicaClient, Callable[[], Deferred[Any]]]:
    """The process's one client (HTTP on one persistent pool, and with ``channel`` the
    internal channel too), and how to close its connections."""
    pool = make_pool(reactor)
    calls = Channel(reactor) if channel else None
    client = ReplicaClient(make_http(reactor, pool), config.secret, reactor, channel=calls)

    def close() -> Deferred[Any]:
        closing = [pool.closeCachedConnections()]
        if calls is not None:
            closing.append(calls.close())
        return DeferredList(closing, consumeErrors=True)

    return client, close


def channel_service(process: Replica, server: ChannelServer, reactor: IServerReactor) -> list[IService]:
    """The process's channel server (``bazar.channel``), if the config gives it a channel."""
    if process.channel_listen is None:
        return []
    return [strports.service(process.channel_listen, server, reactor=reactor)]


def web_service(listen: str, site: Site, reactor: IServerReactor) -> IService:
    return strports.service(listen, site, reactor=reactor)


class FreezeHeap(Service):
    """Moves everything built at start-up out of the garbage collector's sight.

    Every later collection then skips those objects: measured here, that cut the p99
    latency of a Klein server about threefold.
    """

    def startService(self) -> None:
        super().startService()
        gc.collect()
        gc.freeze()


def role_service(*children: IService) -> MultiService:
    """One role's process: its children, then the heap frozen once they are built."""
    service = MultiService()
    for child in (*children, FreezeHeap()):
        child.setServiceParent(service)
    return service


def replica_service(
    role: str,
    options: Mapping[str, Any],
    store_type: type[ReplicatedStore],
    reactor: IServerReactor | None = None,
) -> MultiService:
    """One catalog or order replica process: its config, its store and its client opened, the
    replica built on them (``bazar.assembly.build_replica``), its listeners."""
    if reactor is None:
        reactor = running_reactor(IServerReactor)
    config = load_config(role, options["config"])
    try:
        replica = config.replica(role, options["replica"])
    except ConfigError as e:
        raise fail(role, str(e)) from None
    check_ports_free(role, replica)
    path = config.database_path(replica)
    try:
        store = open_store(store_type, path, reactor, **store_type.options(config))
    except SeedMismatch as e:
        raise fail(role, f"{path}: {e}") from None
    except (OSError, sqlite3.Error) as e:
        raise fail(role, f"cannot open {path}: {e}") from None
    client, close_client = replica_client(reactor, config, channel=True)
    # The front ends' cache leases are counted on the monotonic clock (bazar.leases).
    process = build_replica(config, replica.name, store, client, reactor, now=time.monotonic)
    return role_service(
        web_service(replica.listen, make_site(process.resource), reactor),
        *channel_service(replica, process.channel, reactor),
        *process.services,
        CallOnStop(close_client, store.close),
    )

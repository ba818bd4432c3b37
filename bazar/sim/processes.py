"""The cluster's processes, built by production's builders (``bazar.assembly``) on a
simulated host.

``bazar.assembly`` builds each process with no I/O, as the taps build it (a replica: its
``Role`` with elections and epochs, its app behind ``measured``, its channel server,
``RoleService``, ``Watchdog`` and the app's own services; the front end: its app, its health
probe, its channel server); what the taps add is I/O: listening ports, the connection pools,
twistd. Here everything a process calls goes through its host's ``SimClient``, everything
it schedules goes on its host's ``ProcessClock``, and its store runs on a ``SimRunner``.

Each replica's database is an in-memory SQLite connection that outlives the process: a
crash throws every object away and keeps the connection, and a restart builds the process
again from it. Transactions run one at a time in submission order, each taking a drawn
time (``SimRunner``), as production's one-connection pool runs them; one not run yet when
its process crashes never happened, one that ran is committed.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from bazar import assembly
from bazar.catalog.store import CatalogStore
from bazar.config import Config, Replica
from bazar.failover import Role
from bazar.order.store import OrderStore
from bazar.sim.callers import SimClient
from bazar.sim.network import Host, Network
from bazar.sim.serving import Endpoint
from bazar.storage import ReplicatedStore

T = TypeVar("T")


class SimRunner:
    """A store's runner on one SQLite connection that outlives its process.

    ``delay()`` draws how long each transaction takes; 0 runs it at once (as InlineRunner
    does). Otherwise transactions queue, one at a time, on the process's clock: a crash
    (``Host.crash``) drops the queue with the process's events."""

    def __init__(self, connection: sqlite3.Connection, host: Host, delay: Callable[[], float]) -> None:
        self.connection = connection
        self.clock = host.clock
        self.delay = delay
        self._queue: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []
        self._busy = False

    def _transaction(self, interaction: Callable[..., T], args: tuple[Any, ...]) -> T:
        cursor = self.connection.cursor()
        try:
            result = interaction(cursor, *args)
        except BaseException:
            self.connection.rollback()
            raise
        self.connection.commit()
        return result

    def runInteraction(self, interaction: Callable[..., T], *args: Any) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        delay = self.delay()
        if not delay and not self._busy:
            try:
                d.callback(self._transaction(interaction, args))
            except Exception:
                d.errback(Failure())
            return d
        self._queue.append((interaction, args, d))
        if not self._busy:
            self._busy = True
            self.clock.callLater(delay, self._next)
        return d

    def _next(self) -> None:
        interaction, args, d = self._queue.pop(0)
        try:
            result = self._transaction(interaction, args)
        except Exception:
            failure = Failure()
            self._continue()
            d.errback(failure)
            return
        self._continue()
        d.callback(result)

    def _continue(self) -> None:
        if self._queue:
            self.clock.callLater(self.delay(), self._next)
        else:
            self._busy = False

    def read_now(self, read: Callable[..., T], *args: Any) -> T:
        return read(self.connection.cursor(), *args)

    def close(self) -> None:
        pass  # the connection is the disk: it outlives the process


@dataclass
class Process:
    """What one incarnation of a process was built as (by ``bazar.assembly``)."""

    name: str
    app: Any
    services: list[IService] = field(default_factory=list)
    role: Role | None = None
    store: ReplicatedStore | None = None

    def start(self) -> None:
        for service in self.services:
            service.startService()


def open_sim_store(
    replica: Replica, config: Config, connection: sqlite3.Connection, runner: SimRunner
) -> ReplicatedStore:
    """The replica's store on its surviving database, set up as ``open_store`` does it."""
    store_type: type[ReplicatedStore] = CatalogStore if replica.role == "catalog" else OrderStore
    store = store_type(runner, **store_type.options(config))
    store._setup(connection.cursor())
    connection.commit()
    return store


def build_replica(
    config: Config,
    replica: Replica,
    network: Network,
    host: Host,
    connection: sqlite3.Connection,
    rng: random.Random,
    disk_delay: Callable[[], float],
) -> Process:
    """One catalog or order replica, built by ``bazar.assembly.build_replica`` on the host's
    disk, client and clock."""
    store = open_sim_store(replica, config, connection, SimRunner(connection, host, disk_delay))
    client = SimClient(network, host, config.secret, channel=True)
    process = assembly.build_replica(config, replica.name, store, client, host.clock, rng)
    host.endpoint = Endpoint(replica, process.resource, process.channel, config.secret)
    return Process(replica.name, process.app, process.services, process.role, store)


def build_frontend(config: Config, network: Network, host: Host) -> Process:
    """The front end, built by ``bazar.assembly.build_frontend`` on the host's client and clock."""
    client = SimClient(network, host, config.secret, channel=False)  # treq only: no channel out
    process = assembly.build_frontend(config, client, host.clock)
    host.endpoint = Endpoint(config.frontend, process.resource, process.channel, config.secret)
    return Process(config.frontend.name, process.app, process.services)

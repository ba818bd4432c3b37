"""How each kind of Bazar process is put together, the same in production and in tests.

A builder takes what varies (the config, the replica's name, its store, its client, a
clock) and returns the wired process; it does no I/O of its own: it loads no config,
opens no file, listens on no port and imports no reactor. The taps (``tap.py``) do those
and hand the builder the real reactor; the in-memory tests hand it a ``task.Clock``
(as mimic's ``MimicCore.fromPlugins(clock)`` is built both ways).

What a builder returns is what the process serves and runs: ``resource`` (its HTTP
resource, with metrics and the secret check), ``channel`` (its channel server) and
``services`` (everything that starts and stops with it). The listeners, and closing the
store and the client, are the tap's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from random import Random

from prometheus_client.core import Metric
from twisted.application.service import IService, Service
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource

from bazar.catalog.app import CatalogApp
from bazar.catalog.store import CatalogStore
from bazar.channel import ChannelServer, Stamp
from bazar.client import ReplicaClient
from bazar.config import Config, ConfigError, Replica
from bazar.failover import Role, Watchdog
from bazar.frontend.app import FrontendApp
from bazar.health import HealthProbe
from bazar.invalidation import FrontendsNotifier, LeaseRenewal, book_keys
from bazar.leases import Now
from bazar.metrics import MeasuredResource, Metrics, gauge, histogram
from bazar.order.app import OrderApp
from bazar.order.store import OrderStore
from bazar.replica import ReplicaApp
from bazar.replication import Sequencer
from bazar.storage import Entry, ReplicatedStore


@dataclass
class ReplicaProcess:
    """One catalog or order replica, wired."""

    app: ReplicaApp
    role: Role  # who sequences, in which epoch; ``role.writer`` while this replica does
    resource: MeasuredResource  # what its HTTP listener serves
    channel: ChannelServer  # what its channel listener serves
    services: list[IService]  # started in this order when the process starts, stopped with it


@dataclass
class FrontendProcess:
    """The front end, wired."""

    app: FrontendApp
    resource: MeasuredResource
    channel: ChannelServer  # the sequencers' invalidation pushes come in here
    services: list[IService]


def build_replica(
    config: Config,
    name: str,
    store: ReplicatedStore,
    client: ReplicaClient,
    clock: IReactorTime,
    random: Random | None = None,
    now: Now | None = None,
) -> ReplicaProcess:
    """Replica ``name`` of ``config`` on ``store``, calling the others through ``client``.
    ``random``: the watchdog's draw of election timeouts (a seeded one in tests); ``now``:
    the monotonic clock the front ends' cache leases are counted on (by default ``clock``'s).

    On a new store the first replica of the role sequences writes once its ``RoleService``
    starts; on a used one, the sequencer its store recorded (``Role.start``)."""
    replica = replica_named(config, name)
    replicas = config.catalog if replica.role == "catalog" else config.order
    notifier = FrontendsNotifier(
        client,
        config.frontends,
        cache_keys(replica.role),
        epoch=lambda: (replica.role, role.epoch),
        clock=clock,
        sequencer=replica.name,
        applied=lambda: store.applied_seq,
        followers=lambda: role.writer.followers() if role.writer is not None else {},
        now=now,
    )
    role = Role(replica, replicas, store, client, notifier, clock, now)
    # Front-end leases only while no other sequencer can have been elected (bazar.leases).
    notifier.may_grant = lambda: role.writer is not None and role.writer.leads()
    app = replica_app(config, replica, store, client, role)
    resource = measured(app.resource(), replica, store, lambda: role.writer, config.secret)
    if isinstance(app, OrderApp):
        takes = app.takes.sizes
        resource.metrics.collect_with(
            lambda: [histogram("bazar_take_batch_takes", "Purchases' takes per call to the catalog", takes)]
        )
    channel = ChannelServer(app.channel_handlers(), config.secret, app.stamp, resource.metrics.observe_call)
    renewal = LeaseRenewal(notifier, lambda: role.writer is not None, clock)
    services = [RoleService(role), Watchdog(role, clock, random), renewal, *app.services(clock)]
    return ReplicaProcess(app, role, resource, channel, services)


def build_frontend(
    config: Config,
    client: ReplicaClient,
    clock: IReactorTime,
    name: str | None = None,
    now: Now | None = None,
) -> FrontendProcess:
    """Front end ``name`` of ``config`` (by default the default one), calling the replicas
    through ``client``; its health probe runs on ``clock``, its cache leases are counted on
    ``now`` (by default ``clock``'s)."""
    app = FrontendApp(config, client, name=name, now=now if now is not None else clock.seconds)
    resource = MeasuredResource(app.resource(), app.metrics, config.secret)
    probe = HealthProbe(app.health, [*config.catalog, *config.order], client, clock, config.probe_interval)
    stamp = Stamp(app.me.name)
    channel = ChannelServer(app.channel_handlers(), config.secret, lambda: stamp, app.metrics.observe_call)
    return FrontendProcess(app, resource, channel, [probe])


def replica_named(config: Config, name: str) -> Replica:
    """The catalog or order replica called ``name``, or a ConfigError naming the known ones."""
    for replica in (*config.catalog, *config.order):
        if replica.name == name:
            return replica
    known = ", ".join(r.name for r in (*config.catalog, *config.order))
    raise ConfigError(f"unknown replica {name!r} in {config.source}; known: {known}")


def cache_keys(role: str) -> Callable[[Entry], list[str]]:
    """The front-end cache keys a write of ``role`` changes (an order is never cached)."""
    return book_keys if role == "catalog" else lambda entry: []


def replica_app(
    config: Config, replica: Replica, store: ReplicatedStore, client: ReplicaClient, role: Role
) -> ReplicaApp:
    if replica.role == "catalog":
        assert isinstance(store, CatalogStore), store
        return CatalogApp(replica, store, client, config.secret, role)
    assert isinstance(store, OrderStore), store
    return OrderApp(replica, store, client, config.catalog, config.secret, role)


class RoleService(Service):
    """Starts leading at start-up if the recorded epoch says this replica sequences writes."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def startService(self) -> None:
        super().startService()
        self.role.start()

    def stopService(self) -> None:
        super().stopService()
        self.role.stop()


def measured(
    resource: IResource,
    replica: Replica,
    store: ReplicatedStore,
    writer: Callable[[], Sequencer | None],
    secret: str,
) -> MeasuredResource:
    """A replica's resource with request metrics and its replication figures at ``/metrics``
    (``writer()``: the sequencer's machinery, while this replica is the sequencer)."""
    metrics = Metrics(replica.role, replica.name)
    metrics.collect_with(lambda: replication_metrics(store, writer()))
    return MeasuredResource(resource, metrics, secret)


def replication_metrics(store: ReplicatedStore, writer: Sequencer | None) -> list[Metric]:
    """This replica's last sequence number and how many writes its transactions held (group
    commit, while it sequenced); on the sequencer, each follower's sequence number and its lag."""
    out = [
        gauge(
            "bazar_replication_last_seq", "Last sequence number committed here", [], [([], store.applied_seq)]
        ),
        histogram(
            "bazar_group_commit_writes", "Sequenced writes per committed transaction", store.commits.sizes
        ),
    ]
    if writer is not None:
        links = writer.links
        out.append(
            gauge(
                "bazar_replication_follower_seq",
                "Last sequence number each follower confirmed",
                ["follower"],
                [([link.follower.name], link.confirmed) for link in links],
            )
        )
        out.append(
            gauge(
                "bazar_replication_lag",
                "Writes a follower has not confirmed yet",
                ["follower"],
                [([link.follower.name], store.applied_seq - link.confirmed) for link in links],
            )
        )
    return out

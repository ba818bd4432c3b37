"""The twistd plugins: options, the services they build, and their one-line errors.

Services are built on a ``MemoryReactorClock``; listening is only ever "started" on that
fake reactor, so no test opens a port (except the one bound on purpose to be in use).
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker, MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.runner.procmon import ProcessMonitor
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from bazar.assembly import RoleService
from bazar.catalog import tap as catalog_tap
from bazar.catalog.store import CatalogStore
from bazar.channel import ChannelServer
from bazar.cluster import tap as cluster_tap
from bazar.config import document, dump, endpoints, load
from bazar.endpoints import RequireSecret
from bazar.failover import Watchdog
from bazar.frontend import tap as frontend_tap
from bazar.health import HealthProbe
from bazar.metrics import MeasuredResource
from bazar.order import tap as order_tap
from bazar.protocol import (
    BUY_ROUTE,
    BUYS_PATH,
    INVALIDATE_PATH,
    PRICE_ROUTE,
    PURCHASE_ROUTE,
    QUANTITY_ROUTE,
    REPLICATE_PATH,
)
from bazar.service import CallOnStop

TAPS = {"frontend": frontend_tap, "catalog": catalog_tap, "order": order_tap, "cluster": cluster_tap}


def toml(
    data_dir: Path, ports: dict[str, int] | None = None, channel_ports: dict[str, int] | None = None
) -> str:
    """A cluster config listening on port 0 everywhere (nothing to check or bind), but for
    ``ports``; with ``channel_ports``, every process has a channel (on port 0 but for those)."""
    ports = ports or {}

    def replica(name: str, url_port: int) -> dict[str, str]:
        table = {
            "listen": f"tcp:port={ports.get(name, 0)}:interface=127.0.0.1",
            "url": f"http://127.0.0.1:{url_port}",
        }
        if channel_ports is not None:
            channel = endpoints(url_port)["channel"]
            table["channel_listen"] = f"tcp:port={channel_ports.get(name, 0)}:interface=127.0.0.1"
            table["channel"] = channel
        return table

    tables = {"frontend": replica("frontend", 5000)}
    for role, base in (("catalog", 5100), ("order", 5200)):
        for n in (1, 2, 3):
            tables[f"{role}-{n}"] = replica(f"{role}-{n}", base + n)
    return dump(document({"secret": "s3cret", "data_dir": str(data_dir)}, tables))


def replica_argv(role: str) -> list[str]:
    """``--replica`` for the roles that need one."""
    return ["--replica", f"{role}-1"] if role in ("catalog", "order") else []


class TapTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bazar-tap-"))
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.data_dir = self.dir / "data"
        self.config_path = self.write("bazar.toml", toml(self.data_dir))
        self.reactor = MemoryReactorClock()

    def write(self, name: str, text: str) -> str:
        path = self.dir / name
        path.write_text(text)
        return str(path)

    def options(self, role: str, *argv: str) -> usage.Options:
        options = TAPS[role].Options()
        options.parseOptions(list(argv))
        return options

    def make(self, role: str, *argv: str) -> MultiService:
        """``makeService`` on the fake reactor; the service's cleanups run when the test ends."""
        service = TAPS[role].makeService(self.options(role, *argv), reactor=self.reactor)
        self.addCleanup(self.stop, service)
        return service

    def stop(self, service: MultiService) -> None:
        """Run the cleanups (pool, store) without having started anything."""
        for child in service:
            if isinstance(child, CallOnStop):
                self.successResultOf(child.stopService())

    def assertFails(self, role: str, argv: list[str], *fragments: str) -> str:
        """``makeService`` exits with one line "bazar-<role>: ..." containing ``fragments``."""
        threads = threading.active_count()
        with self.assertRaises(SystemExit) as caught:
            TAPS[role].makeService(self.options(role, *argv), reactor=self.reactor)
        message = caught.exception.code
        self.assertIsInstance(message, str)
        assert isinstance(message, str)
        self.assertTrue(message.startswith(f"bazar-{role}: "), message)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        self.assertEqual(threading.active_count(), threads)
        return message


class OptionsTests(TapTestCase):
    def test_frontend_options(self) -> None:
        """The front end takes --config (and -c); it has no --replica."""
        self.assertEqual(self.options("frontend", "--config", "x.toml")["config"], "x.toml")
        self.assertEqual(self.options("frontend", "-c", "y.toml")["config"], "y.toml")
        self.assertIsNone(self.options("frontend")["config"])
        self.assertRaises(usage.UsageError, self.options, "frontend", "--replica", "catalog-1")

    def test_replica_options(self) -> None:
        """Catalog and order replicas take --config and --replica (and -c, -r)."""
        for role in ("catalog", "order"):
            options = self.options(role, "--config", "x.toml", "--replica", f"{role}-2")
            self.assertEqual((options["config"], options["replica"]), ("x.toml", f"{role}-2"))
            options = self.options(role, "-c", "y.toml", "-r", f"{role}-3")
            self.assertEqual((options["config"], options["replica"]), ("y.toml", f"{role}-3"))

    def test_replica_requires_replica_name(self) -> None:
        """Catalog and order Options without --replica are a usage error that says so."""
        for role in ("catalog", "order"):
            with self.assertRaises(usage.UsageError) as caught:
                self.options(role, "--config", "x.toml")
            self.assertIn("--replica", str(caught.exception))

    def test_cluster_options(self) -> None:
        """The cluster takes --config."""
        self.assertEqual(self.options("cluster", "--config", "x.toml")["config"], "x.toml")
        self.assertRaises(usage.UsageError, self.options, "cluster", "--replica", "order-1")


class PidfileTests(SynchronousTestCase):
    """twistd's own options as the command line gives them: each process has a pidfile of its
    own (twistd's default, one ``twistd.pid`` per directory, let only one role start there)."""

    def twistd_config(self, *argv: str) -> ServerOptions:
        config = ServerOptions()
        config.parseOptions(list(argv))
        return config

    def test_no_pidfile_in_the_foreground(self) -> None:
        """With -n, no pidfile: the process is stopped through its terminal or its pid."""
        for argv in (
            ["bazar-frontend"],
            ["bazar-catalog", "--replica", "catalog-2"],
            ["bazar-order", "-r", "order-1"],
            ["bazar-cluster"],
        ):
            with self.subTest(argv=argv):
                self.assertEqual(self.twistd_config("-n", *argv)["pidfile"], "")
                self.assertEqual(self.twistd_config("--nodaemon", *argv)["pidfile"], "")

    def test_one_pidfile_per_process_as_a_daemon(self) -> None:
        """Daemonized, each process writes bazar-<its name>.pid in the working directory."""
        for argv, name in (
            (["bazar-frontend"], "bazar-frontend.pid"),
            (["bazar-catalog", "--replica", "catalog-2"], "bazar-catalog-2.pid"),
            (["bazar-order", "-r", "order-1"], "bazar-order-1.pid"),
            (["bazar-cluster"], "bazar-cluster.pid"),
        ):
            with self.subTest(argv=argv):
                self.assertEqual(self.twistd_config(*argv)["pidfile"], os.path.abspath(name))

    def test_one_log_file_per_process_as_a_daemon(self) -> None:
        """Daemonized, each logs to bazar-<its name>.log (not one twistd.log for all, which
        several processes would write and rotate at once); with -n, to stdout as before."""
        self.assertEqual(self.twistd_config("bazar-order", "-r", "order-3")["logfile"], "bazar-order-3.log")
        self.assertEqual(self.twistd_config("bazar-cluster")["logfile"], "bazar-cluster.log")
        self.assertIsNone(self.twistd_config("-n", "bazar-frontend")["logfile"])
        self.assertEqual(self.twistd_config("--logfile=x.log", "bazar-frontend")["logfile"], "x.log")

    def test_an_explicit_pidfile_is_kept(self) -> None:
        """--pidfile wins, with or without -n (and --pidfile= still means none)."""
        for extra in ([], ["-n"]):
            with self.subTest(extra=extra):
                config = self.twistd_config(*extra, "--pidfile=mine.pid", "bazar-catalog", "-r", "catalog-1")
                self.assertEqual(config["pidfile"], os.path.abspath("mine.pid"))
                self.assertEqual(self.twistd_config(*extra, "--pidfile=", "bazar-frontend")["pidfile"], "")


class ServiceTests(TapTestCase):
    def listener(self, service: MultiService) -> StreamServerEndpointService:
        endpoints = [c for c in service if isinstance(c, StreamServerEndpointService)]
        self.assertEqual(len(endpoints), 1)
        return endpoints[0]

    def listen_on_fake_reactor(self, service: MultiService) -> Site:
        """Start the listener on the fake reactor: what would it listen on, with what site?"""
        listener = self.listener(service)
        listener.startService()
        self.addCleanup(listener.stopService)
        [(port, factory, _, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (0, "127.0.0.1"))
        assert isinstance(factory, Site)
        self.assertFalse(factory.displayTracebacks)
        return factory

    def test_frontend_service(self) -> None:
        """The front end's service listens on its configured endpoint with the front end's site."""
        service = self.make("frontend", "--config", self.config_path)
        self.assertIsInstance(service, MultiService)
        site = self.listen_on_fake_reactor(service)
        self.assertIsInstance(site.resource, MeasuredResource)
        self.assertNotIsInstance(site.resource.inner, RequireSecret)  # its API is public

    def test_replica_services(self) -> None:
        """Each replica listens on its endpoint behind the secret and creates its seeded database."""
        for role, name in (("catalog", "catalog-2"), ("order", "order-1")):
            self.reactor = MemoryReactorClock()
            service = self.make(role, "--config", self.config_path, "--replica", name)
            site = self.listen_on_fake_reactor(service)
            self.assertIsInstance(site.resource, MeasuredResource)
            self.assertIsInstance(site.resource.inner, RequireSecret)
            self.assertEqual(site.resource.inner.stamp().replica, name)
            self.assertTrue(any(isinstance(c, CallOnStop) for c in service))
            # What the builder gives the process to run: its role and watchdog among them.
            self.assertEqual(sum(isinstance(c, (RoleService, Watchdog)) for c in service), 2)
            self.assertTrue((self.data_dir / f"{name}.sqlite").exists())
        with sqlite3.connect(self.data_dir / "catalog-2.sqlite") as db:
            self.assertEqual(db.execute("SELECT COUNT(*) FROM books").fetchone()[0], 7)

    def test_channel_servers(self) -> None:
        """With channels in the config, each process also listens on its own, serving the
        carried routes it has: invalidations at the front end, replication at every replica,
        buys (one or a batch), price and stock updates at the catalog, purchases at the order
        replicas. Every process's client calls over it, the front end's too (its writes)."""
        config_path = self.write("channels.toml", toml(self.data_dir, channel_ports={}))
        expected = {
            ("frontend", None): {INVALIDATE_PATH},
            ("catalog", "catalog-2"): {REPLICATE_PATH, BUY_ROUTE, BUYS_PATH, PRICE_ROUTE, QUANTITY_ROUTE},
            ("order", "order-1"): {REPLICATE_PATH, PURCHASE_ROUTE},
        }
        for (role, name), routes in expected.items():
            with self.subTest(role=role):
                self.reactor = MemoryReactorClock()
                service = self.make(role, "--config", config_path, *(["--replica", name] if name else []))
                listeners = [c for c in service if isinstance(c, StreamServerEndpointService)]
                self.assertEqual(len(listeners), 2)
                for listener in listeners:
                    listener.startService()
                    self.addCleanup(listener.stopService)
                factories = [factory for _, factory, _, _ in self.reactor.tcpServers]
                [server] = [f for f in factories if isinstance(f, ChannelServer)]
                self.assertEqual(set(server.handlers), routes)
                self.assertEqual(server.stamp().replica, name or "frontend")
                if role == "frontend":
                    [probe] = [c for c in service if isinstance(c, HealthProbe)]
                    self.assertIsNotNone(probe.client.channel)  # the one client: its writes' too
                [cleanup] = [c for c in service if isinstance(c, CallOnStop)]
                self.successResultOf(cleanup.stopService())

    def test_stopping_closes_the_store(self) -> None:
        """Stopping a replica's service closes its database pool and leaves no thread behind."""
        threads = threading.active_count()
        service = self.make("catalog", "--config", self.config_path, "--replica", "catalog-1")
        [cleanup] = [c for c in service if isinstance(c, CallOnStop)]
        owners = [getattr(c, "__self__", None) for c in cleanup.cleanups]
        [store] = [o for o in owners if isinstance(o, CatalogStore)]
        pool: Any = store.runner.pool
        # The pool waits for the injected reactor to run, not for the global one.
        self.assertIs(pool._reactor, self.reactor)
        self.assertIn((pool._start, (), {}), self.reactor.whenRunningHooks)
        service.startService()
        self.successResultOf(service.stopService())
        self.assertFalse(pool.running)
        self.assertIsNone(pool.startID)
        self.assertEqual(threading.active_count(), threads)

    def test_cluster_service(self) -> None:
        """The cluster's service supervises one child per replica plus the front end."""
        service = self.make("cluster", "--config", self.config_path)
        [monitor] = list(service)
        self.assertIsInstance(monitor, ProcessMonitor)
        expected = cluster_tap.children(load(self.config_path), self.config_path)
        self.assertEqual(len(expected), 7)
        processes = monitor._processes  # the public ``processes`` is deprecated
        self.assertEqual({name: p.args for name, p in processes.items()}, expected)
        self.assertTrue(self.data_dir.is_dir())


class ClusterCommandTests(TapTestCase):
    def test_children(self) -> None:
        """One twistd child per replica plus the front end: this interpreter, the config's absolute path."""
        config = load(self.config_path)
        children = cluster_tap.children(config, self.config_path)
        names = [f"{r}-{n}" for r in ("catalog", "order") for n in (1, 2, 3)]
        self.assertEqual(sorted(children), sorted([*names, "frontend"]))
        for name, command in children.items():
            role = name.split("-")[0]
            self.assertEqual(command[0], sys.executable)
            self.assertIn(f"bazar-{role}", command)
            self.assertIn("--pidfile=", command)
            self.assertIn("--nodaemon", command)
            self.assertLess(command.index("--pidfile="), command.index(f"bazar-{role}"))
            self.assertEqual(command[command.index("--config") + 1], str(Path(self.config_path).resolve()))
            if name == "frontend":
                self.assertNotIn("--replica", command)
            else:
                self.assertEqual(command[command.index("--replica") + 1], name)

    def test_a_child_per_frontend(self) -> None:
        """With several front ends, one child each, told its name."""
        tables = {f"frontend-{n}": endpoints(6000 + 20 * n) for n in (1, 2, 3)}
        tables["catalog-1"], tables["order-1"] = endpoints(6101), endpoints(6201)
        path = self.write(
            "three.toml", dump(document({"secret": "s", "data_dir": str(self.data_dir)}, tables))
        )
        children = cluster_tap.children(load(path), path)
        for n in (1, 2, 3):
            command = children[f"frontend-{n}"]
            self.assertIn("bazar-frontend", command)
            self.assertEqual(command[command.index("--name") + 1], f"frontend-{n}")
            self.assertNotIn("--replica", command)

    def test_frontend_by_name(self) -> None:
        """``bazar-frontend --name`` runs that front end of the config; an unknown one is one line."""
        tables = {
            f"frontend-{n}": {"listen": "tcp:port=0:interface=127.0.0.1", "url": f"http://127.0.0.1:600{n}"}
            for n in (1, 2)
        }
        tables["catalog-1"], tables["order-1"] = endpoints(6101), endpoints(6201)
        path = self.write("two.toml", dump(document({"secret": "s", "data_dir": str(self.data_dir)}, tables)))
        service = self.make("frontend", "--config", path, "--name", "frontend-2")
        self.assertTrue(any(isinstance(child, StreamServerEndpointService) for child in service))
        self.assertFails(
            "frontend", ["--config", path, "--name", "frontend-9"], "unknown front end 'frontend-9'"
        )

    def test_child_command_without_config(self) -> None:
        """Without a config path the child gets no --config (it finds the default itself)."""
        command = cluster_tap.child_command("order", None, "order-2")
        self.assertNotIn("--config", command)
        self.assertEqual(command[-2:], ["--replica", "order-2"])
        self.assertIn("bazar-order", command)


class ErrorTests(TapTestCase):
    def test_missing_config_file(self) -> None:
        """A config path that does not exist: every role says which file."""
        missing = str(self.dir / "nope.toml")
        for role in TAPS:
            self.assertFails(role, ["--config", missing, *replica_argv(role)], missing, "does not exist")

    def test_invalid_toml(self) -> None:
        """A config that is not TOML: every role says so."""
        bad = self.write("bad.toml", "[cluster\nsecret = ")
        for role in TAPS:
            self.assertFails(role, ["--config", bad, *replica_argv(role)], bad, "not valid TOML")

    def test_unknown_replica(self) -> None:
        """A replica name the config does not list: the error names the known ones."""
        for role in ("catalog", "order"):
            message = self.assertFails(
                role, ["--config", self.config_path, "--replica", f"{role}-9"], f"'{role}-9'"
            )
            self.assertIn(f"{role}-1, {role}-2, {role}-3", message)
        self.assertFalse((self.data_dir / "catalog-9.sqlite").exists())

    def test_port_in_use(self) -> None:
        """A port some other socket holds: a clear error, not a traceback from the reactor later."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cases: list[tuple[str, str, list[str]]] = [
            ("frontend", "frontend", []),
            ("catalog", "catalog-3", ["--replica", "catalog-3"]),
            ("order", "order-2", ["--replica", "order-2"]),
            ("cluster", "order-3", []),
        ]
        for role, holder, extra in cases:
            config = self.write(f"{role}.toml", toml(self.data_dir, {holder: port}))
            self.assertFails(role, ["--config", config, *extra], f"port {port} is already in use")
            config = self.write(f"{role}-channel.toml", toml(self.data_dir, channel_ports={holder: port}))
            self.assertFails(role, ["--config", config, *extra], f"port {port} is already in use")
        self.assertFalse((self.data_dir / "catalog-3.sqlite").exists())


class PluginTests(SynchronousTestCase):
    def test_plugins_discoverable(self) -> None:
        """twistd finds bazar-frontend, -catalog, -order and -cluster, each naming its tap module."""
        makers: dict[str, Any] = {
            p.tapname: p for p in getPlugins(IServiceMaker) if p.tapname.startswith("bazar-")
        }
        self.assertEqual(sorted(makers), ["bazar-catalog", "bazar-cluster", "bazar-frontend", "bazar-order"])
        for role, module in TAPS.items():
            maker = makers[f"bazar-{role}"]
            self.assertEqual(maker.module, f"bazar.{role}.tap")
            self.assertIs(maker.options, module.Options)
            self.assertIs(maker.makeService, module.makeService)
            self.assertTrue(maker.description)

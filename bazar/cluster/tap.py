"""``twistd -n bazar-cluster [--config FILE]``: the front end and every replica, supervised.

Each role runs as its own ``twistd -n bazar-<role>`` child under Twisted's
``ProcessMonitor``, which restarts a child that dies and stops them all when the cluster
stops (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.runner.procmon import ProcessMonitor

from bazar.config import Config
from bazar.reactors import ISupervisorReactor, running_reactor
from bazar.service import ConfigOptions, check_port_free, check_ports_free, load_config, tcp_address

log = Logger()

# Run twistd with this interpreter, so the children see exactly the packages the parent does.
_TWISTD = "from twisted.scripts.twistd import run; run()"


class Options(ConfigOptions):
    role = "cluster"
    synopsis = "[--config FILE]"
    longdesc = "Run the whole Bazar cluster: one front end and every catalog and order replica in the config."


class _Monitor(ProcessMonitor):
    """A ProcessMonitor whose stop waits until every child has exited.

    ``ProcessMonitor.stopService`` only sends SIGTERM and returns, so the cluster would exit
    while its children still run (and hold their ports), and the SIGKILL it schedules after
    ``killTime`` would never fire. Here the stop lasts until ``protocols`` is empty.
    """

    def __init__(self, reactor: ISupervisorReactor) -> None:
        super().__init__(reactor=reactor)
        self._timer = reactor

    def stopService(self) -> Deferred[None]:  # type: ignore[override]  # IService allows a Deferred
        super().stopService()

        def check() -> None:
            if not self.protocols:
                poll.stop()

        poll = LoopingCall(check)
        poll.clock = self._timer
        return poll.start(0.05).addCallback(lambda _: None)


def child_command(role: str, config_path: str | None, replica: str | None = None) -> list[str]:
    """One child's command line: ``twistd -n --pidfile= bazar-<role> ...`` (no pidfile: one cwd
    for all); ``replica``: its ``--replica`` name, or a front end's ``--name``."""
    command = [sys.executable, "-c", _TWISTD, "--nodaemon", "--pidfile=", f"bazar-{role}"]
    if config_path is not None:
        command += ["--config", str(Path(config_path).resolve())]
    if replica is not None:
        command += ["--name" if role == "frontend" else "--replica", replica]
    return command


def children(config: Config, config_path: str | None) -> dict[str, list[str]]:
    out = {}
    for replica in (*config.catalog, *config.order):
        out[replica.name] = child_command(replica.role, config_path, replica.name)
    if len(config.frontends) == 1:
        out[config.frontend.name] = child_command("frontend", config_path)
    else:
        for frontend in config.frontends:
            out[frontend.name] = child_command("frontend", config_path, frontend.name)
    return out


def public_url(config: Config) -> str:
    """Where clients reach the store: the front ends' shared port if they have one, else the
    default front end."""
    public = config.frontend.public
    address = tcp_address(public) if public is not None else None
    if address is None:
        return config.frontend.url
    host, port = address
    return f"http://{host or '127.0.0.1'}:{port}"


def makeService(options: Options, reactor: ISupervisorReactor | None = None) -> MultiService:
    config = load_config(
        "cluster", options["config"]
    )  # also creates the secret file, before any child reads it
    for replica in (*config.frontends, *config.catalog, *config.order):
        check_ports_free("cluster", replica)
    for public in sorted({f.public for f in config.frontends if f.public is not None}):
        check_port_free("cluster", public)  # the front ends share it (bazar.shared_port)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    if reactor is None:
        reactor = running_reactor(ISupervisorReactor)
    monitor = _Monitor(reactor)
    monitor.threshold = 5  # a child that ran this long and died is restarted at once
    monitor.killTime = 10
    for name, command in children(config, options["config"]).items():
        monitor.addProcess(name, command, env=dict(os.environ))
    log.info(
        "starting Bazar: front end at {url}, data in {data_dir}",
        url=public_url(config),
        data_dir=config.data_dir,
    )
    service = MultiService()
    monitor.setServiceParent(service)
    return service

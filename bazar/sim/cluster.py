"""A whole Bazar cluster in one simulation: the front end and the 3 + 3 replicas of the
default config, on one ``SimClock``, talking only through one ``Network``."""

from __future__ import annotations

import random
import sqlite3
from typing import Any

from bazar import config as bazar_config
from bazar.catalog.store import CatalogStore
from bazar.config import Config, Replica
from bazar.order.store import OrderStore
from bazar.sim.clock import SimClock
from bazar.sim.network import Host, Network
from bazar.sim.processes import Process, build_frontend, build_replica
from bazar.storage import Entry

SECRET = "simulated-cluster-secret"
FRONTEND = "frontend"


def sim_config(books: int = 7, cache_size: int = 16) -> Config:
    return bazar_config.parse(
        {
            "cluster": {
                "secret": SECRET,
                "data_dir": "/nonexistent-sim",
                "books": books,
                "cache_size": cache_size,
            }
        },
        source="bazar.sim",
    )


class SimCluster:
    def __init__(self, rng: random.Random, config: Config | None = None, disk_latency: float = 0.0) -> None:
        """``disk_latency``: the most a transaction takes (0: each runs at once)."""
        self.rng = rng
        self.config = config or sim_config()
        self.sim = SimClock()
        self.errors: list[BaseException] = []
        self.sim.on_error = self.errors.append
        self.network = Network(self.sim, rng)
        self.disk_latency = disk_latency
        self.replicas: dict[str, Replica] = {r.name: r for r in (*self.config.catalog, *self.config.order)}
        self.disks: dict[str, sqlite3.Connection] = {
            name: sqlite3.connect(":memory:") for name in self.replicas
        }
        self.processes: dict[str, Process] = {}
        self.crashes = 0
        for name in [FRONTEND, *self.replicas]:
            self.network.host(name)

    @property
    def names(self) -> list[str]:
        return [FRONTEND, *self.replicas]

    def host(self, name: str) -> Host:
        return self.network.hosts[name]

    def _disk_delay(self) -> float:
        if not self.disk_latency:
            return 0.0
        return self.rng.uniform(0, self.disk_latency)

    def start(self, name: str) -> None:
        host = self.host(name)
        host.start()
        if name == FRONTEND:
            process = build_frontend(self.config, self.network, host)
        else:
            process = build_replica(
                self.config,
                self.replicas[name],
                self.network,
                host,
                self.disks[name],
                random.Random(self.rng.getrandbits(64)),
                self._disk_delay,
            )
        host.process = process
        self.processes[name] = process
        # Started as one of its events: what starting sends leaves as the process runs.
        host.schedule(self.sim.now, process.start)

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)

    def crash(self, name: str) -> None:
        self.host(name).crash()
        self.network.crashed(name)
        self.processes.pop(name, None)
        self.crashes += 1

    def wipe(self, name: str) -> None:
        """A crashed replica's disk is lost: it restarts on an empty one."""
        assert not self.host(name).alive
        self.disks[name].close()
        self.disks[name] = sqlite3.connect(":memory:")

    def restart(self, name: str) -> None:
        if self.host(name).alive:
            return
        self.start(name)

    def run_for(self, seconds: float) -> None:
        self.sim.run_until(self.sim.now + seconds)

    def close(self) -> None:
        for disk in self.disks.values():
            disk.close()

    # -- looking at the disks ----------------------------------------------------------------

    def log(self, name: str) -> list[tuple[int, Entry]]:
        return CatalogStore._entries_after(self.disks[name].cursor(), 0, 2**62)

    def books(self, name: str) -> dict[int, dict[str, Any]]:
        rows = self.disks[name].execute("SELECT id, title, topic, price, quantity FROM books ORDER BY id")
        return {
            r[0]: {"id": r[0], "title": r[1], "topic": r[2], "price": r[3], "quantity": r[4]} for r in rows
        }

    def orders(self, name: str) -> list[tuple[int, Entry]]:
        return self.log(name)

    def status(self, name: str) -> tuple[int, str]:
        cursor = self.disks[name].cursor()
        status = OrderStore._status(OrderStore(None), cursor)  # type: ignore[arg-type]
        return status["last_seq"], status["digest"]

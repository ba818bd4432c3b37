"""Bazar on several "hosts": every process in a Linux network namespace of its own, one switch.

The topology, every name carrying a random tag (``bz3f9a1c``) so that runs never collide::

    root namespace (the test)     <tag>-sw: the "switch"          one namespace per process
    <tag>-h 10.A.B.1/24 ─ veth ─ host ─┐
                                       │                    ┌─ eth0 10.A.B.10     <tag>-fe
                                       ├─ br0 ─ fe ── veth ─┘
                                       ├─ br0 ─ c1..c3 ─ veth ─ eth0 10.A.B.11..13  <tag>-c1..c3
                                       └─ br0 ─ o1..o3 ─ veth ─ eth0 10.A.B.21..23  <tag>-o1..o3

* The /24 is chosen at random in 10.0.0.0/8 among those that overlap no route or address of
  the root namespace, so the only route the test adds (the /24 on ``<tag>-h``) leads nowhere
  but into this switch. The process namespaces have no route but that /24 (no default route),
  and ``HostCluster.guard`` (on every ``HostApi`` call and the start-up poll) refuses any URL
  whose host is not the address of one of these namespaces.
* The front end runs in a namespace of its own like every replica; the test reaches it, and
  every replica directly, through its own port on the switch (``<tag>-h``).
* Every namespace has ``lo`` up. The bridge lives in the switch namespace, not in the root
  one, so the root namespace gains only ``<tag>-h`` and its /24 route, and the switch's
  traffic meets no firewall rule of the host.
* ``cut(name)`` pulls that replica's cable at the switch (``ip -n <tag>-sw link set c2 down``):
  its ``eth0`` loses carrier and every frame to or from it is dropped. Nothing is refused
  or reset, so callers see timeouts, as with a real partition (not a crash).
  ``restore(name)`` plugs it back in.
* ``Network.destroy`` deletes ``<tag>-h`` (and so its peer), then every namespace (and so
  every veth and the bridge in them), then checks that none of it is left.

Everything here is synchronous (subprocess, sockets): fixtures use it outside the reactor,
and tests only call it between their own HTTP calls.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from treq.client import HTTPClient

from bazar import config
from bazar.launch import (
    NAMES,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Process,
    Processes,
    Unclean,
    twistd,
    wait_for,
    wait_healthy,
)
from bazar.protocol import SECRET_HEADER
from tests.integration.api import Api, Reply, request

IP_TIMEOUT = 10.0  # seconds any one `ip` command may take
# Each process: the namespace suffix (also its port's name on the switch), its host number
# in the /24, its port (the default ports, docs/operations.md: every process has an address of its own).
HOSTS = {
    "frontend": ("fe", 10, 5000),
    "catalog-1": ("c1", 11, 5101),
    "catalog-2": ("c2", 12, 5102),
    "catalog-3": ("c3", 13, 5103),
    "order-1": ("o1", 21, 5201),
    "order-2": ("o2", 22, 5202),
    "order-3": ("o3", 23, 5203),
}
# Two front ends on two hosts, and a host for the load balancer (HAProxy) in front of them;
# each front end on the lab's port, on its own address.
REPLICA_HOSTS = {name: HOSTS[name] for name in NAMES if name != "frontend"}
TWO_FRONTENDS = {
    "frontend-1": ("f1", 31, 5000),
    "frontend-2": ("f2", 32, 5000),
    **REPLICA_HOSTS,
}
BALANCER = "balancer"
BALANCED_HOSTS = {**TWO_FRONTENDS, BALANCER: ("lb", 40, 5000)}
TEST_HOST = 1  # the root namespace's address on the switch: .1
SWITCH = "sw"
BRIDGE = "br0"
SWITCH_HOST_PORT = "host"


class Unavailable(Exception):
    """Network namespaces cannot be used here; the message says why (the test skips)."""


class IpError(Exception):
    """An `ip` command failed; the message has the command and what it printed."""


def ip(*args: str, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip [-n namespace] args...`` with a deadline; IpError if it fails and ``check``."""
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise IpError(f"{' '.join(command)}: still running after {IP_TIMEOUT:.0f}s") from None
    if check and result.returncode != 0:
        raise IpError(f"{' '.join(command)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def unavailable() -> str | None:
    """Why network namespaces cannot be used here (not root, no `ip`, `ip netns add` fails), or None."""
    if os.geteuid() != 0:
        return f"network namespaces need root (this test runs as uid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"bz{secrets.token_hex(3)}-probe"
    try:
        ip("netns", "add", probe)
    except IpError as e:
        return f"cannot create a network namespace: {e}"
    try:
        ip("netns", "del", probe)
    except IpError as e:  # pragma: no cover - it was just created
        return f"cannot delete the network namespace {probe} it created: {e}"
    return None


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 prefix the root namespace routes or has an address in."""
    used = []
    routes = json.loads(ip("-j", "-4", "route", "show", "table", "all").stdout or "[]")
    for route in routes:
        dst = route.get("dst", "default")
        if dst != "default":
            used.append(ipaddress.IPv4Network(dst, strict=False))
    for link in json.loads(ip("-j", "-4", "addr", "show").stdout or "[]"):
        for address in link.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{address['local']}/{address['prefixlen']}", strict=False))
    return used


def choose_subnet(attempts: int = 50) -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that overlaps nothing the root namespace routes or owns."""
    used = _networks_in_use()
    for _ in range(attempts):
        candidate = ipaddress.IPv4Network(f"10.{random.randint(16, 254)}.{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    raise Unavailable(f"no free 10.x.y.0/24 found in {attempts} tries; the host uses {used}")


def inode(path: str) -> int:
    return os.stat(path).st_ino


@dataclass
class Network:
    """The namespaces, veths and bridge of one test: created by ``create``, removed by ``destroy``."""

    # Each host: its namespace suffix, its host number in the /24, its port.
    hosts: dict[str, tuple[str, int, int]] = field(default_factory=lambda: dict(HOSTS))
    tag: str = field(default_factory=lambda: f"bz{secrets.token_hex(3)}")
    subnet: ipaddress.IPv4Network = field(default_factory=choose_subnet)
    created: list[str] = field(default_factory=list)  # namespaces created so far, in order
    host_link: bool = False  # whether <tag>-h exists

    @property
    def switch(self) -> str:
        return f"{self.tag}-{SWITCH}"

    @property
    def host_port(self) -> str:
        return f"{self.tag}-h"  # at most 15 characters: bz + 6 hex + -h

    def namespace(self, name: str) -> str:
        """The namespace of process ``name`` (frontend, catalog-2, ...)."""
        return f"{self.tag}-{self.hosts[name][0]}"

    def port_of(self, name: str) -> str:
        """Process ``name``'s port on the switch (the veth end in the switch namespace)."""
        return self.hosts[name][0]

    def address(self, name: str) -> str:
        return str(self.subnet.network_address + self.hosts[name][1])

    @property
    def test_address(self) -> str:
        return str(self.subnet.network_address + TEST_HOST)

    def addresses(self) -> set[str]:
        """Every address this test created, and so the only ones it may send anything to."""
        return {self.address(name) for name in self.hosts} | {self.test_address}

    def create(self) -> None:
        """Build the whole topology. On failure, whatever was created stays recorded in
        ``created``/``host_link`` for ``destroy``."""
        prefix = self.subnet.prefixlen
        self._add_namespace(self.switch)
        ip("link", "set", "lo", "up", namespace=self.switch)
        ip("link", "add", BRIDGE, "type", "bridge", namespace=self.switch)
        ip("link", "set", BRIDGE, "up", namespace=self.switch)
        # The test's own port: created in the root namespace, its peer straight into the switch.
        ip(
            "link",
            "add",
            self.host_port,
            "type",
            "veth",
            "peer",
            "name",
            SWITCH_HOST_PORT,
            "netns",
            self.switch,
        )
        self.host_link = True
        ip("link", "set", SWITCH_HOST_PORT, "master", BRIDGE, "up", namespace=self.switch)
        ip("addr", "add", f"{self.test_address}/{prefix}", "dev", self.host_port)
        ip("link", "set", self.host_port, "up")
        for name in self.hosts:
            ns, port = self.namespace(name), self.port_of(name)
            self._add_namespace(ns)
            ip("link", "set", "lo", "up", namespace=ns)
            # Both ends created where they belong: nothing of it ever appears in the root namespace.
            ip(
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
                namespace=self.switch,
            )
            ip("link", "set", port, "master", BRIDGE, "up", namespace=self.switch)
            ip("addr", "add", f"{self.address(name)}/{prefix}", "dev", "eth0", namespace=ns)
            ip("link", "set", "eth0", "up", namespace=ns)

    def _add_namespace(self, ns: str) -> None:
        ip("netns", "add", ns)
        self.created.append(ns)

    def cut(self, name: str) -> None:
        """Pull ``name``'s cable at the switch: every frame to or from it is dropped."""
        ip("link", "set", self.port_of(name), "down", namespace=self.switch)

    def restore(self, name: str) -> None:
        ip("link", "set", self.port_of(name), "up", namespace=self.switch)

    def separate(self, a: str, b: str) -> None:
        """Cut only the link between hosts ``a`` and ``b``: each discards what it would send the
        other (a blackhole route), while both still reach everyone else."""
        ip("route", "add", "blackhole", f"{self.address(b)}/32", namespace=self.namespace(a))
        ip("route", "add", "blackhole", f"{self.address(a)}/32", namespace=self.namespace(b))

    def rejoin(self, a: str, b: str) -> None:
        ip("route", "del", "blackhole", f"{self.address(b)}/32", namespace=self.namespace(a))
        ip("route", "del", "blackhole", f"{self.address(a)}/32", namespace=self.namespace(b))

    def leftovers(self) -> list[str]:
        """Whatever of this network still exists (namespaces, the root's veth)."""
        names = ip("netns", "list", check=False).stdout.split()
        left = [n for n in names if n.startswith(self.tag + "-")]
        if ip("link", "show", self.host_port, check=False).returncode == 0:
            left.append(self.host_port)
        return left

    def destroy(self) -> list[str]:
        """Delete everything ``create`` made (also after a partial ``create``); the problems."""
        problems = []
        if self.host_link:
            result = ip("link", "del", self.host_port, check=False)  # its peer in the switch goes too
            if result.returncode != 0 and "Cannot find device" not in result.stderr:
                problems.append(f"ip link del {self.host_port}: {result.stderr.strip()}")
        for ns in reversed(self.created):  # deleting a namespace deletes its veths and bridge
            result = ip("netns", "del", ns, check=False)
            if result.returncode != 0:
                problems.append(f"ip netns del {ns}: {result.stderr.strip()}")
        try:
            wait_for(lambda: not self.leftovers(), STOP_TIMEOUT, f"the network {self.tag} to be gone")
        except TimeoutError:
            problems.append(f"still there after {STOP_TIMEOUT:.0f}s: {self.leftovers()}")
        return problems


# -- the processes, one per namespace --------------------------------------------------------


def write_config(directory: Path, network: Network, secret: str, names: Sequence[str] = NAMES) -> Path:
    """One config for the processes ``names``: each listens on its own address, on its port."""
    raw = config.document(
        {"data_dir": str(directory / "data"), "secret": secret},
        {name: config.endpoints(network.hosts[name][2], address=network.address(name)) for name in names},
    )
    return config.write(directory / "bazar.toml", raw)


def role_command(network: Network, config: Path, name: str) -> list[str]:
    """``ip netns exec <ns> python -c '...twistd...' -n --pidfile= bazar-<role> ...``
    (`ip netns exec` execs the command: the pid started is twistd's own)."""
    role = name.split("-")[0]
    args = [f"bazar-{role}", "--config", str(config)]
    if role == "frontend":
        args += ["--name", name] if name != "frontend" else []
    else:
        args += ["--replica", name]
    return ["ip", "netns", "exec", network.namespace(name), *twistd(*args)]


class HostCluster:
    """The front end (or front ends) and six replicas, each in its namespace, as ``Api`` and
    the tests need them."""

    def __init__(
        self, network: Network, directory: Path, secret: str = "netns-secret", names: Sequence[str] = NAMES
    ) -> None:
        self.network = network
        self.directory = directory
        self.secret = secret
        self.names = tuple(names)
        self.frontends = tuple(n for n in self.names if n.startswith("frontend"))
        self.config = write_config(directory, network, secret, self.names)
        self.started = Processes(directory)
        self.processes: dict[str, Process] = {}

    def url(self, name: str) -> str:
        return f"http://{self.network.address(name)}:{self.network.hosts[name][2]}"

    @property
    def frontend(self) -> str:
        return self.url(self.frontends[0])

    def allows(self, url: str) -> bool:
        """Whether ``url`` is on one of this test's namespaces (no other address is ever asked)."""
        return urlsplit(url).hostname in {self.network.address(name) for name in self.network.hosts}

    def guard(self, url: str) -> None:
        assert self.allows(url), f"{url}: not the address of a namespace this test created"

    def start(self) -> None:
        for name in self.names:
            self.start_one(name)

    def start_one(self, name: str, log_name: str | None = None) -> Process:
        """Start process ``name`` in its namespace (its log: ``log_name``.log, by default its name's)."""
        command = role_command(self.network, self.config, name)
        self.processes[name] = self.started.start(log_name or name, command)
        return self.processes[name]

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """The cluster's status once every front end sees every replica healthy; StartError
        (with every log's end) as soon as a process exits, or after ``timeout``."""
        urls = [self.url(name) for name in self.frontends]
        for url in urls:
            self.guard(url)
        return wait_healthy(urls, list(self.processes.values()), timeout, "the netns cluster")

    def in_its_namespace(self, name: str) -> bool:
        """Whether process ``name`` runs in the namespace made for it (same namespace inode)."""
        pid = self.processes[name].pid
        return inode(f"/proc/{pid}/ns/net") == inode(f"/run/netns/{self.network.namespace(name)}")

    def stop(self) -> list[str]:
        """SIGTERM every process by pid at once, wait with a deadline, SIGKILL what is left
        (its process group, which it alone owns); the problems (unclean exits, kills)."""
        try:
            self.started.stop_all_cleanly()
        except Unclean as e:
            return [str(e)]
        return []


@contextmanager
def running(cluster: HostCluster, then: Callable[[], None] = lambda: None) -> Iterator[HostCluster]:
    """The network created, ``cluster`` started and healthy, then ``then()``; afterwards every
    process stopped by pid and the network deleted, whatever happened (also if the set-up
    fails half-way: its error then notes any problem cleaning up; else such problems fail)."""

    def clean_up() -> list[str]:
        return cluster.stop() + cluster.network.destroy()

    try:
        cluster.network.create()
        cluster.start()
        cluster.wait_healthy()
        then()
    except BaseException as e:
        problems = clean_up()
        if problems:
            e.add_note("while cleaning up the hosts:\n" + "\n".join(problems))
        raise
    try:
        yield cluster
    except BaseException:
        cluster.stop()
        cluster.network.destroy()
        raise
    problems = clean_up()
    assert not problems, "cleaning up the hosts:\n" + "\n".join(problems)


# -- HTTP to the namespaces ------------------------------------------------------------------


class HostApi(Api):
    """``Api`` for a ``HostCluster``: the same calls, to the namespaces' addresses (and only those)."""

    cluster: HostCluster  # type: ignore[assignment]

    def __init__(self, http: HTTPClient, cluster: HostCluster) -> None:
        super().__init__(http, cluster)  # type: ignore[arg-type]

    async def call(self, method: str, url: str, **kwargs: Any) -> Reply:
        """Any request (``api.request``'s arguments), to an address of this test only."""
        return await request(self.http, method, url, allowed=self.cluster.allows, **kwargs)

    async def metrics(self) -> str:
        """The front end's ``/metrics`` (Prometheus text; it needs the secret)."""
        reply = await self.call(
            "GET", self.cluster.frontend + "/metrics", headers={SECRET_HEADER: self.cluster.secret}, raw=True
        )
        assert reply.code == 200, reply
        return reply.body

    async def get(self, path: str) -> Reply:
        return await self.call("GET", self.cluster.frontend + path)

    async def put(self, path: str, body: Any) -> Reply:
        return await self.call("PUT", self.cluster.frontend + path, body=body)

    async def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
        return await self.call("POST", self.cluster.frontend + path, body=body, headers=headers or {})

    async def internal(self, replica: str, path: str, *, secret: str | None = "cluster") -> Reply:
        if secret == "cluster":
            secret = self.cluster.secret
        headers = {SECRET_HEADER: secret} if secret is not None else {}
        return await self.call("GET", self.cluster.url(replica) + path, headers=headers)

"""A whole cluster, ``twistd -n bazar-cluster``, on free loopback ports, started and healthy.

The config is written with ``bazar.config``'s writer; the cluster is healthy when every front
end's ``GET /bazar/cluster`` says every replica is (each front end probes the replicas on its
own, and calls none healthy before a probe has found it so: ``bazar.health``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bazar import config
from bazar.launch.probe import free_ports, get_json, listening_pid, poll
from bazar.launch.processes import STOP_TIMEOUT, Process, Processes, StartError, twistd

CATALOGS = ("catalog-1", "catalog-2", "catalog-3")
ORDERS = ("order-1", "order-2", "order-3")
REPLICAS = (*CATALOGS, *ORDERS)
NAMES = ("frontend", *REPLICAS)
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Layout:
    """One cluster's config file and where its processes listen."""

    directory: Path
    config: Path
    ports: dict[str, int]  # HTTP
    channel_ports: dict[str, int]  # the internal channel (bazar.channel)
    secret: str | None
    data_dir: Path
    frontends: tuple[str, ...] = ("frontend",)  # their names, the default one first
    public: int | None = None  # the port the front ends share, if they do

    @property
    def public_url(self) -> str:
        """Where clients reach the store: the shared port, else the default front end."""
        return f"http://127.0.0.1:{self.public}" if self.public is not None else self.frontend

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def ports_of(self, name: str) -> tuple[int, int]:
        """Both ports ``name`` listens on."""
        return self.ports[name], self.channel_ports[name]

    def all_ports(self) -> list[int]:
        public = [self.public] if self.public is not None else []
        return [*self.ports.values(), *self.channel_ports.values(), *public]

    @property
    def frontend(self) -> str:
        """The default front end's URL."""
        return self.url(self.frontends[0])


def loopback_ports(names: Sequence[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Free loopback ports for each of ``names``: one for HTTP, one for its internal channel."""
    ports = free_ports(2 * len(names))
    return dict(zip(names, ports[: len(names)], strict=True)), dict(
        zip(names, ports[len(names) :], strict=True)
    )


def write_config(
    directory: Path,
    *,
    secret: str | None,
    cache_size: int = 5,
    books: int | None = None,
    name: str = "bazar.toml",
    frontends: int = 1,
    shared_port: bool = False,
) -> Layout:
    """A config for ``frontends`` + 3 + 3 processes on free loopback ports, data under ``directory``.

    ``secret=None`` leaves the secret out, so the processes read (or create) ``data/secret``;
    ``books=None`` leaves the catalog at its default size (the report's seven books);
    ``frontends``: one called ``frontend``, or ``frontend-1``, ... (the first the default);
    ``shared_port``: they all listen on one more port too, shared (``bazar.shared_port``).
    """
    names = ("frontend",) if frontends == 1 else tuple(f"frontend-{n}" for n in range(1, frontends + 1))
    processes = (*names, *REPLICAS)
    ports, channel_ports = loopback_ports((*processes, "public"))  # all free at once
    public: int | None = ports.pop("public")
    del channel_ports["public"]
    if not shared_port:
        public = None
    tables = {process: config.endpoints(ports[process], channel_ports[process]) for process in processes}
    if public is not None:
        for frontend in names:
            tables[frontend]["public"] = f"tcp:port={public}:interface=127.0.0.1"
    raw = config.document(
        {"data_dir": "data", "cache_size": cache_size, "secret": secret, "books": books}, tables
    )
    path = config.write(directory / name, raw)
    return Layout(directory, path, ports, channel_ports, secret, directory / "data", names, public)


def cluster_status(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """``GET /bazar/cluster`` when every replica is healthy and every front end it lists holds
    its leases (until then a front end answers every read as a miss: a cluster that has just
    started would not show its cache), else None."""
    try:
        code, body = get_json(url + "/bazar/cluster", timeout=timeout)
    except (OSError, ValueError):
        return None
    if code != 200 or not isinstance(body, dict):
        return None
    replicas = body.get("replicas", [])
    leases_held = all(holds_its_leases(f) for f in body.get("frontends", []))
    if replicas and all(r.get("healthy") for r in replicas) and leases_held:
        return body
    return None


def holds_its_leases(frontend: dict[str, Any]) -> bool:
    """Whether a front end ``/bazar/cluster`` lists answered and holds every role's lease: it
    may answer from its cache (until its first grant, every read is a miss)."""
    leases = frontend.get("leases", {})
    return bool(frontend.get("healthy")) and all(lease.get("valid") for lease in leases.values())


def wait_healthy(
    urls: Sequence[str], processes: Sequence[Process], timeout: float, what: str
) -> dict[str, Any]:
    """``cluster_status`` of the first of ``urls`` (front ends) once each of them says every
    replica is healthy; StartError, with the ends of the processes' logs, as soon as one of
    them exits, or after ``timeout`` seconds. Every front end, not only the first: each
    probes on its own, and one whose first probe came before a replica listened holds it
    down until a probe finds it up (writes answer 503 while no replica of a role is up)."""

    def ready() -> dict[str, Any] | bool | None:
        if any(not p.running() for p in processes):
            return True
        statuses = []
        for url in urls:
            statuses.append(cluster_status(url))
            if statuses[-1] is None:
                return None
        return statuses[0]

    status = poll(ready, timeout, interval=0.1)
    exited = [p for p in processes if not p.running()]
    if isinstance(status, dict) and not exited:
        return status
    state = (
        f"{exited[0].name} exited with status {exited[0].popen.returncode}"
        if exited
        else f"not healthy after {timeout:.0f} s"
    )
    if len(processes) == 1:
        logs = f"its log ({processes[0].log_path}) ends:\n{processes[0].log_tail()}"
    else:
        logs = "their logs end:\n" + "\n".join(f"--- {p.log_path} ---\n{p.log_tail()}" for p in processes)
    raise StartError(f"{what} {state}; {logs}")


class Cluster:
    """``twistd -n bazar-cluster`` on its own config, started and healthy."""

    def __init__(self, layout: Layout, process: Process) -> None:
        self.layout = layout
        self.process = process

    @property
    def secret(self) -> str:
        assert self.layout.secret is not None
        return self.layout.secret

    @property
    def frontend(self) -> str:
        return self.layout.frontend

    def url(self, name: str) -> str:
        return self.layout.url(name)

    def status(self) -> dict[str, Any]:
        """``GET /bazar/cluster``, synchronously; ValueError if it does not answer 200."""
        code, body = get_json(self.frontend + "/bazar/cluster")
        if code != 200:
            raise ValueError(f"GET {self.frontend}/bazar/cluster answered {code}: {body!r}")
        return dict(body)

    def pid_of(self, name: str) -> int | None:
        """The pid of the child process listening as ``name`` (frontend, catalog-2, ...)."""
        return listening_pid(self.layout.ports[name], self.process.group())

    def stop(self) -> None:
        """Stop it; Unclean if it or a child needed SIGKILL, or left a port listening."""
        self.process.stop_cleanly()


def start_cluster(
    directory: Path,
    processes: Processes | None = None,
    *,
    label: str = "",
    secret: str | None,
    timeout: float = START_TIMEOUT,
    **settings: Any,
) -> Cluster:
    """``twistd -n bazar-cluster`` on a fresh config in ``directory`` (``settings``: see
    ``write_config``), healthy; StartError if not (and nothing of it left running).

    Ports are picked free just before the start; if one was taken meanwhile, the cluster
    exits at once, and it is tried once more on new ports. With ``processes``, it is stopped
    with them; without, by ``Cluster.stop``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    name = f"bazar-cluster-{label}" if label else "bazar-cluster"
    what = f"the {label} cluster" if label else "the cluster"
    if "cache_size" in settings:
        what += f" (cache_size = {settings['cache_size']})"
    for attempt in (1, 2):
        layout = write_config(directory, secret=secret, **settings)
        args = twistd("bazar-cluster", "--config", str(layout.config))
        if processes is None:
            process = Process(name, args, directory, layout.all_ports())
        else:
            process = processes.start(name, args, directory, layout.all_ports())
        try:
            wait_healthy([layout.url(f) for f in layout.frontends], [process], timeout, what)
        except BaseException as e:
            exited = not process.running()
            process.stop(STOP_TIMEOUT)
            if processes is not None:
                processes.started.remove(process)
            if isinstance(e, StartError) and exited and "in use" in process.log_tail() and attempt == 1:
                continue
            raise
        return Cluster(layout, process)
    raise AssertionError("unreachable")  # pragma: no cover

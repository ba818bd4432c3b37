"""The cluster's configuration: one TOML file names every replica, its endpoints and addresses.

Every process of the cluster reads the same file, so they agree on who the replicas are
and which one sequences writes. Missing keys fall back to the embedded defaults below,
which are also what ``etc/bazar.toml`` spells out.
"""

from __future__ import annotations

import difflib
import json
import os
import secrets
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomli_w
from twisted.internet.endpoints import _parseServer, clientFromString
from twisted.internet.testing import MemoryReactor

from bazar.validation import is_integer

DEFAULT_CONFIG_PATH = Path("etc/bazar.toml")

DEFAULT_FRONTEND_PORT = 5000
# ``frontends = N`` (N > 1) in [cluster]: front end i listens on FRONTEND_PORT_BASE + i and its
# channel on FRONTEND_CHANNEL_BASE + i, and all of them on the public DEFAULT_FRONTEND_PORT, shared.
FRONTEND_PORT_BASE = 5300
FRONTEND_CHANNEL_BASE = 5400
MAX_FRONTENDS = 64
# The report's seven books; a larger catalog adds generated books after them.
DEFAULT_BOOKS = 7
# Far beyond any test or benchmark, but a typo (an extra zero or two) still fails fast
# instead of spending hours seeding.
MAX_BOOKS = 100_000_000
DEFAULT_REPLICA_PORTS = {"catalog": (5101, 5102, 5103), "order": (5201, 5202, 5203)}
# By default each process's internal channel (bazar.channel) listens this far above its HTTP port.
DEFAULT_CHANNEL_OFFSET = 10


class ConfigError(Exception):
    """The configuration cannot be used; the message says why, for a human."""


@dataclass(frozen=True)
class Replica:
    name: str
    role: str
    listen: str  # the HTTP server's endpoint string
    url: str  # where others reach it over HTTP
    # The internal channel (bazar.channel): its server's endpoint string, and the client
    # endpoint string others connect to. Without them, internal calls to it go over HTTP.
    channel_listen: str | None = None
    channel: str | None = None
    # A front end's public listener, which several front ends on one host may share
    # (SO_REUSEPORT: bazar.shared_port); None: clients use ``listen``.
    public: str | None = None


@dataclass(frozen=True)
class Config:
    frontend: Replica
    catalog: tuple[Replica, ...]
    order: tuple[Replica, ...]
    cache_size: int
    data_dir: Path
    secret: str
    # How many books a new catalog database is seeded with: ids 0 to books - 1.
    books: int = DEFAULT_BOOKS
    # Seconds between the front end's health probes of each replica.
    probe_interval: float = 1.0
    source: str = field(default="embedded defaults", compare=False)
    # Every front end, the default one (``frontend``) first; () for just ``frontend``.
    frontends: tuple[Replica, ...] = ()

    def __post_init__(self) -> None:
        if not self.frontends:
            object.__setattr__(self, "frontends", (self.frontend,))

    def frontend_named(self, name: str) -> Replica:
        """The front end called ``name``, or a ConfigError naming the known ones."""
        for frontend in self.frontends:
            if frontend.name == name:
                return frontend
        known = ", ".join(f.name for f in self.frontends)
        raise ConfigError(f"unknown front end {name!r} in {self.source}; known: {known}")

    def replica(self, role: str, name: str) -> Replica:
        """The replica of ``role`` called ``name``, or a ConfigError naming the known ones."""
        replicas = self.catalog if role == "catalog" else self.order
        for replica in replicas:
            if replica.name == name:
                return replica
        known = ", ".join(r.name for r in replicas)
        raise ConfigError(f"unknown {role} replica {name!r} in {self.source}; known: {known}")

    def database_path(self, replica: Replica) -> Path:
        return self.data_dir / f"{replica.name}.sqlite"


def endpoints(
    port: int, channel_port: int | None = None, address: str = "127.0.0.1", *, with_channel: bool = True
) -> dict[str, str]:
    """A process's table of addresses: HTTP on ``address``:``port``, its channel on
    ``channel_port`` (by default ``DEFAULT_CHANNEL_OFFSET`` above ``port``), or none
    (``with_channel=False``: internal calls to it go over HTTP)."""
    http = {"listen": f"tcp:port={port}:interface={address}", "url": f"http://{address}:{port}"}
    if not with_channel:
        return http
    channel = port + DEFAULT_CHANNEL_OFFSET if channel_port is None else channel_port
    return {
        **http,
        "channel_listen": f"tcp:port={channel}:interface={address}",
        "channel": f"tcp:host={address}:port={channel}",
    }


def _loopback(port: int) -> dict[str, str]:
    """The default addresses of a process on ``port``: HTTP there, its channel just above."""
    return endpoints(port)


def _default_replicas(role: str) -> list[dict[str, Any]]:
    return [
        {"name": f"{role}-{number}", **_loopback(port)}
        for number, port in enumerate(DEFAULT_REPLICA_PORTS[role], start=1)
    ]


# Every key each table may have: anything else is a typo that would silently leave a default.
TABLES = ("cluster", "frontend", "catalog", "order")
CLUSTER_KEYS = ("books", "cache_size", "data_dir", "frontends", "probe_interval", "secret", "secret_file")
REPLICA_KEYS = ("name", "listen", "url", "channel_listen", "channel")
FRONTEND_KEYS = (*REPLICA_KEYS, "public")


def _known(keys: Collection[str], known: Collection[str], where: str, what: str = "key") -> None:
    """Refuses the first of ``keys`` not in ``known``, suggesting the closest known one."""
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1)
        if close:
            hint = f"did you mean {close[0]!r}?"
        elif key in CLUSTER_KEYS:  # e.g. written after a [[catalog]] table, so it landed there
            hint = "it belongs in [cluster]"
        else:
            hint = f"known {what}s: {', '.join(sorted(known))}"
        raise ConfigError(f"{where}unknown {what} {key!r} ({hint})")


def _string(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key!r} must be a non-empty string")
    return value


def _port_in_range(port: object) -> None:
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError(f"port {port} is not from 0 to 65535")


def _server_endpoint(table: dict[str, Any], key: str, where: str) -> str:
    """A server endpoint string Twisted can parse (checked now: a bad one would otherwise be a
    traceback when the process listens). Parsed, not built: an endpoint of a plugin (systemd
    sockets) may only be buildable in the process it belongs to."""
    value = _string(table, key, where)
    try:
        kind, args, _ = _parseServer(value, None)
        if kind in ("TCP", "SSL"):
            _port_in_range(args[0])
    except Exception as e:  # a plugin's parser may raise anything
        raise ConfigError(f"{where}: {key!r} = {_quoted(value)} is not a server endpoint: {e}") from None
    return value


def _client_endpoint(table: dict[str, Any], key: str, where: str) -> str:
    """A client endpoint string Twisted can build (against a reactor that does nothing)."""
    value = _string(table, key, where)
    try:
        endpoint = clientFromString(MemoryReactor(), value)
        _port_in_range(getattr(endpoint, "_port", None))
    except Exception as e:  # a plugin's parser may raise anything
        raise ConfigError(f"{where}: {key!r} = {_quoted(value)} is not a client endpoint: {e}") from None
    return value


def _url(table: dict[str, Any], where: str) -> str:
    url = _string(table, "url", where).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: 'url' must start with http:// or https://, not {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as e:
        raise ConfigError(f"{where}: 'url' = {_quoted(url)} is not a URL: {e}") from None
    if not parts.hostname:
        raise ConfigError(f"{where}: 'url' = {_quoted(url)} names no host")
    return url


def _quoted(value: str) -> str:
    """``value`` as TOML (and JSON) would write it, to show it as it stands in the file."""
    return json.dumps(value)


def _replica(table: Any, role: str, where: str) -> Replica:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    _known(table, FRONTEND_KEYS if role == "frontend" else REPLICA_KEYS, f"{where}: ")
    name = _string(table, "name", where, role)
    listen = _server_endpoint(table, "listen", where)
    url = _url(table, where)
    if ("channel_listen" in table) != ("channel" in table):
        raise ConfigError(f"{where}: give both 'channel_listen' and 'channel', or neither")
    channel_listen = channel = None
    if "channel" in table:
        channel_listen = _server_endpoint(table, "channel_listen", where)
        channel = _client_endpoint(table, "channel", where)
    public = None
    if "public" in table:
        public = _server_endpoint(table, "public", where)
        if _tcp_port(public) is None:
            raise ConfigError(f"{where}: 'public' = {_quoted(public)} must be a TCP endpoint with a port")
    return Replica(name, role, listen, url, channel_listen, channel, public)


def _replicas(raw: dict[str, Any], role: str) -> tuple[Replica, ...]:
    tables = raw.get(role, _default_replicas(role))
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"[[{role}]] must list at least one replica")
    replicas = tuple(_replica(t, role, f"[[{role}]] #{i + 1}") for i, t in enumerate(tables))
    names = [r.name for r in replicas]
    if len(set(names)) != len(names):
        raise ConfigError(f"[[{role}]] replica names must be unique, got {names}")
    return replicas


def _default_frontends(count: int) -> list[dict[str, Any]]:
    """``frontends = count`` on one host: each on its own port, all sharing the lab's port 5000."""
    if count == 1:
        return [{"name": "frontend", **_loopback(DEFAULT_FRONTEND_PORT)}]
    public = _loopback(DEFAULT_FRONTEND_PORT)["listen"]
    return [
        {
            "name": f"frontend-{number}",
            **endpoints(FRONTEND_PORT_BASE + number, FRONTEND_CHANNEL_BASE + number),
            "public": public,
        }
        for number in range(1, count + 1)
    ]


def _frontends(raw: dict[str, Any], cluster: dict[str, Any]) -> tuple[Replica, ...]:
    """The front ends: one ``[frontend]`` table, several ``[[frontend]]`` tables (named
    ``frontend-1``, ... unless they say), or ``frontends = N`` in [cluster] for N on this host.
    The first is the default one (the lab's)."""
    count = cluster.get("frontends")
    if count is not None and (not is_integer(count) or not 1 <= count <= MAX_FRONTENDS):
        raise ConfigError(
            f"[cluster]: 'frontends' must be an integer from 1 to {MAX_FRONTENDS}, not {count!r}"
        )
    tables = raw.get("frontend")
    if tables is None:
        tables = _default_frontends(count or 1)
    elif isinstance(tables, list):
        if not tables:
            raise ConfigError("[[frontend]] must list at least one front end")
        tables = [
            t if not isinstance(t, dict) or "name" in t else {"name": f"frontend-{i + 1}", **t}
            for i, t in enumerate(tables)
        ]
    else:
        tables = [tables]
    if count is not None and count != len(tables):
        raise ConfigError(
            f"[cluster]: 'frontends' = {count} but the config has {len(tables)} front-end table(s)"
        )
    where = "[frontend]" if len(tables) == 1 else "[[frontend]] #{}"
    frontends = tuple(_replica(t, "frontend", where.format(i + 1)) for i, t in enumerate(tables))
    names = [f.name for f in frontends]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"front-end names must be unique: {', '.join(map(repr, duplicated))} given twice")
    return frontends


def _tcp_port(endpoint: str) -> tuple[str, int] | None:
    """(interface, port) of a TCP server endpoint string with a fixed port; None otherwise."""
    try:
        kind, args, kwargs = _parseServer(endpoint, None)
    except Exception:
        return None
    if kind != "TCP" or not args or not args[0]:
        return None
    return str(kwargs.get("interface", "")), int(args[0])


def _unique_ports(processes: tuple[Replica, ...]) -> None:
    """Refuses two listeners of the cluster on one port of one host (a front end's copied table,
    say): the second process would fail to start, far from the mistake. Processes whose urls
    name different hosts may use the same port (one replica per host, or per container)."""
    seen: dict[tuple[str, int], str] = {}

    def host(process: Replica) -> str:
        return urlsplit(process.url).hostname or ""

    for process in processes:  # the front ends' shared port, first: they may all use it
        where = _tcp_port(process.public) if process.public is not None else None
        if where is not None:
            seen[(host(process), where[1])] = "the front ends' public port"
    for process in processes:
        for what, endpoint in (("listen", process.listen), ("channel_listen", process.channel_listen)):
            where = _tcp_port(endpoint) if endpoint else None
            if where is None:
                continue
            key, mine = (host(process), where[1]), f"{process.name}'s {what}"
            if key in seen:
                raise ConfigError(f"{mine} and {seen[key]} both use port {where[1]}: each needs its own")
            seen[key] = mine


def _secret(cluster: dict[str, Any], data_dir: Path) -> str:
    """The shared secret: given inline, read from a file, or generated once into a 0600 file."""
    if "secret" in cluster:
        return _string(cluster, "secret", "[cluster]")
    path = Path(cluster.get("secret_file", data_dir / "secret"))
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    except OSError as e:
        raise ConfigError(f"cannot read the secret file {path}: {e.strerror}") from None
    if existing:
        return existing
    generated = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(generated + "\n")
    except OSError as e:
        raise ConfigError(f"cannot write the secret file {path}: {e.strerror}") from None
    return generated


def parse(raw: dict[str, Any], source: str = "embedded defaults") -> Config:
    """Turn a TOML document (already parsed) into a Config, filling in defaults.

    An error in the document names ``source`` first, unless that is the built-in defaults.
    """
    try:
        return _parse(raw, source)
    except ConfigError as e:
        if source == "embedded defaults":
            raise
        raise ConfigError(f"{source}: {e}") from None


def _parse(raw: dict[str, Any], source: str) -> Config:
    _known(raw, TABLES, "", "table")
    cluster = raw.get("cluster", {})
    if not isinstance(cluster, dict):
        raise ConfigError("[cluster] must be a table")
    _known(cluster, CLUSTER_KEYS, "[cluster]: ")
    cache_size = cluster.get("cache_size", 5)
    if not is_integer(cache_size) or cache_size < 0:
        raise ConfigError(
            f"[cluster]: 'cache_size' must be an integer >= 0 (0 disables the cache), not {cache_size!r}"
        )
    books = cluster.get("books", DEFAULT_BOOKS)
    if not is_integer(books) or not DEFAULT_BOOKS <= books <= MAX_BOOKS:
        raise ConfigError(
            f"[cluster]: 'books' must be an integer from {DEFAULT_BOOKS} (the report's books) "
            f"to {MAX_BOOKS:_}, not {books!r}"
        )
    probe_interval = cluster.get("probe_interval", 1.0)
    if (
        not isinstance(probe_interval, int | float)
        or isinstance(probe_interval, bool)
        or not 0.05 <= probe_interval <= 60
    ):
        raise ConfigError(
            f"[cluster]: 'probe_interval' must be a number of seconds from 0.05 to 60, not {probe_interval!r}"
        )
    data_dir = Path(_string(cluster, "data_dir", "[cluster]", "bazar-data"))
    frontends = _frontends(raw, cluster)
    catalog, order = _replicas(raw, "catalog"), _replicas(raw, "order")
    _unique_ports((*frontends, *catalog, *order))
    return Config(
        frontend=frontends[0],
        frontends=frontends,
        catalog=catalog,
        order=order,
        cache_size=cache_size,
        data_dir=data_dir,
        secret=_secret(cluster, data_dir),
        books=books,
        probe_interval=float(probe_interval),
        source=source,
    )


def load(path: str | Path | None = None) -> Config:
    """Load ``path``; with no path, ``etc/bazar.toml`` if it exists here, else the defaults."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return parse({})
        path = DEFAULT_CONFIG_PATH
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return parse(raw, source=str(path))


# -- writing: the one place a config file is made (the benchmark's clusters, the tests') ----------


def document(cluster: Mapping[str, Any], processes: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """A config document (what ``parse`` reads): ``cluster``'s keys in [cluster] (those given
    as None left out, so their defaults apply), and each process's table by its name:
    ``frontend`` in [frontend], ``catalog-2`` in [[catalog]] with ``name = "catalog-2"``."""
    raw: dict[str, Any] = {"cluster": {k: v for k, v in cluster.items() if v is not None}}
    for name, table in processes.items():
        if name == "frontend":
            raw["frontend"] = dict(table)
        elif name.startswith("frontend-"):  # several: [[frontend]] tables
            raw.setdefault("frontend", []).append({"name": name, **table})
        else:
            raw.setdefault(name.split("-")[0], []).append({"name": name, **table})
    return raw


def dump(raw: Mapping[str, Any]) -> str:
    """``raw`` as TOML text; ConfigError for a table or key ``parse`` would refuse as unknown
    (checked here, so a typo in a writer fails where it is made, not in the process reading it)."""
    _known(raw, TABLES, "", "table")
    _known(raw.get("cluster", {}), CLUSTER_KEYS, "[cluster]: ")
    frontends = raw.get("frontend", [])
    for i, table in enumerate(frontends if isinstance(frontends, list) else [frontends]):
        _known(table, FRONTEND_KEYS, f"[frontend] #{i + 1}: ")
    for role in ("catalog", "order"):
        for i, table in enumerate(raw.get(role, [])):
            _known(table, REPLICA_KEYS, f"[[{role}]] #{i + 1}: ")
    return tomli_w.dumps(raw)


def write(path: Path, raw: Mapping[str, Any]) -> Path:
    """Write ``raw`` (see ``dump``) to ``path``; the path, to pass on as ``--config``."""
    path.write_text(dump(raw))
    return path

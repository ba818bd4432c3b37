"""The processes themselves: each role alone, clear start-up errors, stopping, restarting, the secret file."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import defer, reactor

from bazar.channel import Channel
from bazar.config import load
from bazar.launch import CATALOGS, NAMES, Cluster, Layout, Process, Processes, port_is_free, twistd, wait_for
from bazar.protocol import REPLICATE_PATH, SECRET_HEADER
from tests.integration.api import Api, Reply, eventually, request
from tests.integration.cluster import run_twistd, start_cluster, write_config

pytestmark = pytest.mark.integration

START_TIMEOUT = 30.0


def role_command(layout: Layout, name: str) -> list[str]:
    """``twistd -n bazar-<role> --config F [--replica NAME]`` for the process called ``name``."""
    if name == "frontend":
        return twistd("bazar-frontend", "--config", str(layout.config))
    role = name.split("-")[0]
    return twistd(f"bazar-{role}", "--config", str(layout.config), "--replica", name)


def start_role(processes: Processes, layout: Layout, name: str) -> Process:
    return processes.start(name, role_command(layout, name), ports=layout.ports_of(name))


async def wait_answering(http: HTTPClient, process: Process, url: str, secret: str | None) -> Reply:
    """Poll ``url`` until the process answers 200; fail at once if it exits instead."""

    async def answered() -> Reply | None:
        assert process.popen.poll() is None, f"{process.name} exited with {process.popen.returncode}"
        headers = {SECRET_HEADER: secret} if secret else {}
        reply = await request(http, "GET", url, headers=headers, timeout=5)
        return reply if reply.code == 200 else None

    return await eventually(answered, START_TIMEOUT, f"{url} to answer")


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


# -- each role alone -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["catalog-2", "order-1"])
@pytest_twisted.ensureDeferred
async def test_a_replica_runs_alone(
    tmp_path: Path, processes: Processes, http: HTTPClient, name: str
) -> None:
    layout = write_config(tmp_path)
    assert layout.secret is not None
    replica = start_role(processes, layout, name)
    status_url = layout.url(name) + "/internal/status"

    status = (await wait_answering(http, replica, status_url, layout.secret)).body
    role = name.split("-")[0]
    assert status["name"] == name
    assert status["role"] == role
    assert status["sequencer"] == f"{role}-1"
    assert status["last_seq"] == 0
    assert len(status["digest"]) == 64

    # Nothing on a replica answers without the cluster secret.
    data_path = "/catalog/books/1" if role == "catalog" else "/order/orders"
    for path in ("/internal/status", data_path):
        anonymous = await request(http, "GET", layout.url(name) + path)
        assert anonymous.code == 401, anonymous
        assert anonymous.body["error"]["code"] == 401
        assert SECRET_HEADER in anonymous.body["error"]["message"]
        wrong = await request(http, "GET", layout.url(name) + path, headers={SECRET_HEADER: "wrong"})
        assert wrong.code == 403, wrong
        right = await request(http, "GET", layout.url(name) + path, headers={SECRET_HEADER: layout.secret})
        if path == data_path:
            # Past the secret; but alone it holds no lease (bazar.leases), so it serves no read.
            assert right.code == 503, right
            assert "read from another replica" in right.body["error"]["message"]
        else:
            assert right.code == 200, right

    # Its internal channel (AMP) too: a heartbeat-shaped replicate call with the secret is
    # answered with its last_seq, stamped like an HTTP answer; without it, refused.
    channel = Channel(reactor)
    config = load(layout.config)
    peer = config.replica(role, name)
    right = await channel.request(peer, layout.secret, "POST", REPLICATE_PATH, b'{"entries": []}', 5.0)
    assert (right.code, right.json(), right.replica) == (200, {"last_seq": 0}, name)
    assert (right.sequencer, right.epoch) == (f"{role}-1", 1)
    wrong = await channel.request(peer, "wrong", "POST", REPLICATE_PATH, b'{"entries": []}', 5.0)
    assert wrong.code == 403, wrong
    await channel.close()

    replica.stop_cleanly()  # SIGTERM: a clean exit, and both its ports free again
    assert port_is_free(layout.ports[name])
    assert (tmp_path / "data" / f"{name}.sqlite").exists()


@pytest_twisted.ensureDeferred
async def test_roles_side_by_side_in_one_directory(
    tmp_path: Path, processes: Processes, http: HTTPClient
) -> None:
    """docs/operations.md's "Running roles separately" commands, as written, on one machine from one
    directory: the installed ``twistd``, no --pidfile. Each runs (they used to share twistd.pid,
    so the second said "Another twistd server is running" and exited) and leaves no pidfile."""
    script = Path(sys.executable).with_name("twistd")
    assert script.exists(), f"no twistd beside {sys.executable}"
    layout = write_config(tmp_path)
    for name in ("catalog-1", "order-1", "frontend"):  # one after the other, as a user would
        role = name.split("-")[0]
        args = [str(script), "-n", f"bazar-{role}", "--config", str(layout.config)]
        if name == "frontend":
            url, secret = layout.frontend + "/openapi.json", None
        else:
            args += ["--replica", name]
            url, secret = layout.url(name) + "/internal/status", layout.secret
        started = processes.start(name, args, ports=layout.ports_of(name))
        await wait_answering(http, started, url, secret)
    assert list(tmp_path.glob("*.pid")) == []


@pytest_twisted.ensureDeferred
async def test_the_frontend_runs_alone(tmp_path: Path, processes: Processes, http: HTTPClient) -> None:
    layout = write_config(tmp_path)
    frontend = start_role(processes, layout, "frontend")

    page = await wait_answering(http, frontend, layout.frontend + "/openapi.json", None)
    assert page.body["openapi"].startswith("3.")

    # No replica runs: it says so, rather than hanging or failing with a traceback.
    cluster = (await request(http, "GET", layout.frontend + "/bazar/cluster")).body
    assert [r["name"] for r in cluster["replicas"]] == list(NAMES[1:])
    assert not any(r["healthy"] for r in cluster["replicas"])
    for entry in cluster["replicas"]:  # the same fields as a healthy one, with a plain reason
        assert entry["why_unhealthy"] == "unreachable: no connection could be made", entry
        assert entry["last_seq"] is None and entry["digest"] is None and entry["error"], entry
    info = await request(http, "GET", layout.frontend + "/bazar/info/1")
    assert info.code == 503, info
    assert info.body["error"]["code"] == 503

    invalidate = await request(http, "POST", layout.frontend + "/internal/invalidate", body={"keys": []})
    assert invalidate.code == 401, invalidate

    frontend.stop_cleanly()
    assert port_is_free(layout.ports["frontend"])


# -- start-up errors: one clear line, no traceback -------------------------------------


def assert_clear_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    for fragment in fragments:
        assert fragment in lines[0], output


def test_a_missing_config_file(tmp_path: Path) -> None:
    result = run_twistd(tmp_path, "bazar-catalog", "--config", "missing.toml", "--replica", "catalog-1")
    assert_clear_error(result, "bazar-catalog", "missing.toml", "does not exist")


def test_an_unknown_replica(tmp_path: Path) -> None:
    layout = write_config(tmp_path)
    result = run_twistd(tmp_path, "bazar-catalog", "--config", str(layout.config), "--replica", "catalog-9")
    assert_clear_error(result, "'catalog-9'", "catalog-1, catalog-2, catalog-3")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[cluster\ncache_size = 5\n", "is not valid TOML"),
        ('[cluster]\ncache_size = -1\nsecret = "s"\n', "cache_size"),
        ('[cluster]\nsecret = "s"\n[frontend]\nlisten = "tcp:0"\nurl = "ftp://x"\n', "http://"),
    ],
    ids=["invalid-toml", "cache-size-0", "bad-url"],
)
def test_an_invalid_config(tmp_path: Path, text: str, complaint: str) -> None:
    (tmp_path / "bad.toml").write_text(text)
    result = run_twistd(tmp_path, "bazar-order", "--config", "bad.toml", "--replica", "order-1")
    assert_clear_error(result, "bazar-order", complaint)


@pytest.mark.parametrize("command", ["bazar-frontend", "bazar-cluster"])
def test_a_bad_endpoint_string(tmp_path: Path, command: str) -> None:
    """One line naming the key and the file; the cluster refuses to start (it used to start
    every other process and restart the front end, a traceback each time, until stopped)."""
    layout = write_config(tmp_path)
    good = f'listen = "tcp:port={layout.ports["frontend"]}:interface=127.0.0.1"'
    text = layout.config.read_text()
    assert good in text
    layout.config.write_text(text.replace(good, 'listen = "tcp:port=notaport"'))
    result = run_twistd(tmp_path, command, "--config", str(layout.config), timeout=15)
    assert_clear_error(result, command, str(layout.config), "[frontend]", "'listen'", "notaport")
    assert all(port_is_free(p) for p in layout.all_ports())


@pytest.mark.parametrize("command", ["bazar-catalog", "bazar-cluster"])
def test_a_port_in_use(tmp_path: Path, command: str) -> None:
    layout = write_config(tmp_path)
    port = layout.ports["catalog-1"]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        args = ["--replica", "catalog-1"] if command == "bazar-catalog" else []
        result = run_twistd(tmp_path, command, "--config", str(layout.config), *args)
    assert_clear_error(result, command, f"port {port} is already in use")
    assert all(port_is_free(p) for p in layout.all_ports() if p != port)


# -- the cluster as a whole ------------------------------------------------------------


def test_sigterm_stops_the_cluster_and_every_child(fresh_cluster: Cluster) -> None:
    parent = fresh_cluster.process
    children = {name: fresh_cluster.pid_of(name) for name in NAMES}
    assert all(children.values()), children
    assert len(set(children.values())) == len(NAMES) and parent.pid not in children.values()

    os.kill(parent.pid, signal.SIGTERM)
    status = parent.popen.wait(15)
    # Twisted re-raises the signal that stopped it, after a clean shutdown.
    assert status in (0, -signal.SIGTERM), status
    assert "Server Shut Down." in parent.log_tail(5)

    # The cluster waits for its children: by the time it has exited, they have too.
    assert [name for name, pid in children.items() if pid is not None and pid_alive(pid)] == []
    assert [port for port in fresh_cluster.layout.all_ports() if not port_is_free(port)] == []
    assert parent.group() == []


@pytest.fixture
def fresh_two(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh cluster with two front ends (each probes the replicas on its own); stopped by
    process group whatever the test did."""
    running = start_cluster(tmp_path, frontends=2)
    yield running
    running.stop()


@pytest_twisted.ensureDeferred
async def test_writes_right_after_the_start_all_succeed(fresh_two: Cluster, http: HTTPClient) -> None:
    """The moment the launcher says the cluster is started, purchases and price and stock
    updates through every front end at once all answer 200: none 503 because a front end's
    first probe came before a replica listened (or was ready)."""
    writes = []
    for name in fresh_two.layout.frontends:
        url = fresh_two.url(name)
        writes += [
            ("POST", url + "/bazar/purchase/1", {"quantity": 1}),
            ("POST", url + "/bazar/purchase/2", {"quantity": 1}),
            ("PUT", url + "/bazar/update_price/3", {"price": 30}),
            ("PUT", url + "/bazar/update_quantity/4", {"delta": 1}),
        ]
    replies = await defer.gatherResults(
        [defer.ensureDeferred(request(http, method, url, body=body)) for method, url, body in writes],
        consumeErrors=True,
    )
    assert [(w[1], r.code) for w, r in zip(writes, replies, strict=True) if r.code != 200] == []


@pytest.mark.parametrize("victim", ["catalog-2", "order-1"])
@pytest_twisted.ensureDeferred
async def test_a_killed_child_is_restarted(fresh_cluster: Cluster, http: HTTPClient, victim: str) -> None:
    api = Api(http, fresh_cluster)
    old = fresh_cluster.pid_of(victim)
    assert old is not None

    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not pid_alive(old), 10, f"{victim} (pid {old}) to die")

    async def restarted() -> int | None:
        pid = fresh_cluster.pid_of(victim)
        return pid if pid not in (None, old) else None

    new = await eventually(restarted, START_TIMEOUT, f"{victim} to be restarted")
    assert fresh_cluster.process.popen.poll() is None  # the cluster itself kept running

    async def healthy() -> bool:
        replicas = (await api.status())["replicas"]
        return all(r["healthy"] for r in replicas)

    await eventually(healthy, START_TIMEOUT, "every replica to be healthy again")
    status = await api.internal(victim, "/internal/status")
    assert status.code == 200 and status.body["name"] == victim

    # ... and it takes part in writes again.
    if victim.startswith("catalog"):
        await api.set_price(1, 12.5)
        books = await api.on_each(CATALOGS, "/catalog/books/1")
        assert {b["price"] for b in books.values()} == {12.5}
    else:
        order = await api.post("/bazar/purchase/1")
        assert order.code == 200, order
        assert (await api.replica_json(victim, f"/order/orders/{order.body['order_id']}"))["book_id"] == 1
    statuses = (await api.status())["replicas"]
    for role in ("catalog", "order"):
        assert len({r["digest"] for r in statuses if r["role"] == role}) == 1, statuses
    assert fresh_cluster.pid_of(victim) == new


# -- the generated secret --------------------------------------------------------------


@pytest.mark.parametrize("secret_file", [None, "private/cluster-secret"])
@pytest_twisted.ensureDeferred
async def test_a_generated_secret_file_is_private(
    tmp_path: Path, processes: Processes, http: HTTPClient, secret_file: str | None
) -> None:
    layout = write_config(tmp_path, secret=None)
    path = tmp_path / "data" / "secret"
    if secret_file is not None:
        text = layout.config.read_text().replace("[cluster]", f'[cluster]\nsecret_file = "{secret_file}"', 1)
        layout.config.write_text(text)
        path = tmp_path / secret_file
    catalog = start_role(processes, layout, "catalog-1")

    async def refuses_strangers() -> bool:
        assert catalog.popen.poll() is None, f"catalog-1 exited with {catalog.popen.returncode}"
        reply = await request(http, "GET", layout.url("catalog-1") + "/internal/status", timeout=5)
        return reply.code == 401

    await eventually(refuses_strangers, START_TIMEOUT, "catalog-1 to answer")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert len(secret) >= 32

    # It is the secret the replica uses.
    reply = await request(
        http, "GET", layout.url("catalog-1") + "/internal/status", headers={SECRET_HEADER: secret}
    )
    assert reply.code == 200 and reply.body["name"] == "catalog-1", reply

"""compose.yaml under a real Docker engine: the images built from docker/*.Dockerfile, the
1 + 3 + 3 cluster started with compose, the report's walkthrough through the published port,
then a replica container killed and a replica process crashed, and each seen to recover.

The tests share the module's project (``conftest.project``) and run in this order.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.containers.docker import Project, http, poll, run

pytestmark = pytest.mark.containers

CATALOGS = ("catalog-1", "catalog-2", "catalog-3")
ORDERS = ("order-1", "order-2", "order-3")
CACHE = "x-bazar-cache"
REPLICA = "x-bazar-replica"


def agreed(project: Project) -> dict[str, dict[str, Any]]:
    """/bazar/cluster once every replica is healthy and each role's replicas hold the same data
    (equal digests and last sequence numbers); else an AssertionError saying what differs."""
    reply = http(project, "GET", "/bazar/cluster")
    assert reply.code == 200, reply
    replicas = {r["name"]: r for r in reply.body["replicas"]}
    assert set(replicas) == {*CATALOGS, *ORDERS}, replicas
    unhealthy = {name: r for name, r in replicas.items() if not r["healthy"]}
    assert not unhealthy, unhealthy
    for role in (CATALOGS, ORDERS):
        seen = {(replicas[name]["digest"], replicas[name]["last_seq"]) for name in role}
        assert len(seen) == 1, {name: replicas[name] for name in role}
    return replicas


def buy(project: Project, book: int) -> dict[str, Any]:
    reply = http(project, "POST", f"/bazar/purchase/{book}", {"quantity": 1})
    assert reply.code == 200, reply
    assert reply.body["book_id"] == book and reply.body["quantity"] == 1, reply
    return dict(reply.body)


def set_price(project: Project, book: int, price: float) -> None:
    reply = http(project, "PUT", f"/bazar/update_price/{book}", {"price": price})
    assert reply.code == 200 and reply.body["price"] == price, reply


def info(project: Project, book: int) -> tuple[dict[str, Any], str | None]:
    """The book and whether the cache had it."""
    reply = http(project, "GET", f"/bazar/info/{book}")
    assert reply.code == 200, reply
    return reply.body, reply.headers.get(CACHE)


def test_walkthrough(project: Project) -> None:
    """The seven books; a miss then a hit; a purchase and a price change, each seen by the next
    read (a miss: the write dropped the cached copy); every replica's data alike."""
    poll("every replica healthy, each role's data alike", lambda: agreed(project), deadline=90)
    books = http(project, "GET", "/bazar/info/all")
    assert books.code == 200 and [b["id"] for b in books.body] == list(range(7)), books

    first = http(project, "GET", "/bazar/info/0")
    assert first.headers[CACHE] == "miss" and first.headers[REPLICA] in CATALOGS, first
    second = http(project, "GET", "/bazar/info/0")
    assert second.headers[CACHE] == "hit" and second.body == first.body, second

    before, _ = info(project, 2)
    assert info(project, 2) == (before, "hit")
    order = buy(project, 2)
    assert order["title"] == before["title"]
    assert info(project, 2) == ({**before, "quantity": before["quantity"] - 1}, "miss")
    order_again = http(project, "GET", f"/bazar/orders/{order['order_id']}")
    assert order_again.code == 200 and order_again.body["book_id"] == 2, order_again

    book, _ = info(project, 1)
    new_price = round(book["price"] + 7.25, 2)
    set_price(project, 1, new_price)
    assert info(project, 1) == ({**book, "price": new_price}, "miss")
    assert info(project, 1) == ({**book, "price": new_price}, "hit")

    replicas = agreed(project)
    assert all(replicas[name]["last_seq"] >= 2 for name in CATALOGS), replicas  # purchase, price
    assert all(replicas[name]["last_seq"] >= 1 for name in ORDERS), replicas


def test_containers_are_confined_and_keep_the_secret(project: Project) -> None:
    """What compose.yaml asks of every role container, as the engine applied it: the image's
    unprivileged uid, a read-only root, no capabilities, no new privileges, nothing published
    but the front end's port on loopback; the secret file 0600 and in no log."""
    for service in ("frontend", *CATALOGS, *ORDERS):
        state = project.inspect(service)
        host = state["HostConfig"]
        assert state["Config"]["User"] == "10001:10001", service
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], service
        assert "no-new-privileges:true" in host["SecurityOpt"], service
        published = {port: bound for port, bound in state["NetworkSettings"]["Ports"].items() if bound}
        expected = {"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(project.port)}]}
        assert published == (expected if service == "frontend" else {}), (service, published)
    frontend = project.container("frontend")
    refused = subprocess.run([project.docker, "exec", frontend, "touch", "/etc/bazar/x"], capture_output=True)
    assert refused.returncode != 0 and b"Read-only file system" in refused.stderr, refused
    mode = run([project.docker, "exec", frontend, "stat", "-c", "%a %u", "/var/lib/bazar-secret/secret"])
    assert mode.split() == ["600", "10001"], mode
    secret = run([project.docker, "exec", frontend, "cat", "/var/lib/bazar-secret/secret"]).strip()
    assert len(secret) >= 32
    assert secret not in project("logs", "--no-color")


def test_killed_replica_container_catches_up_once_started(project: Project) -> None:
    """`docker kill` on a catalog follower's container: reads and writes go on without it, and
    started again (on its own volume) it gets the writes it missed before it is healthy."""
    seq_before = agreed(project)["catalog-1"]["last_seq"]
    run([project.docker, "kill", project.container("catalog-3")])
    assert project.inspect("catalog-3")["State"]["Running"] is False

    buy(project, 3)
    set_price(project, 4, 12.5)
    book, _ = info(project, 4)
    assert book["price"] == 12.5

    def without_catalog_3() -> dict[str, Any]:
        reply = http(project, "GET", "/bazar/cluster")
        replicas = {r["name"]: r for r in reply.body["replicas"]}
        assert not replicas["catalog-3"]["healthy"], replicas["catalog-3"]
        return replicas

    missed = poll("the front end sees catalog-3 down", without_catalog_3)
    assert missed["catalog-1"]["last_seq"] == seq_before + 2, missed["catalog-1"]

    project("start", "catalog-3")
    replicas = poll("catalog-3 healthy again, with every write", lambda: agreed(project))
    assert replicas["catalog-3"]["last_seq"] == seq_before + 2


def test_crashed_replica_process_is_restarted_by_its_container(project: Project) -> None:
    """twistd killed inside an order replica's container: the container exits, compose's
    `restart: unless-stopped` starts it again, and it catches up with the orders it missed."""
    before = project.inspect("order-2")["RestartCount"]
    orders_before = agreed(project)["order-1"]["last_seq"]
    # Under `init: true` PID 1 is docker-init and twistd its one child.
    crash = "kill -KILL $(cat /proc/1/task/1/children)"
    run([project.docker, "exec", project.container("order-2"), "sh", "-c", crash])
    buy(project, 5)

    def restarted() -> None:
        state = project.inspect("order-2")
        assert state["RestartCount"] == before + 1 and state["State"]["Running"], state["State"]

    poll("order-2's container restarted", restarted)
    replicas = poll("order-2 healthy again, with every order", lambda: agreed(project))
    assert replicas["order-2"]["last_seq"] == orders_before + 1

"""compose.yaml under a real Docker engine: the images built from docker/*.Dockerfile, HAProxy
in front of 2 front ends and 3 + 3 replicas started with compose, the report's walkthrough
through HAProxy's published port (answered by both front ends), then a front-end container
killed (HAProxy routes around it), a replica container killed and a replica process crashed,
and each seen to recover.

The tests share the module's project (``conftest.project``) and run in this order.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from tests.containers.docker import Project, http, poll, run

pytestmark = pytest.mark.containers

FRONTENDS = ("frontend-1", "frontend-2")
CATALOGS = ("catalog-1", "catalog-2", "catalog-3")
ORDERS = ("order-1", "order-2", "order-3")
CACHE = "x-bazar-cache"
REPLICA = "x-bazar-replica"
SERVED_BY = "x-bazar-frontend"


def agreed(project: Project) -> dict[str, dict[str, Any]]:
    """/bazar/cluster once both front ends hold their cache leases (till then each read is a
    miss), every replica is healthy and each role's replicas hold the same data (equal digests
    and last sequence numbers); else an AssertionError saying what differs."""
    reply = http(project, "GET", "/bazar/cluster")
    assert reply.code == 200, reply
    frontends = {f["name"]: f for f in reply.body["frontends"]}
    assert set(frontends) == set(FRONTENDS), frontends
    for frontend in frontends.values():
        assert frontend["healthy"] and all(lease["valid"] for lease in frontend["leases"].values()), frontend
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


class Caches:
    """What each front end should have cached: a read through HAProxy is a hit exactly when the
    front end that served it (X-Bazar-Frontend) has read that book since the book's last write,
    which is pushed to every front end before it is acknowledged. (The walkthrough reads fewer
    books than the caches hold, so nothing is evicted.)"""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.cached: dict[str, set[int]] = {name: set() for name in FRONTENDS}
        self.seen: list[tuple[str, str]] = []  # (front end, hit or miss) of every read

    def read(self, book: int) -> dict[str, Any]:
        reply = http(self.project, "GET", f"/bazar/info/{book}")
        assert reply.code == 200, reply
        served = reply.headers[SERVED_BY]
        expected = "hit" if book in self.cached[served] else "miss"
        assert reply.headers[CACHE] == expected, (book, reply)
        self.cached[served].add(book)
        self.seen.append((served, expected))
        return dict(reply.body)

    def read_at_both(self, book: int) -> list[dict[str, Any]]:
        """Reads until each front end has answered once (HAProxy's round robin: two reads)."""
        start, answers = len(self.seen), list[dict[str, Any]]()
        while {name for name, _ in self.seen[start:]} != set(FRONTENDS):
            assert len(answers) < 6, self.seen[start:]
            answers.append(self.read(book))
        return answers

    def wrote(self, book: int) -> None:
        for books in self.cached.values():
            books.discard(book)


def info(project: Project, book: int) -> tuple[dict[str, Any], str | None]:
    """The book and whether the cache had it."""
    reply = http(project, "GET", f"/bazar/info/{book}")
    assert reply.code == 200, reply
    return reply.body, reply.headers.get(CACHE)


def test_walkthrough(project: Project) -> None:
    """Through HAProxy: the seven books; reads answered by both front ends, each a miss then a
    hit; a purchase and a price change, each seen by the next read at either front end (a miss:
    the write dropped both cached copies); every replica's data alike."""
    poll("both front ends leased, every replica healthy, data alike", lambda: agreed(project), deadline=90)
    books = http(project, "GET", "/bazar/info/all")
    assert books.code == 200 and [b["id"] for b in books.body] == list(range(7)), books

    caches = Caches(project)
    first = caches.read_at_both(0) + caches.read_at_both(0)
    assert all(book == first[0] for book in first), first
    assert {name for name, cache in caches.seen if cache == "hit"} == set(FRONTENDS), caches.seen

    before = caches.read_at_both(2)[0]
    order = buy(project, 2)
    caches.wrote(2)
    assert order["title"] == before["title"]
    assert caches.read_at_both(2) == [{**before, "quantity": before["quantity"] - 1}] * 2
    order_again = http(project, "GET", f"/bazar/orders/{order['order_id']}")
    assert order_again.code == 200 and order_again.body["book_id"] == 2, order_again

    book = caches.read_at_both(1)[0]
    new_price = round(book["price"] + 7.25, 2)
    set_price(project, 1, new_price)
    caches.wrote(1)
    assert caches.read_at_both(1) == [{**book, "price": new_price}] * 2  # misses
    assert caches.read_at_both(1) == [{**book, "price": new_price}] * 2  # hits

    replicas = agreed(project)
    assert all(replicas[name]["last_seq"] >= 2 for name in CATALOGS), replicas  # purchase, price
    assert all(replicas[name]["last_seq"] >= 1 for name in ORDERS), replicas


def test_containers_are_confined_and_keep_the_secret(project: Project) -> None:
    """What compose.yaml asks of every container, as the engine applied it: the image's
    unprivileged uid (HAProxy's its own), a read-only root, no capabilities, no new privileges,
    nothing published but HAProxy's port on loopback, no secret in HAProxy's container; the
    secret file 0600 and in no log."""
    for service in ("haproxy", *FRONTENDS, *CATALOGS, *ORDERS):
        state = project.inspect(service)
        host = state["HostConfig"]
        assert state["Config"]["User"] == ("10002:10002" if service == "haproxy" else "10001:10001"), service
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], service
        assert "no-new-privileges:true" in host["SecurityOpt"], service
        published = {port: bound for port, bound in state["NetworkSettings"]["Ports"].items() if bound}
        expected = {"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(project.port)}]}
        assert published == (expected if service == "haproxy" else {}), (service, published)
    mounts = [m["Destination"] for m in project.inspect("haproxy")["Mounts"]]
    assert mounts == ["/etc/bazar/haproxy.cfg"], mounts
    frontend = project.container("frontend-1")
    for container in (frontend, project.container("haproxy")):
        refused = subprocess.run([project.docker, "exec", container, "touch", "/etc/x"], capture_output=True)
        assert refused.returncode != 0 and b"Read-only file system" in refused.stderr, refused
    mode = run([project.docker, "exec", frontend, "stat", "-c", "%a %u", "/var/lib/bazar-secret/secret"])
    assert mode.split() == ["600", "10001"], mode
    secret = run([project.docker, "exec", frontend, "cat", "/var/lib/bazar-secret/secret"]).strip()
    assert len(secret) >= 32
    assert secret not in project("logs", "--no-color")


def answered_by_both(project: Project) -> None:
    """Four reads through HAProxy, each answered 200, by both front ends between them."""
    names = set()
    for _ in range(4):
        reply = http(project, "GET", "/bazar/info/3")
        assert reply.code == 200, reply
        names.add(reply.headers[SERVED_BY])
    assert names == set(FRONTENDS), names


def test_haproxy_routes_around_a_killed_front_end(project: Project) -> None:
    """`docker kill` on frontend-2 under reads through HAProxy: every one succeeds, from the kill
    until HAProxy logs frontend-2 DOWN (two failed health checks, 1 s apart) and after, when
    frontend-1 answers them all; a purchase goes through (waiting out frontend-2's cache lease,
    at most 2 s). Started again, frontend-2 is put back."""
    poll("HAProxy sends to both front ends", lambda: answered_by_both(project))
    run([project.docker, "kill", project.container("frontend-2")])
    served: list[str] = []
    end = time.monotonic() + 30
    while "Server frontends/frontend-2 is DOWN" not in project("logs", "--no-color", "haproxy"):
        assert time.monotonic() < end, f"HAProxy did not take frontend-2 out; served by {served}"
        for _ in range(3):
            reply = http(project, "GET", "/bazar/info/3")
            assert reply.code == 200, (served, reply)
            served.append(reply.headers[SERVED_BY])
    for _ in range(5):
        reply = http(project, "GET", "/bazar/info/3")
        assert reply.code == 200 and reply.headers[SERVED_BY] == "frontend-1", reply
    buy(project, 3)

    project("start", "frontend-2")
    poll("HAProxy sends to frontend-2 again", lambda: answered_by_both(project))
    poll("frontend-2 leased again", lambda: agreed(project))


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

"""Three front ends, real processes: concurrent writers and readers through all of them, and
no read older than an acknowledged write (``tests.history``), whichever front end served it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool

from bazar.launch import Cluster, holds_its_leases
from bazar.leases import LEASE_TERM
from tests.history import History
from tests.integration.api import Reply, eventually, request, sleep
from tests.integration.cluster import start_cluster

pytestmark = pytest.mark.integration

FRONTENDS = ("frontend-1", "frontend-2", "frontend-3")


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("frontends"), frontends=3)
    yield running
    running.stop()


async def leases_held(http: HTTPClient, cluster: Cluster) -> dict[str, Any] | None:
    """``/bazar/cluster`` at the last front end, once every front end holds its leases (that
    each sees every replica up, ``bazar.launch`` waited for)."""
    reply = await request(http, "GET", cluster.url(FRONTENDS[-1]) + "/bazar/cluster")
    frontends = reply.body.get("frontends", []) if reply.code == 200 else []
    held = [f for f in frontends if holds_its_leases(f)]
    return reply.body if len(held) == len(FRONTENDS) else None


@pytest_twisted.ensureDeferred
async def test_no_stale_read_through_three_frontends(http: HTTPClient, three: Cluster) -> None:
    """Two writers (a book each, each write through the next front end in turn) and six
    readers (two per front end, both books): no read that began after a write's ack shows
    an older price, cache hit or miss, at any front end."""
    status = await eventually(lambda: leases_held(http, three), 20, "every front end's leases")
    assert [f["name"] for f in status["frontends"]] == ["frontend-3", "frontend-1", "frontend-2"]

    books, writes, deadline = (2, 5), 15, time.monotonic() + 60
    history = History()
    writing = True

    async def write(book: int, price: int, frontend: str) -> None:
        started = History.now()
        url = three.url(frontend) + f"/bazar/update_price/{book}"
        reply = await request(http, "PUT", url, body={"price": price})
        assert (reply.code, reply.header("X-Bazar-Frontend")) == (200, frontend), reply
        history.write(f"price/{book}", price, started)

    async def writer(book: int) -> None:
        for price in range(1, writes + 1):
            await write(book, price, FRONTENDS[price % len(FRONTENDS)])

    async def reader(frontend: str) -> None:
        while writing and time.monotonic() < deadline:
            for book in books:
                started = History.now()
                reply: Reply = await request(http, "GET", three.url(frontend) + f"/bazar/info/{book}")
                assert (reply.code, reply.header("X-Bazar-Frontend")) == (200, frontend), reply
                note = f"{frontend} {reply.header('X-Bazar-Cache')}"
                history.read(f"price/{book}", reply.body["price"], started, note=note)

    for book in books:
        await write(book, 0, FRONTENDS[0])  # acknowledged before any reader starts
    reading = [defer.ensureDeferred(reader(f)) for f in FRONTENDS for _ in range(2)]
    try:
        await defer.gatherResults([defer.ensureDeferred(writer(book)) for book in books], consumeErrors=True)
    finally:
        writing = False
        await defer.gatherResults(reading, consumeErrors=True)

    history.assert_no_stale_reads()
    # Not vacuous: every front end served hits and misses after the first acknowledged write.
    later = history.reads_after(1)
    for frontend in FRONTENDS:
        seen = {r.note.split()[1] for r in later if r.note.startswith(frontend + " ")}
        assert seen == {"hit", "miss"}, (frontend, seen)
    for frontend in FRONTENDS:
        for book in books:
            reply = await request(http, "GET", three.url(frontend) + f"/bazar/info/{book}")
            assert reply.body["price"] == writes, (frontend, reply)


def test_config_names_three_frontends(three: Cluster) -> None:
    assert three.layout.frontends == FRONTENDS
    assert Path(three.layout.config).read_text().count("[[frontend]]") == 3


@pytest.fixture
def sharing(tmp_path: Path) -> Iterator[Cluster]:
    """Three front ends that also share one public port."""
    running = start_cluster(tmp_path, frontends=3, shared_port=True)
    yield running
    running.stop()


async def names_on_the_shared_port(cluster: Cluster, count: int) -> list[str | None]:
    """``count`` reads at the shared port, each on a new connection; which front end answered
    each (a read that fails: None)."""
    from twisted.internet import reactor

    pool = HTTPConnectionPool(reactor, persistent=False)
    fresh = HTTPClient(Agent(reactor, pool=pool))
    names: list[str | None] = []
    try:
        for _ in range(count):
            try:
                reply = await request(fresh, "GET", cluster.layout.public_url + "/bazar/info/1")
            except Exception:
                names.append(None)
                continue
            names.append(reply.header("X-Bazar-Frontend") if reply.code == 200 else None)
    finally:
        await pool.closeCachedConnections()
    return names


@pytest_twisted.ensureDeferred
async def test_one_public_port_spreads_over_the_frontends_and_outlives_one(sharing: Cluster) -> None:
    """The kernel spreads new connections at the shared port over the three front ends; with
    one of them killed the port still answers, and the killed one is restarted."""
    names = await names_on_the_shared_port(sharing, 60)
    assert None not in names, names
    assert len(set(names)) >= 2, names  # all 60 at one of three: about 3 in 10^28

    pid = sharing.pid_of("frontend-2")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    async def answered_without_it() -> bool:
        return sharing.pid_of("frontend-2") != pid

    await eventually(answered_without_it, 10, "frontend-2 gone")
    names = await names_on_the_shared_port(sharing, 30)
    assert None not in names, names
    assert set(names) <= set(FRONTENDS), names

    async def restarted() -> bool:
        new = sharing.pid_of("frontend-2")
        return new is not None and new != pid

    await eventually(restarted, 20, "frontend-2 restarted")


@pytest.fixture
def trio_of_frontends(tmp_path: Path) -> Iterator[Cluster]:
    running = start_cluster(tmp_path, frontends=3)
    yield running
    running.stop()


@pytest_twisted.ensureDeferred
async def test_a_stopped_frontend_delays_writes_at_most_a_lease_and_serves_nothing_stale(
    http: HTTPClient, trio_of_frontends: Cluster
) -> None:
    """frontend-2 is SIGSTOPped for 5 s while prices are written through frontend-1: no
    write waits longer than the lease term (plus 0.5 s); after SIGCONT its reads show the
    latest acknowledged price, though it had the old one cached."""
    cluster, book = trio_of_frontends, 3
    await eventually(lambda: leases_held(http, cluster), 20, "every front end's leases")
    stopped = cluster.url("frontend-2") + f"/bazar/info/{book}"

    async def cached() -> bool:
        return (await request(http, "GET", stopped)).header("X-Bazar-Cache") == "hit"

    await eventually(cached, 10, f"a hit for book {book} at frontend-2")

    pid = cluster.pid_of("frontend-2")
    assert pid is not None
    price, waits = 0, []
    os.kill(pid, signal.SIGSTOP)
    try:
        until = time.monotonic() + 5
        while time.monotonic() < until:
            price += 1
            started = time.monotonic()
            url = cluster.url("frontend-1") + f"/bazar/update_price/{book}"
            reply = await request(http, "PUT", url, body={"price": price})
            waits.append(time.monotonic() - started)
            assert reply.code == 200, reply
    finally:
        os.kill(pid, signal.SIGCONT)
    assert max(waits) <= LEASE_TERM + 0.5, waits
    assert len(waits) >= 3, waits
    reads = [await request(http, "GET", stopped) for _ in range(20)]
    assert [r.body["price"] for r in reads] == [price] * 20, [(r.body, r.headers) for r in reads]


@pytest_twisted.ensureDeferred
async def test_a_killed_frontend_is_restarted_and_nothing_is_lost_or_stale(
    http: HTTPClient, trio_of_frontends: Cluster
) -> None:
    """Under reads and price updates, frontend-2 is SIGKILLed: the others go on serving, it is
    restarted, no acknowledged write is lost, and no read anywhere (its own after the
    restart included) is older than an acknowledged write."""
    cluster, book = trio_of_frontends, 6
    await eventually(lambda: leases_held(http, cluster), 20, "every front end's leases")
    history, writing, acknowledged = History(), True, 0

    async def writer() -> None:
        nonlocal acknowledged
        price = 0
        while writing:
            price += 1
            started = History.now()
            url = cluster.url(("frontend-1", "frontend-3")[price % 2]) + f"/bazar/update_price/{book}"
            reply = await request(http, "PUT", url, body={"price": price})
            assert reply.code == 200, reply
            history.write("price", price, started)
            acknowledged = price

    async def reader(frontend: str) -> None:
        while writing:
            started = History.now()
            try:
                reply = await request(http, "GET", cluster.url(frontend) + f"/bazar/info/{book}")
            except Exception:  # the killed one, until it is back
                await sleep(0.05)
                continue
            assert reply.code == 200, reply
            history.read("price", reply.body["price"], started, note=frontend)

    started = History.now()
    first = await request(
        http, "PUT", cluster.url("frontend-1") + f"/bazar/update_price/{book}", body={"price": 0}
    )
    assert first.code == 200, first
    history.write("price", 0, started)  # acknowledged before any reader starts
    running = [defer.ensureDeferred(writer())]
    running += [defer.ensureDeferred(reader(f)) for f in FRONTENDS for _ in range(2)]
    try:
        await sleep(1)
        pid = cluster.pid_of("frontend-2")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        async def restarted() -> bool:
            new = cluster.pid_of("frontend-2")
            return new is not None and new != pid

        await eventually(restarted, 30, "frontend-2 restarted")
        back = History.now()
        await sleep(3)
    finally:
        writing = False
        await defer.gatherResults(running, consumeErrors=True)

    history.assert_no_stale_reads()
    after = [r for r in history.of("read") if r.note == "frontend-2" and r.start > back]
    assert after, "frontend-2 served no read after its restart"
    for frontend in FRONTENDS:
        reply = await request(http, "GET", cluster.url(frontend) + f"/bazar/info/{book}")
        assert reply.body["price"] == acknowledged, (frontend, reply)

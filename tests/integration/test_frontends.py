"""Three front ends, real processes: concurrent writers and readers through all of them, and
no read older than an acknowledged write (``tests.history``), whichever front end served it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import defer

from bazar.launch import Cluster
from tests.history import History
from tests.integration.api import Reply, eventually, request
from tests.integration.cluster import start_cluster

pytestmark = pytest.mark.integration

FRONTENDS = ("frontend-1", "frontend-2", "frontend-3")


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("frontends"), frontends=3)
    yield running
    running.stop()


async def leases_held(http: HTTPClient, cluster: Cluster) -> dict[str, Any] | None:
    """``/bazar/cluster`` at the last front end, once every front end holds its leases."""
    reply = await request(http, "GET", cluster.url(FRONTENDS[-1]) + "/bazar/cluster")
    frontends = reply.body.get("frontends", []) if reply.code == 200 else []
    held = [f for f in frontends if f.get("healthy") and all(x["valid"] for x in f["leases"].values())]
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

    stale = history.stale_reads()
    assert not stale, f"{len(stale)} reads older than an acknowledged write: {history.describe(stale)}"
    # Not vacuous: every front end served hits and misses after the first acknowledged write.
    first_ack = min(w.end for w in history.of("write") if w.value == 1)
    later = [r for r in history.of("read") if r.start > first_ack]
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

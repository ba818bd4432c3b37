"""Asynchronous HTTP for the integration tests: treq on the test's one connection pool.

``Api`` wraps the ``http`` fixture's client with what the tests keep asking: the front
end's public endpoints, a replica's internal ones (with the cluster secret), and polling
with a deadline without blocking the reactor.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import treq
from treq.client import HTTPClient
from twisted.internet import defer, error, task
from twisted.web.client import ResponseFailed

from bazar.catalog.store import SEED_BOOKS, seed_books
from bazar.launch import CATALOGS, ORDERS, Cluster
from bazar.protocol import SECRET_HEADER
from tests.invariants import stock_problems

T = TypeVar("T")

REQUEST_TIMEOUT = 20.0
TRANSPORT_ERRORS = (
    error.ConnectError,
    error.ConnectionClosed,
    ResponseFailed,
    defer.CancelledError,
    error.TimeoutError,
)


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@dataclass(frozen=True)
class Reply:
    code: int
    body: Any  # the decoded JSON (None for an empty body)
    headers: dict[str, str]  # lower-case names, first value

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


async def request(
    http: HTTPClient,
    method: str,
    url: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT,
    raw: bool = False,
    allowed: Callable[[str], bool] = lambda url: url.startswith("http://127.0.0.1:"),
) -> Reply:
    """JSON ``body`` in, ``Reply`` out (its body decoded JSON, or the text with ``raw``), with
    a deadline. Only to ``allowed`` addresses: loopback, unless a test's own hosts are given."""
    assert allowed(url), url
    data = None
    all_headers: dict[bytes | str, bytes | str] = {k: v for k, v in (headers or {}).items()}
    if body is not None:
        data = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    d = http.request(method, url, data=data, headers=all_headers)
    d.addCallback(lambda response: treq.content(response).addCallback(lambda content: (response, content)))
    d.addTimeout(timeout, _reactor())
    response, content = await d
    decoded = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
    if raw:
        return Reply(response.code, content.decode(), decoded)
    return Reply(response.code, json.loads(content) if content else None, decoded)


async def sleep(seconds: float) -> None:
    await task.deferLater(_reactor(), seconds, lambda: None)


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Await ``check()`` until it gives something truthy (transport errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
        except TRANSPORT_ERRORS as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        await sleep(interval)


class Api:
    """The cluster as the tests see it."""

    def __init__(self, http: HTTPClient, cluster: Cluster) -> None:
        self.http = http
        self.cluster = cluster

    # -- the front end -------------------------------------------------------------------

    async def get(self, path: str) -> Reply:
        return await request(self.http, "GET", self.cluster.frontend + path)

    async def info(self, book: int) -> Reply:
        reply = await self.get(f"/bazar/info/{book}")
        assert reply.code == 200, reply
        return reply

    async def put(self, path: str, body: Any) -> Reply:
        return await request(self.http, "PUT", self.cluster.frontend + path, body=body)

    async def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
        return await request(
            self.http, "POST", self.cluster.frontend + path, body=body, headers=headers or {}
        )

    async def set_price(self, book: int, price: float) -> dict[str, Any]:
        reply = await self.put(f"/bazar/update_price/{book}", {"price": price})
        assert reply.code == 200, reply
        return reply.body

    async def set_stock(self, book: int, quantity: int) -> dict[str, Any]:
        reply = await self.put(f"/bazar/update_quantity/{book}", {"quantity": quantity})
        assert reply.code == 200, reply
        return reply.body

    async def status(self) -> dict[str, Any]:
        reply = await self.get("/bazar/cluster")
        assert reply.code == 200, reply
        return reply.body

    # -- the replicas, directly ------------------------------------------------------

    async def internal(self, replica: str, path: str, *, secret: str | None = "cluster") -> Reply:
        """GET ``path`` on one replica; with the cluster's secret unless told otherwise."""
        if secret == "cluster":
            secret = self.cluster.secret
        headers = {SECRET_HEADER: secret} if secret is not None else {}
        return await request(self.http, "GET", self.cluster.url(replica) + path, headers=headers)

    async def call(self, method: str, url: str, **kwargs: Any) -> Reply:
        """Any request (``request``'s arguments), to loopback."""
        return await request(self.http, method, url, **kwargs)

    async def replica_metrics(self, replica: str) -> str:
        """``replica``'s /metrics, the Prometheus text."""
        headers = {SECRET_HEADER: self.cluster.secret}
        reply = await self.call("GET", self.cluster.url(replica) + "/metrics", headers=headers, raw=True)
        assert reply.code == 200, (replica, reply)
        return str(reply.body)

    async def internal_write(self, replica: str, path: str, body: Any) -> Reply:
        """PUT ``body`` to ``path`` on one replica, with the cluster's secret."""
        headers = {SECRET_HEADER: self.cluster.secret}
        return await request(self.http, "PUT", self.cluster.url(replica) + path, body=body, headers=headers)

    async def replica_json(self, replica: str, path: str) -> Any:
        reply = await self.internal(replica, path)
        assert reply.code == 200, (replica, path, reply)
        assert reply.header("X-Bazar-Replica") == replica, reply
        return reply.body

    async def log(self, replica: str) -> list[tuple[int, dict[str, Any]]]:
        """Replica ``replica``'s whole log, a page at a time."""
        entries: list[tuple[int, dict[str, Any]]] = []
        while True:
            after = entries[-1][0] if entries else 0
            page = (await self.replica_json(replica, f"/internal/log?after={after}&limit=1000"))["entries"]
            entries += [(seq, entry) for seq, entry in page]
            if len(page) < 1000:
                return entries

    async def stock_problems(self, books: int = len(SEED_BOOKS)) -> list[str]:
        """What breaks the conservation of stock (``tests.invariants``), on each catalog replica
        with each order replica's orders; the cluster should be quiet (no write under way)."""
        initial = {book[0]: book[4] for book in seed_books(books)}
        orders = {name: await self.log(name) for name in ORDERS}
        problems = []
        for catalog in CATALOGS:
            log = await self.log(catalog)
            listed = await self.replica_json(catalog, f"/catalog/books?limit={books}")
            current = {book["id"]: book["quantity"] for book in listed}
            for name, order_log in orders.items():
                found = stock_problems(initial, log, current, order_log)
                problems += [f"{catalog} with {name}'s orders: {problem}" for problem in found]
        return problems

    async def on_each(self, replicas: tuple[str, ...], path: str) -> dict[str, Any]:
        """``path`` read directly from each of ``replicas``, in parallel."""
        results = await defer.gatherResults(
            [defer.ensureDeferred(self.replica_json(r, path)) for r in replicas], consumeErrors=True
        )
        return dict(zip(replicas, results, strict=True))


def recorded(purchase: dict[str, Any]) -> dict[str, Any]:
    """A purchase's answer as the order replicas record it: without the message and the key."""
    return {k: v for k, v in purchase.items() if k not in ("message", "idempotency_key")}


def assert_replicas_agree(status: dict[str, Any]) -> None:
    """All replicas healthy, and per role one digest and one last_seq."""
    replicas = status["replicas"]
    assert len(replicas) == 6, replicas
    for role in ("catalog", "order"):
        mine = [r for r in replicas if r["role"] == role]
        assert len(mine) == 3, replicas
        assert all(r["healthy"] for r in mine), mine
        assert len({r["digest"] for r in mine}) == 1, f"{role} digests differ: {mine}"
        assert len({r["last_seq"] for r in mine}) == 1, f"{role} last_seq differ: {mine}"

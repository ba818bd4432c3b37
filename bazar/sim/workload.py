"""Clients that use the store as real ones do, and the history of what they saw.

Each client is a host of its own on the network, calling the front end's public API: a
random mix of reads (a book, a topic, the listing), price and stock updates, and purchases
with and without an ``Idempotency-Key``, each with a deadline. A keyed purchase that failed
or timed out is retried with the same key (a few times); nothing else is retried. Every
price written is new (no two writes write the same price), so a price read names the write
it saw. The history records each operation's start and end in simulated time.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from twisted.python.failure import Failure

from bazar.protocol import IDEMPOTENCY_HEADER
from bazar.sim.callers import public_call
from bazar.sim.cluster import FRONTEND, SimCluster
from bazar.sim.network import Host
from bazar.sim.serving import PublicAnswer

REQUEST_TIMEOUT = 3.0  # seconds a client waits for an answer
RETRIES = 3  # more tries of a keyed purchase, with its key
RETRY_AFTER = 0.5
THINK = 0.4  # at most, seconds between a client's operations
TOPICS = ("distributed systems", "graduate school")

# (operation, weight)
MIX = (
    ("read", 30),
    ("search", 5),
    ("listing", 5),
    ("price", 20),
    ("stock", 10),
    ("buy_keyed", 15),
    ("buy", 15),
)


@dataclass
class Op:
    """One operation (all tries of a keyed purchase together)."""

    client: str
    kind: str
    book: int | None
    start: float
    end: float | None = None
    ok: bool | None = None  # True: acknowledged; False: refused (4xx: nothing happened); None: unknown
    value: Any = None  # the price written; the order of a purchase
    key: str | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)  # the books a read returned
    answers: list[str] = field(default_factory=list)  # each try's outcome, for the trace

    def describe(self) -> str:
        what = f"{self.kind} book {self.book}" if self.book is not None else self.kind
        value = f" {self.value!r}" if self.value is not None and self.kind == "price" else ""
        end = f"{self.end:.3f}" if self.end is not None else "never"
        return f"{self.client} {what}{value} [{self.start:.3f}-{end}] {', '.join(self.answers)}"


class Workload:
    def __init__(self, cluster: SimCluster, rng: random.Random, clients: int = 3) -> None:
        self.cluster = cluster
        self.rng = rng
        self.ops: list[Op] = []
        self.stop_at = 0.0
        self._prices = 0
        self._keys = 0
        self.clients = [cluster.network.host(f"client-{i}") for i in range(1, clients + 1)]
        for client in self.clients:
            client.start()

    def run_until(self, stop_at: float) -> None:
        """Each client starts operations until ``stop_at`` (one at a time)."""
        self.stop_at = stop_at
        for client in self.clients:
            self._next(client)

    def _next(self, client: Host) -> None:
        when = self.cluster.sim.now + self.rng.uniform(0, THINK)
        if when < self.stop_at:
            client.schedule(when, self._begin, client)

    def _call(
        self, client: Host, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        return public_call(
            self.cluster.network, client, FRONTEND, method, path, body, headers or {}, REQUEST_TIMEOUT
        )

    def _begin(self, client: Host) -> None:
        kind = self.rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        book = self.rng.randrange(self.cluster.config.books)
        op = Op(client.name, kind, book if kind not in ("search", "listing") else None, self.cluster.sim.now)
        self.ops.append(op)
        if kind == "read":
            d = self._call(client, "GET", f"/bazar/info/{book}")
        elif kind == "search":
            d = self._call(client, "GET", f"/bazar/search/{self.rng.choice(TOPICS)}")
        elif kind == "listing":
            d = self._call(client, "GET", "/bazar/info/all?limit=100")
        elif kind == "price":
            self._prices += 1
            op.value = float(1000 + self._prices)  # never written before: a read names its write
            d = self._call(client, "PUT", f"/bazar/update_price/{book}", {"price": op.value})
        elif kind == "stock":
            op.value = self.rng.choice([1, 2, 5, -1])
            d = self._call(client, "PUT", f"/bazar/update_quantity/{book}", {"delta": op.value})
        elif kind == "buy_keyed":
            self._keys += 1
            op.key = f"{client.name}-key-{self._keys}"
            self._buy(client, op, RETRIES)
            return
        else:
            d = self._call(client, "POST", f"/bazar/purchase/{book}", {"quantity": 1})
        d.addBoth(self._done, client, op)

    def _buy(self, client: Host, op: Op, tries_left: int) -> None:
        assert op.key is not None and op.book is not None
        d = self._call(
            client, "POST", f"/bazar/purchase/{op.book}", {"quantity": 1}, {IDEMPOTENCY_HEADER: op.key}
        )

        def answered(result: Any) -> None:
            retry = (
                (isinstance(result, Failure) or result.code >= 500)
                and tries_left > 0
                and self.cluster.sim.now + RETRY_AFTER < self.stop_at + 5
            )
            if not retry:
                self._done(result, client, op)
                return
            op.answers.append(_outcome(result))
            client.schedule(self.cluster.sim.now + RETRY_AFTER, self._buy, client, op, tries_left - 1)

        d.addBoth(answered)

    def _done(self, result: PublicAnswer | Failure, client: Host, op: Op) -> None:
        op.end = self.cluster.sim.now
        op.answers.append(_outcome(result))
        if isinstance(result, Failure):
            op.ok = None
        elif result.code < 300:
            op.ok = True
            body = result.json()
            if op.kind in ("read", "price", "stock"):
                op.seen = [body] if op.kind == "read" else []
            elif op.kind in ("search", "listing"):
                op.seen = list(body)
            elif op.kind.startswith("buy"):
                op.value = body
                op.key = op.key or result.headers.get(IDEMPOTENCY_HEADER.lower())
        elif result.code < 500:
            op.ok = False  # refused: nothing happened
        else:
            op.ok = None
        self._next(client)


def _outcome(result: Any) -> str:
    if isinstance(result, Failure):
        return type(result.value).__name__
    try:
        message = json.loads(result.body).get("error", {}).get("message", "")
    except (ValueError, AttributeError):
        message = ""
    return f"{result.code}" + (f" ({message[:60]})" if message else "")

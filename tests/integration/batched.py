"""Purchases concurrent enough to batch, and the checks that a sequencer's fault mid-batch loses
or doubles none of them.

``Buyers`` run ``BUYERS`` keyed purchases at a time through the front end, so that the order
sequencer's takes (``bazar.order.takes``) and both sequencers' transactions
(``bazar.group_commit``) hold several each; ``batches_formed`` reads the batch sizes a
sequencer's ``/metrics`` shows, to assert that they did. A purchase answered 503 or not at
all is in doubt; once the cluster is whole again, ``settle_in_doubt`` retries each with its
key, as a client would, and ``each_order_once`` checks that every acknowledged order is on
every order replica exactly once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from bazar.launch import ORDERS
from tests.integration.api import TRANSPORT_ERRORS, Api, Reply, eventually, recorded, sleep

BUYERS = 20  # purchases under way at once
MAX_PURCHASES = 4000  # in all, whatever happens: the load is bounded in count as well as time
LOAD_SECONDS = 60.0
RETRY_ATTEMPTS = 10  # a purchase in doubt, retried with its key once the faults are over
RESUME_TIMEOUT = 20.0  # from a fault to purchases being acknowledged again
FAULT_PAUSE = 0.05  # a buyer's pause after a purchase that failed, so that a fault is not a spin


@dataclass
class Buyers:
    """What the buyers did: every key sent, its order once acknowledged, the keys in doubt."""

    book: int
    started: float = field(default_factory=time.monotonic)
    stop: bool = False
    sent: int = 0
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # by idempotency key
    in_doubt: set[str] = field(default_factory=set)  # answered 503 or not at all
    sold_out: set[str] = field(default_factory=set)  # answered 409: not enough stock
    refused: list[str] = field(default_factory=list)  # any other answer: a failure of the test

    def running(self) -> bool:
        return not self.stop and self.sent < MAX_PURCHASES and time.monotonic() - self.started < LOAD_SECONDS

    async def buyer(self, api: Api, number: int) -> None:
        """One keyed purchase after another, each sent once; 503s and lost answers are left
        for ``settle_in_doubt`` (a retry at once would mostly find the fault still there)."""
        count = 0
        while self.running():
            count += 1
            self.sent += 1
            key = f"batched-{number}-{count}"
            reply = await buy(api, self.book, key)
            self.record(key, reply)
            if reply is None or reply.code != 200:
                await sleep(FAULT_PAUSE)

    def record(self, key: str, reply: Reply | None) -> None:
        if reply is not None and reply.code == 200:
            assert reply.body["idempotency_key"] == key, reply
            self.orders[key] = recorded(reply.body)
            self.in_doubt.discard(key)
        elif reply is None or reply.code == 503:
            self.in_doubt.add(key)
        elif reply.code == 409 and "not enough stock" in reply.body["error"]["message"]:
            self.sold_out.add(key)
            self.in_doubt.discard(key)
        else:
            self.refused.append(f"{key}: {reply.code} {reply.body}")

    def start(self, api: Api) -> list[defer.Deferred[None]]:
        return [defer.ensureDeferred(self.buyer(api, n)) for n in range(BUYERS)]

    async def acknowledged_again(self, what: str) -> None:
        """Wait until BUYERS more purchases are acknowledged: the fault is over for buyers."""
        before = len(self.orders)
        await eventually(
            lambda: defer.succeed(len(self.orders) >= before + BUYERS),
            RESUME_TIMEOUT,
            f"purchases to be acknowledged again after {what}",
        )

    async def settle_in_doubt(self, api: Api) -> None:
        """Retry every purchase in doubt with its key until it is answered 200 (the original
        order if it was recorded, a new one from its take, if that was done, if not) or 409 for
        want of stock, BUYERS
        at a time, so that the retries batch too."""
        keys = sorted(self.in_doubt)

        async def retrier(number: int) -> None:
            for key in keys[number::BUYERS]:
                for _ in range(RETRY_ATTEMPTS):
                    reply = await buy(api, self.book, key)
                    if reply is not None and reply.code != 503:
                        break
                    await sleep(FAULT_PAUSE)
                self.record(key, reply)

        retriers = [defer.ensureDeferred(retrier(n)) for n in range(BUYERS)]
        await defer.gatherResults(retriers, consumeErrors=True)
        left = sorted(self.in_doubt)
        assert not left, f"{len(left)} purchases still in doubt: {left[:5]}"


async def buy(api: Api, book: int, key: str) -> Reply | None:
    """One purchase of ``book`` with ``key``; None if no answer came (a lost connection)."""
    try:
        return await api.post(f"/bazar/purchase/{book}", headers={"Idempotency-Key": key})
    except TRANSPORT_ERRORS:
        return None


async def sequencer_of(api: Api, members: tuple[str, ...]) -> str:
    """The replica of ``members`` that sequences their role now (the newest epoch's claim),
    asked of the replicas themselves."""

    async def claimed() -> str | None:
        claims = []
        for name in members:
            try:
                status = (await api.internal(name, "/internal/status")).body
            except TRANSPORT_ERRORS:
                continue
            if status.get("sequencer") == name:
                claims.append((int(status["epoch"]), name))
        return max(claims)[1] if claims else None

    return await eventually(claimed, RESUME_TIMEOUT, f"a sequencer among {members}", interval=0.05)


def histogram(text: str, name: str) -> tuple[float, float]:
    """The ``_count`` and ``_sum`` of histogram ``name`` in a Prometheus exposition."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in (f"{name}_count", f"{name}_sum"):
            values[key.rpartition("_")[2]] = float(value)
    return values["count"], values["sum"]


async def batches_formed(api: Api, replica: str, name: str) -> tuple[float, float]:
    """(batches, items) of histogram ``name`` on ``replica``'s /metrics, once its batches held
    more than one item each on average: purchases are batching there."""

    async def batching() -> tuple[float, float] | None:
        text = await api.replica_metrics(replica)
        count, total = histogram(text, name)
        return (count, total) if count and total > count else None

    # Polled often: a test that faults the replica once they form wants purchases still under way.
    what = f"batches of more than one {name} on {replica}"
    return await eventually(batching, RESUME_TIMEOUT, what, interval=0.02)


async def each_order_once(api: Api, buyers: Buyers) -> int:
    """Every acknowledged order, as acknowledged, exactly once on every order replica (by id and
    by key), and no order of this book that no buyer was told of; the orders checked."""
    for name in ORDERS:
        orders = [o for o in (await api.replica_json(name, "/order/orders")) if o["book_id"] == buyers.book]
        ids = [o["order_id"] for o in orders]
        assert len(ids) == len(set(ids)), f"{name} has an order twice"
        keys = [entry["idempotency"]["key"] for _, entry in await api.log(name) if entry.get("idempotency")]
        assert len(keys) == len(set(keys)), f"{name} recorded a key twice"
        by_id = {o["order_id"]: o for o in orders}
        missing = [k for k, o in buyers.orders.items() if by_id.get(o["order_id"]) != o]
        assert not missing, f"{name} lacks acknowledged orders {missing[:5]}"
        assert len(orders) == len(buyers.orders), (name, len(orders), len(buyers.orders))
    return len(buyers.orders)

"""Replicas killed under load: no read fails or goes back in time, and the killed ones come back.

A real cluster serves a bounded read load (three readers) and two writers (price updates,
purchases) while the test SIGKILLs a catalog follower (catalog-2) and then an order
follower (order-3). The cluster's process monitor restarts each; the sequencer's heartbeats
bring it back in sync from its log; the front end's probe reads from it again.

Measured and printed, not asserted on (the machine decides them): how long each killed
replica took to be healthy again, how many reads and writes ran, how many orders were checked.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import defer

from bazar.launch import CATALOGS, ORDERS, Cluster
from bazar.order.orphans import SCAN_INTERVAL
from tests.history import History
from tests.integration.api import TRANSPORT_ERRORS, Api, Reply, eventually, recorded, sleep
from tests.integration.batched import Buyers, batches_formed, each_order_once, sequencer_of

pytestmark = pytest.mark.integration

READERS = 3
MAX_READS = 2000
LOAD_SECONDS = 20.0  # the load stops by then, whatever happened
# Each reader's and writer's pause between requests: the load's rate, chosen so that the
# reads last through both kills and recoveries (~10 s) without exceeding MAX_READS.
READ_PAUSE = 0.012
WRITE_PAUSE = 0.02
RECOVERY_TIMEOUT = 15.0
CONVERGE_TIMEOUT = 10.0
PRICE_BOOK = 1
BUY_BOOK = 6
STOCK = 100_000
VICTIMS = ("catalog-2", "order-3")
PURCHASE_ATTEMPTS = 20
CONSERVED_TIMEOUT = 3 * SCAN_INTERVAL  # a take without its order gets it at the next scan


@dataclass
class Outage:
    victim: str
    killed_at: float
    healthy_at: float | None = None
    reads_during: int = 0
    prices_during: int = 0
    purchases_during: int = 0

    @property
    def seconds(self) -> float | None:
        return None if self.healthy_at is None else self.healthy_at - self.killed_at


@dataclass
class Load:
    """What the readers and writers did, as they did it."""

    started: float = field(default_factory=time.monotonic)
    stop: bool = False
    reads: int = 0
    failed_reads: list[str] = field(default_factory=list)
    history: History = field(default_factory=History)  # PRICE_BOOK's writes and reads
    prices: list[float] = field(default_factory=list)  # acknowledged, in order
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)  # acknowledged, by order id
    orders_checked: int = 0
    failed_writes: list[str] = field(default_factory=list)
    outage: Outage | None = None
    seconds: float = LOAD_SECONDS  # the load stops by then, or after max_reads reads
    max_reads: int = MAX_READS

    def running(self) -> bool:
        return (
            not self.stop and self.reads < self.max_reads and time.monotonic() - self.started < self.seconds
        )


async def read(api: Api, load: Load, path: str) -> Reply | None:
    """One read through the front end; a transport error or any status but 200 is a failed read."""
    load.reads += 1
    if load.outage is not None and load.outage.healthy_at is None:
        load.outage.reads_during += 1
    try:
        reply = await api.get(path)
    except TRANSPORT_ERRORS as e:
        load.failed_reads.append(f"{path}: {e!r}")
        return None
    if reply.code != 200:
        load.failed_reads.append(f"{path}: {reply.code} {reply.body}")
        return None
    return reply


async def reader(api: Api, load: Load, number: int) -> None:
    """Every book in turn, then the newest acknowledged order; the price book never older than
    the price acknowledged before the read began."""
    step = number
    while load.running():
        book = step % 8
        step += 1
        if book == 7:
            if not load.orders:
                continue
            order_id = max(load.orders)
            reply = await read(api, load, f"/bazar/orders/{order_id}")
            if reply is not None and reply.body["order_id"] != order_id:
                load.failed_reads.append(f"order {order_id}: {reply.body}")
        else:
            started = History.now()
            reply = await read(api, load, f"/bazar/info/{book}")
            if reply is not None and book == PRICE_BOOK:
                load.history.read("price", reply.body["price"], started)
        await sleep(READ_PAUSE)


def write_failed(load: Load, what: str, reply: Reply) -> None:
    load.failed_writes.append(f"{what}: {reply.code} {reply.body}")


async def price_writer(api: Api, load: Load) -> None:
    """Raises PRICE_BOOK's price by one each time, so a read can tell old from new."""
    price = 1000.0
    while load.running():
        price += 1
        started = History.now()
        reply = await api.put(f"/bazar/update_price/{PRICE_BOOK}", {"price": price})
        if reply.code == 200:
            assert reply.body["price"] == price, reply
            load.history.write("price", price, started)
            load.prices.append(price)
            if load.outage is not None and load.outage.healthy_at is None:
                load.outage.prices_during += 1
        else:
            write_failed(load, f"price {price}", reply)
        await sleep(WRITE_PAUSE)


async def purchase(api: Api, key: str | None) -> Reply:
    """One purchase, retried as a client would while the answer is 503 (the purchase may or may
    not have gone through: its key makes the retry safe). Without a key of its own, the client
    retries with the one the answer gave it."""
    for _ in range(PURCHASE_ATTEMPTS):
        headers = {"Idempotency-Key": key} if key is not None else {}
        reply = await api.post(f"/bazar/purchase/{BUY_BOOK}", headers=headers)
        if reply.code != 503:
            break
        key = reply.header("Idempotency-Key")
        assert key is not None, reply
        await sleep(WRITE_PAUSE)
    return reply


async def buyer(api: Api, load: Load) -> None:
    """Buys one copy at a time, every other one without a key of its own, and reads each
    acknowledged order back through the front end."""
    number = 0
    while load.running():
        number += 1
        reply = await purchase(api, f"failover-buy-{number}" if number % 2 else None)
        if reply.code == 200:
            order = recorded(reply.body)
            load.orders[order["order_id"]] = order
            if load.outage is not None and load.outage.healthy_at is None:
                load.outage.purchases_during += 1
            back = await read(api, load, f"/bazar/orders/{order['order_id']}")
            if back is not None:
                load.orders_checked += 1
                if back.body != order:
                    load.failed_reads.append(f"order {order['order_id']}: {back.body} != {order}")
        else:
            write_failed(load, "purchase", reply)
        await sleep(WRITE_PAUSE)


async def stock_conserved(api: Api) -> None:
    """The stock adds up on every catalog replica with every order replica's orders, and every
    take has its order (``tests.invariants``), once the order sequencer has scanned for takes
    without orders (one whose purchase failed waits for the next scan)."""

    async def conserved() -> bool:
        return not await api.stock_problems()

    try:
        await eventually(conserved, CONSERVED_TIMEOUT, "the stock to add up", interval=0.5)
    except AssertionError:
        problems = await api.stock_problems()
        raise AssertionError(f"{len(problems)} problems: {problems[:5]}") from None


async def healthy(api: Api, name: str) -> bool:
    replicas = (await api.status())["replicas"]
    return any(r["name"] == name and r["healthy"] for r in replicas)


async def kill_and_recover(cluster: Cluster, api: Api, load: Load, victim: str) -> Outage:
    """SIGKILL ``victim`` (by the pid listening on its port); wait until the process monitor has
    restarted it and the front end counts it healthy again."""
    old = cluster.pid_of(victim)
    assert old is not None, f"no process listens as {victim}"
    outage = load.outage = Outage(victim, time.monotonic())
    os.kill(old, signal.SIGKILL)

    async def restarted() -> int | None:
        pid = cluster.pid_of(victim)
        return pid if pid not in (None, old) else None

    await eventually(restarted, RECOVERY_TIMEOUT, f"{victim} to be restarted", interval=0.05)
    await eventually(lambda: healthy(api, victim), RECOVERY_TIMEOUT, f"{victim} to be healthy", interval=0.05)
    outage.healthy_at = time.monotonic()
    return outage


async def agreement(api: Api) -> dict[str, Any]:
    """Wait until every replica agrees; if they do not in time, fail showing how they differ."""
    try:
        return await eventually(lambda: converged(api), CONVERGE_TIMEOUT, "every replica to agree")
    except AssertionError:
        replicas = (await api.status())["replicas"]
        raise AssertionError(f"replicas did not agree in {CONVERGE_TIMEOUT}s: {replicas}") from None


async def converged(api: Api) -> dict[str, Any] | None:
    """The cluster's status once every replica is healthy and each role has one digest and last_seq."""
    status = await api.status()
    replicas = status["replicas"]
    if not all(r["healthy"] for r in replicas):
        return None
    for role in ("catalog", "order"):
        mine = [r for r in replicas if r["role"] == role]
        if len({r["digest"] for r in mine}) != 1 or len({r["last_seq"] for r in mine}) != 1:
            return None
    return status


@pytest_twisted.ensureDeferred
async def test_killed_followers_fail_no_read(
    fresh_cluster: Cluster, http: HTTPClient, capsys: pytest.CaptureFixture[str]
) -> None:
    api = Api(http, fresh_cluster)
    assert (await api.set_stock(BUY_BOOK, STOCK))["quantity"] == STOCK
    load = Load()
    tasks = [defer.ensureDeferred(reader(api, load, n)) for n in range(READERS)]
    tasks += [defer.ensureDeferred(price_writer(api, load)), defer.ensureDeferred(buyer(api, load))]
    outages: list[Outage] = []
    try:
        await eventually(
            lambda: defer.succeed(load.reads >= 50 and load.prices and load.orders),
            10,
            "the load to get going",
        )
        for victim in VICTIMS:
            outages.append(await kill_and_recover(fresh_cluster, api, load, victim))
            load.outage = None
    finally:
        load.stop = True
        results = await defer.DeferredList(tasks, consumeErrors=True)
    errors = [result for ok, result in results if not ok]
    assert not errors, errors[0]
    load_seconds = time.monotonic() - load.started

    status = await agreement(api)
    # Only followers were killed: no election, under this load and the restarts.
    assert {r["epoch"] for r in status["replicas"]} == {1}, status["replicas"]

    # Every acknowledged order is on every order replica, as acknowledged; the stock taken is
    # exactly what the orders record (a purchase answered 503 is recorded once, or not taken).
    on_each = await api.on_each(ORDERS, "/order/orders")
    for name, orders in on_each.items():
        by_id = {o["order_id"]: o for o in orders}
        missing = [i for i in load.orders if by_id.get(i) != load.orders[i]]
        assert not missing, f"{name} lacks acknowledged orders {missing[:5]}"
    await stock_conserved(api)
    prices = await api.on_each(CATALOGS, f"/catalog/books/{PRICE_BOOK}")
    [final_price] = {b["price"] for b in prices.values()}
    assert final_price >= max(load.prices), (prices, max(load.prices))  # an answer lost in a kill: higher

    with capsys.disabled():
        print(f"\n[failover] load {load_seconds:.1f}s: {load.reads} reads, {len(load.failed_reads)} failed")
        print(
            f"[failover] writes acknowledged: {len(load.prices)} price updates, "
            f"{len(load.orders)} purchases; {len(load.failed_writes)} failed; "
            f"{load.orders_checked} orders read back, {len(load.orders)} checked on every order replica"
        )
        for o in outages:
            print(
                f"[failover] {o.victim}: healthy again {o.seconds:.2f}s after SIGKILL; meanwhile "
                f"{o.reads_during} reads, {o.prices_during} price updates, {o.purchases_during} purchases"
            )
        for failure in load.failed_writes:
            print(f"[failover] failed write: {failure}")
        digests = {r["name"]: (r["last_seq"], r["digest"][:12]) for r in status["replicas"]}
        print(f"[failover] final (last_seq, digest): {digests}")

    assert load.failed_reads == [], f"{len(load.failed_reads)} failed reads: {load.failed_reads[:5]}"
    stale = load.history.stale_reads()
    assert stale == [], f"{len(stale)} stale reads: {load.history.describe(stale[:5])}"
    assert load.history.count("read") > 0 and load.history.count("write") > 0
    # Writes went on through each outage. The only writes that may fail are those the front end
    # sent to the victim itself before it knew it was dead (writes are never retried elsewhere).
    for o in outages:
        assert o.reads_during > 0 and o.prices_during > 0 and o.purchases_during > 0, o
    for failure in load.failed_writes:
        assert " 503 " in failure and any(f"{v} is unreachable" in failure for v in VICTIMS), failure
    assert len(load.failed_writes) <= 4 * len(VICTIMS), load.failed_writes


@pytest_twisted.ensureDeferred
async def test_a_killed_sequencer_fails_no_read(
    fresh_cluster: Cluster, http: HTTPClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """While the catalog sequencer is down, reads go on from the followers (nothing newer than
    what they have can be acknowledged without it); once restarted, writes work again."""
    api = Api(http, fresh_cluster)
    price = await api.put(f"/bazar/update_price/{PRICE_BOOK}", {"price": 7.0})
    assert price.code == 200
    load = Load()
    tasks = [defer.ensureDeferred(reader(api, load, n)) for n in range(READERS)]
    try:
        await eventually(lambda: defer.succeed(load.reads >= 50), 10, "the load to get going")
        outage = await kill_and_recover(fresh_cluster, api, load, "catalog-1")
    finally:
        load.stop = True
        results = await defer.DeferredList(tasks, consumeErrors=True)
    assert not [result for ok, result in results if not ok]
    after = await api.put(f"/bazar/update_price/{PRICE_BOOK}", {"price": 8.0})
    assert (after.code, after.body["price"]) == (200, 8.0)
    prices = await api.on_each(CATALOGS, f"/catalog/books/{PRICE_BOOK}")
    assert {b["price"] for b in prices.values()} == {8.0}
    # One kill, at most one election (the restarted catalog-1 may come back before one is due),
    # and none in the order role.
    status = await agreement(api)
    epochs = {(r["role"], r["epoch"]) for r in status["replicas"]}
    assert epochs in ({("catalog", 1), ("order", 1)}, {("catalog", 2), ("order", 1)}), epochs
    with capsys.disabled():
        print(
            f"\n[failover] catalog-1 (sequencer) healthy again {outage.seconds:.2f}s after SIGKILL; "
            f"{outage.reads_during} reads meanwhile, {len(load.failed_reads)} failed"
        )
    assert load.failed_reads == [], f"{len(load.failed_reads)} failed reads: {load.failed_reads[:5]}"
    assert load.history.stale_reads() == []
    assert outage.reads_during > 0


# A fault of a role's sequencer: ``fault(buyers, sequencer, members)``, once purchases batch
# there, returns when purchases are acknowledged again, with what happened in words.
SequencerFault = Callable[[Buyers, str, tuple[str, ...]], Awaitable[str]]
BATCH_METRICS = ((ORDERS, "bazar_take_batch_takes"), (CATALOGS, "bazar_group_commit_writes"))


async def batched_buys_through(
    api: Api, fault: SequencerFault, book: int = BUY_BOOK
) -> tuple[dict[str, Any], list[str]]:
    """BUYERS keyed purchases of ``book`` at a time (``tests.integration.batched``) while ``fault`` hits the
    order sequencer, then the catalog sequencer, each as soon as it shows batches of more than
    one. Then, those in doubt retried with their keys: every acknowledged order on every order
    replica exactly once, and the stock conserved on every catalog replica. The cluster's
    status once it agreed, and what happened, to print."""
    assert (await api.set_stock(book, STOCK))["quantity"] == STOCK
    buyers = Buyers(book)
    tasks = buyers.start(api)
    seen = []
    try:
        for members, metric in BATCH_METRICS:
            victim = await sequencer_of(api, members)
            batches, items = await batches_formed(api, victim, metric)
            # With batches under way: under this load they batch all the time.
            what = await fault(buyers, victim, members)
            seen.append(f"{victim}: {items:.0f} in {batches:.0f} batches, then {what}")
    finally:
        buyers.stop = True
        results = await defer.DeferredList(tasks, consumeErrors=True)
    assert not [r for ok, r in results if not ok], results
    assert buyers.refused == [] and not buyers.sold_out, buyers.refused[:5]
    in_doubt = len(buyers.in_doubt)
    status = await agreement(api)
    await buyers.settle_in_doubt(api)
    checked = await each_order_once(api, buyers)
    await stock_conserved(api)
    seen.append(f"{buyers.sent} purchases, {in_doubt} in doubt and retried; {checked} orders checked")
    return status, seen


@pytest_twisted.ensureDeferred
async def test_sequencers_killed_mid_batch(
    fresh_cluster: Cluster, http: HTTPClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """Batched purchases (``batched_buys_through``); the order sequencer, then the catalog
    sequencer SIGKILLed mid-batch and restarted by the process monitor: no acknowledged order
    lost or doubled, the stock conserved."""

    async def kill(buyers: Buyers, victim: str, members: tuple[str, ...]) -> str:
        pid = fresh_cluster.pid_of(victim)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await buyers.acknowledged_again(f"{victim} was killed")
        return "SIGKILL"

    _, seen = await batched_buys_through(Api(http, fresh_cluster), kill)
    with capsys.disabled():
        print("\n[batched] " + "; ".join(seen))

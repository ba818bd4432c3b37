"""Concurrent clients against a real cluster: no overselling, and no read older than an acknowledged write."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import defer

from bazar.launch import CATALOGS, ORDERS, Cluster
from tests.history import History
from tests.integration.api import Api, Reply, assert_replicas_agree
from tests.integration.batched import Buyers, batches_formed, buy, each_order_once, sequencer_of
from tests.integration.test_failover import agreement, stock_conserved

pytestmark = pytest.mark.integration

BUYERS = 200
STOCK = 50


async def settle(calls: list[Any]) -> list[Reply | BaseException]:
    """Run every coroutine at once; each one's Reply, or the exception it raised."""
    results = await defer.DeferredList([defer.ensureDeferred(c) for c in calls], consumeErrors=True)
    return [result if ok else result.value for ok, result in results]


@pytest_twisted.ensureDeferred
async def test_concurrent_purchases_sell_exactly_the_stock(api: Api) -> None:
    book = 6
    assert (await api.set_stock(book, STOCK))["quantity"] == STOCK
    before = await api.on_each(ORDERS, "/order/orders")
    known = {o["order_id"] for orders in before.values() for o in orders}

    started = time.monotonic()
    replies = await settle([api.post(f"/bazar/purchase/{book}") for _ in range(BUYERS)])
    elapsed = time.monotonic() - started

    failures = [r for r in replies if not isinstance(r, Reply)]
    assert not failures, f"{len(failures)} purchases got no answer, e.g. {failures[0]!r}"
    codes = Counter(r.code for r in replies if isinstance(r, Reply))
    assert codes == {200: STOCK, 409: BUYERS - STOCK}, (codes, elapsed)
    sold = [r.body for r in replies if isinstance(r, Reply) and r.code == 200]
    assert all(o["book_id"] == book and o["quantity"] == 1 for o in sold), sold
    sold_ids = {o["order_id"] for o in sold}
    assert len(sold_ids) == STOCK and not sold_ids & known
    refused = [r.body for r in replies if isinstance(r, Reply) and r.code == 409]
    assert all(b["error"]["code"] == 409 and "stock" in b["error"]["message"] for b in refused), refused[:3]

    stock = await api.on_each(CATALOGS, f"/catalog/books/{book}")
    assert {name: b["quantity"] for name, b in stock.items()} == dict.fromkeys(CATALOGS, 0)
    assert (await api.info(book)).body["quantity"] == 0

    after = await api.on_each(ORDERS, "/order/orders")
    for name in ORDERS:
        new = [o for o in after[name] if o["order_id"] not in known]
        assert len(new) == STOCK, (name, len(new))
        assert {o["order_id"] for o in new} == sold_ids, name
        assert all(o["book_id"] == book for o in new), name
    assert after[ORDERS[0]] == after[ORDERS[1]] == after[ORDERS[2]]

    assert_replicas_agree(await api.status())


@pytest_twisted.ensureDeferred
async def test_no_read_is_older_than_an_acknowledged_write(api: Api) -> None:
    """Prices 1..20 written one after another while readers keep reading the book.

    A read that *started* after the write of price k was acknowledged must show k or later
    (cache hit or miss alike): the write reached every replica and the cache before its ack.
    The reads and writes are recorded in a ``History``, which finds any that did not.
    """
    book, writes, readers, max_reads, deadline = 4, 20, 5, 400, time.monotonic() + 30
    history = History()
    writing = True

    async def write(price: int) -> None:
        started = History.now()
        assert (await api.set_price(book, price))["price"] == price
        history.write("price", price, started)

    async def writer() -> None:
        for price in range(1, writes + 1):
            await write(price)

    async def reader() -> None:
        for _ in range(max_reads):
            if not writing or time.monotonic() > deadline:
                return
            started = History.now()
            reply = await api.info(book)
            history.read("price", reply.body["price"], started, note=reply.header("X-Bazar-Cache"))

    await write(0)  # the initial price: acknowledged before any reader starts
    reading = [defer.ensureDeferred(reader()) for _ in range(readers)]
    try:
        await writer()
    finally:
        writing = False
        await defer.gatherResults(reading, consumeErrors=True)

    assert [w.value for w in history.of("write")] == list(range(writes + 1))
    reads = history.of("read")
    assert all(r.value in range(writes + 1) for r in reads), [r.value for r in reads]
    stale = history.stale_reads()
    assert not stale, f"{len(stale)} reads older than an acknowledged write: {history.describe(stale)}"

    # The check was not vacuous: many reads began after some write was acknowledged,
    # and they came from the cache as well as from the replicas.
    first_ack = history.of("write")[1].end  # price 1's
    after_an_ack = [r for r in reads if r.start > first_ack]
    assert len(after_an_ack) >= writes, len(after_an_ack)
    assert {"hit", "miss"} <= {r.note for r in after_an_ack}
    assert (await api.info(book)).body["price"] == writes
    assert_replicas_agree(await api.status())


@pytest.mark.parametrize(
    ("members", "metric"), [(ORDERS, "bazar_take_batch_takes"), (CATALOGS, "bazar_group_commit_writes")]
)
@pytest_twisted.ensureDeferred
async def test_a_sequencer_killed_mid_batch_oversells_nothing(
    fresh_cluster: Cluster,
    http: HTTPClient,
    members: tuple[str, ...],
    metric: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """200 keyed purchases at once of a book with 50 copies; the role's sequencer SIGKILLed as
    soon as its /metrics shows a batch of more than one, with purchases still under way. Once
    those left in doubt (the order sequencer's: the catalog's are retried by the order
    sequencer, with their keys, and answered) are retried with their keys: exactly 50 orders, each on
    every order replica once, no copy left on any catalog replica, and the stock conserved."""
    api = Api(http, fresh_cluster)
    book = 6
    assert (await api.set_stock(book, STOCK))["quantity"] == STOCK
    victim = await sequencer_of(api, members)
    pid = fresh_cluster.pid_of(victim)
    assert pid is not None
    buyers = Buyers(book)
    keys = [f"oversell-{n}" for n in range(BUYERS)]
    sent = [defer.ensureDeferred(buy(api, book, key)) for key in keys]
    try:
        batches, items = await batches_formed(api, victim, metric)
    finally:
        os.kill(pid, signal.SIGKILL)
    under_way = sum(1 for d in sent if not d.called)
    assert under_way > 0, "the kill came after every purchase was answered"
    replies = await defer.gatherResults(sent)
    for key, reply in zip(keys, replies, strict=True):
        buyers.record(key, reply)
    in_doubt = len(buyers.in_doubt)
    assert buyers.refused == [], buyers.refused[:5]
    await agreement(api)
    await buyers.settle_in_doubt(api)
    assert (len(buyers.orders), len(buyers.sold_out)) == (STOCK, BUYERS - STOCK), (under_way, in_doubt)
    await each_order_once(api, buyers)
    stock = await api.on_each(CATALOGS, f"/catalog/books/{book}")
    assert {name: b["quantity"] for name, b in stock.items()} == dict.fromkeys(CATALOGS, 0)
    await stock_conserved(api)
    with capsys.disabled():
        print(
            f"\n[oversell] {victim}: {items:.0f} in {batches:.0f} batches before SIGKILL; "
            f"{under_way} purchases under way, {in_doubt} left in doubt and retried"
        )

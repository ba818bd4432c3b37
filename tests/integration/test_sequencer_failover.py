"""The sequencers themselves fail: another replica takes over, and the old one cannot commit.

A sequencer is *stopped* (SIGSTOP: a host that hangs or is cut off) rather than killed, since
the process monitor would restart a killed one faster than an election. Under a mixed load of
reads, price updates and keyed purchases retried by the client, the followers elect a new
sequencer in a new epoch; reads never fail; writes resume; the old sequencer, resumed (or
restarted from its old disk), learns of the newer epoch, steps down, forgets what it had and is
sent everything again; then every replica agrees, every acknowledged purchase exists exactly
once everywhere, and the stock is conserved: every take has its order (``tests.invariants``),
those of purchases answered 503 included, half of which were sent without a key.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import defer

from bazar.follower_link import REPLICATION_TIMEOUT
from bazar.launch import CATALOGS, ORDERS, Cluster
from tests.integration.api import Api, eventually, sleep
from tests.integration.batched import Buyers
from tests.integration.test_failover import (
    BUY_BOOK,
    CONVERGE_TIMEOUT,
    READERS,
    STOCK,
    Load,
    agreement,
    batched_buys_through,
    buyer,
    converged,
    price_writer,
    reader,
    stock_conserved,
)

pytestmark = pytest.mark.integration

TAKEOVER_TIMEOUT = 15.0
LOAD_SECONDS = 90.0  # the stops and takeovers; the test ends the load once they are over
# Seconds from a takeover to the old sequencer's resume, one hang of each role per offset: at
# once, while the new sequencer's first calls to it are still waiting, and after they failed.
RESUME_OFFSETS = (0.0, 1.0, 2.5)
MAX_READS = 20_000
# A write caught by the stop waits for its deadline (5 s at the follower that forwarded it)
# before the client's retry reaches the new sequencer.
WRITES_RESUME_TIMEOUT = 20.0


async def status_of(api: Api, name: str) -> dict[str, object] | None:
    replicas = (await api.status())["replicas"]
    return next((r for r in replicas if r["name"] == name), None)


async def takeover(api: Api, old: str, role_members: tuple[str, ...]) -> tuple[str, int]:
    """Wait until a replica other than ``old`` sequences the role in a newer epoch."""

    async def done() -> tuple[str, int] | None:
        for name in role_members:
            if name == old:
                continue
            status = await status_of(api, name)
            if status and status.get("healthy") and status.get("sequencer") not in (None, old):
                return str(status["sequencer"]), int(status["epoch"])  # type: ignore[call-overload]
        return None

    return await eventually(done, TAKEOVER_TIMEOUT, f"a replica to take over from {old}", interval=0.1)


async def elected(api: Api, old: str, role_members: tuple[str, ...]) -> tuple[str, int]:
    """The moment another replica than ``old`` sequences the role (the newest epoch's, if
    several claim to), asked of the replicas themselves (the front end's /bazar/cluster waits
    for a stopped one to time out)."""

    async def done() -> tuple[str, int] | None:
        claims = []
        for name in role_members:
            if name != old:
                status = (await api.internal(name, "/internal/status")).body
                if status.get("sequencer") == name:
                    claims.append((int(status["epoch"]), name))
        if not claims:
            return None
        epoch, name = max(claims)  # a resumed old sequencer may still claim its old epoch
        return name, epoch

    return await eventually(done, TAKEOVER_TIMEOUT, f"a replica to take over from {old}", interval=0.02)


@pytest_twisted.ensureDeferred
async def test_stopped_sequencers_are_replaced(
    fresh_cluster: Cluster, http: HTTPClient, capsys: pytest.CaptureFixture[str]
) -> None:
    api = Api(http, fresh_cluster)
    assert (await api.set_stock(BUY_BOOK, STOCK))["quantity"] == STOCK
    load = Load(seconds=LOAD_SECONDS, max_reads=MAX_READS)
    tasks = [defer.ensureDeferred(reader(api, load, n)) for n in range(READERS)]
    tasks += [defer.ensureDeferred(price_writer(api, load)), defer.ensureDeferred(buyer(api, load))]
    figures = []
    try:
        await eventually(lambda: defer.succeed(load.reads >= 50 and load.orders), 10, "the load to get going")
        for offset in RESUME_OFFSETS:
            for members in (CATALOGS, ORDERS):
                old, _ = await elected(api, "", members)  # whoever sequences the role now
                pid = fresh_cluster.pid_of(old)
                assert pid is not None
                writes_before = len(load.prices) + len(load.orders)
                stopped = time.monotonic()
                os.kill(pid, signal.SIGSTOP)
                try:
                    new, epoch = await elected(api, old, members)
                    took = time.monotonic() - stopped
                    await sleep(offset)  # the timing under test, not a wait for a result
                finally:
                    os.kill(pid, signal.SIGCONT)
                # Writes go on under the new sequencer.
                await eventually(
                    lambda before=writes_before: defer.succeed(
                        len(load.prices) + len(load.orders) > before + 5
                    ),
                    WRITES_RESUME_TIMEOUT,
                    f"writes to resume after {old} stopped",
                )
                figures.append((old, new, epoch, took, offset))
    finally:
        load.stop = True
        results = await defer.DeferredList(tasks, consumeErrors=True)
    assert not [r for ok, r in results if not ok]

    status = await agreement(api)
    by_name = {r["name"]: r for r in status["replicas"]}
    for role, members in (("catalog", CATALOGS), ("order", ORDERS)):
        # One election per hang, none that no fault caused; every old sequencer rejoined as a
        # follower of the newest epoch.
        assert {by_name[m]["epoch"] for m in members} == {1 + len(RESUME_OFFSETS)}, role

    on_each = await api.on_each(ORDERS, "/order/orders")
    for name, orders in on_each.items():
        ids = [o["order_id"] for o in orders]
        assert len(ids) == len(set(ids)), f"{name} has an order twice"
        by_id = {o["order_id"]: o for o in orders}
        missing = [i for i in load.orders if by_id.get(i) != load.orders[i]]
        assert not missing, f"{name} lacks acknowledged orders {missing[:5]}"
    await stock_conserved(api)

    with capsys.disabled():
        for old, new, epoch, took, offset in figures:
            print(
                f"\n[sequencer failover] {old} stopped: {new} sequences in epoch {epoch} after {took:.2f}s; "
                f"{old} resumed {offset:g}s later"
            )
        print(
            f"[sequencer failover] {load.reads} reads, {len(load.failed_reads)} failed; "
            f"{len(load.prices)} price updates and {len(load.orders)} purchases acknowledged, "
            f"{len(load.failed_writes)} writes failed (retried purchases excluded); "
            f"{len(load.orders)} orders checked on every order replica"
        )
    assert load.failed_reads == [], load.failed_reads[:5]
    stale = load.history.stale_reads()
    assert stale == [], load.history.describe(stale[:5])


@pytest_twisted.ensureDeferred
async def test_an_old_sequencer_restarted_from_its_disk_cannot_commit(
    fresh_cluster: Cluster, http: HTTPClient
) -> None:
    """catalog-1 is replaced while stopped, then killed and restarted by the process monitor
    from its disk, which still says it sequences epoch 1: it rejoins as a follower, and
    nothing written through it in its old epoch is acknowledged as such."""
    api = Api(http, fresh_cluster)
    pid = fresh_cluster.pid_of("catalog-1")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    new, epoch = await takeover(api, "catalog-1", CATALOGS)
    acked = await api.put("/bazar/update_price/2", {"price": 12.5})
    assert acked.code == 200
    os.kill(pid, signal.SIGKILL)  # the monitor restarts it from its disk: epoch 1, "sequencer"

    async def rejoined() -> dict[str, object] | None:
        status = await status_of(api, "catalog-1")
        return status if status and status.get("healthy") else None

    status = await eventually(rejoined, TAKEOVER_TIMEOUT, "catalog-1 to rejoin")
    assert (status["sequencer"], status["epoch"]) == (new, epoch)
    # A write sent to it now is forwarded to the new sequencer (or refused): never applied in epoch 1.
    reply = await api.internal_write("catalog-1", "/catalog/books/2/price", {"price": 99.0})
    assert reply.code in (200, 503), reply
    final = await eventually(lambda: converged(api), CONVERGE_TIMEOUT, "every replica to agree")
    prices = await api.on_each(CATALOGS, "/catalog/books/2")
    expected = 99.0 if reply.code == 200 else 12.5
    assert {b["price"] for b in prices.values()} == {expected}, prices
    assert {r["epoch"] for r in final["replicas"] if r["role"] == "catalog"} == {epoch}


LONG_LOG = 700  # writes: more than one 500-entry replication batch
RESUME_AFTER_TAKEOVER = 1.0  # seconds: within the 2 s in which a resume once stopped writes for good
PROBE_WRITES = 20


@pytest_twisted.ensureDeferred
async def test_a_sequencer_hung_with_a_long_log_is_caught_up_while_writes_go_on(
    fresh_cluster: Cluster, http: HTTPClient
) -> None:
    """catalog-1 hangs with a log longer than one replication batch and resumes 1 s after
    another replica took over. It steps down, forgets its writes and must be caught up batch
    by batch while writes go on; writes never wait on it. (Before the fix, each of these
    resumes left it stuck behind, still counted in sync, and every later catalog write failed
    with 503 after 10 s.)"""
    api = Api(http, fresh_cluster)
    for start in range(0, LONG_LOG, 50):
        replies = await defer.gatherResults(
            [
                defer.ensureDeferred(api.put(f"/bazar/update_price/{n % 7}", {"price": 10 + n % 90}))
                for n in range(start, start + 50)
            ]
        )
        assert {r.code for r in replies} == {200}, [r for r in replies if r.code != 200][:3]
    pid = fresh_cluster.pid_of("catalog-1")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        new, epoch = await elected(api, "catalog-1", CATALOGS)
        await sleep(RESUME_AFTER_TAKEOVER)  # the timing under test, not a wait for a result
    finally:
        os.kill(pid, signal.SIGCONT)
    assert epoch == 2
    slowest = 0.0
    for n in range(PROBE_WRITES):
        started = time.monotonic()
        reply = await api.put(f"/bazar/update_price/{n % 7}", {"price": 1 + n})
        slowest = max(slowest, time.monotonic() - started)
        assert reply.code == 200, (n, reply)
    # Each write waits for a follower at most REPLICATION_TIMEOUT (2 s), and one at most: the
    # old sequencer is out of sync until caught up, and the other follower answers at once.
    assert slowest < REPLICATION_TIMEOUT + 1.0, slowest
    status = await agreement(api)
    by_name = {r["name"]: r for r in status["replicas"]}
    assert by_name["catalog-1"]["sequencer"] == new and by_name["catalog-1"]["epoch"] == epoch
    assert by_name["catalog-1"]["last_seq"] >= LONG_LOG + PROBE_WRITES


@pytest_twisted.ensureDeferred
async def test_sequencers_stopped_mid_batch(
    fresh_cluster: Cluster, http: HTTPClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """Batched purchases (``test_failover.batched_buys_through``); the order sequencer, then
    the catalog sequencer SIGSTOPped mid-batch, and resumed once another replica sequences in
    its place and purchases are acknowledged again: nothing of a batch the old sequencer held
    is lost or doubled, the stock is conserved, and there was one election per role."""
    api = Api(http, fresh_cluster)

    async def stop(buyers: Buyers, old: str, members: tuple[str, ...]) -> str:
        pid = fresh_cluster.pid_of(old)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            new, _ = await elected(api, old, members)
            await buyers.acknowledged_again(f"{old} was stopped")
        finally:
            os.kill(pid, signal.SIGCONT)
        return f"SIGSTOP until {new} took over"

    status, seen = await batched_buys_through(api, stop)
    assert {r["epoch"] for r in status["replicas"]} == {2}, status["replicas"]
    with capsys.disabled():
        print("\n[batched] " + "; ".join(seen))

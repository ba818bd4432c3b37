"""Bazar on several hosts: each process in a network namespace of its own, one cable cut and restored.

The front end and the six replicas each run as ``ip netns exec <ns> twistd -n bazar-<role>`` in
their own Linux network namespace, with their own address on a private /24, joined by a bridge
in a "switch" namespace (see ``tests/integration/netns.py`` for the topology). The front end
has a namespace of its own too; the test (in the root namespace) reaches it, and each replica
directly, through its own port on the switch. Nothing is sent to any other address.

* ``test_the_walkthrough_across_hosts``: the report's walkthrough, across the hosts.
* ``test_a_cut_link``: catalog-2's cable is pulled at the switch (frames dropped, nothing
  refused: a partition, not a crash) under a read load; writes go on and succeed, reads all
  answer 200 and none is stale, ``/bazar/cluster`` shows catalog-2 unhealthy. The cable is
  plugged back in: catalog-2 catches up (healthy, equal digests, the missed writes on it,
  read directly) and serves reads again. How long that took, how many writes it missed, and
  how long the cut was noticed and reads took, are printed (measured, not asserted on).
* ``test_a_sequencer_cut_off_from_its_followers``: only the links between the catalog
  sequencer and its followers are cut (it still reaches the front end). A price update there
  misses its majority (503); no read shows the refused price, before or after that answer,
  and none fails, while the followers elect a new sequencer, which acknowledges the next
  update. With the links back, the old sequencer steps down and every replica agrees.

Skipped only where network namespaces cannot be used (not root, no ``ip``, ``ip netns add``
fails). Everything created (processes, namespaces, veths, bridge) is removed by the module
fixture, also when a test or the set-up fails. Every wait has a deadline: the cut test as a
whole has CUT_TEST_SECONDS, the recovery RECOVERY_SECONDS of them.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.web.client import ResponseFailed

from bazar.follower_link import MAX_BATCH
from bazar.launch import CATALOGS, NAMES, ORDERS, REPLICAS
from tests.history import History
from tests.integration import netns
from tests.integration.api import (
    TRANSPORT_ERRORS,
    Reply,
    assert_replicas_agree,
    eventually,
    recorded,
    sleep,
)
from tests.integration.batched import Buyers
from tests.integration.test_failover import batched_buys_through, converged
from tests.integration.test_sequencer_failover import elected
from tests.integration.test_walkthrough import (
    BOOKS,
    CACHE,
    REPLICA,
    assert_round_robin,
    book_of,
    fill_cache_with_misses,
    replica_of,
)

pytestmark = pytest.mark.integration

VICTIM = "catalog-2"
PRICE_BOOK = 1
BUY_BOOK = 6
STOCK = 100_000
READERS = 3
READ_PAUSE = 0.02  # each reader's pause between reads
WRITE_PAUSE = 0.005  # each writer's pause between writes
MAX_READS = 4000  # the read load stops there, whatever happened
CUT_TEST_SECONDS = 60.0  # the whole cut test, load included, or it fails
WRITES_BEFORE = 5  # of each kind, before the cut
# Acknowledged while the cable is out, at least: together more than MAX_BATCH (500) catalog
# entries, so that catching up takes more than one batch, as after any longer outage. (A
# purchase takes several times as long as a price update: fewer of them.)
MIN_WRITES_CUT = {"price": 400, "purchase": 150}
MAX_WRITES_CUT = 1000  # ... and at most, of each kind
BEFORE_SECONDS = 10.0  # the writes before the cut, and the replicas agreeing
# The cut: noticed everywhere and the writes done (about 10 s alone on 2 cores; more than 20 s
# with other test runs on the machine).
CUT_SECONDS = 35.0
RECOVERY_SECONDS = 10.0  # caught up, healthy with equal digests, serving reads again
SERVE_AGAIN_READS = 3  # reads served by the victim after it is back, to see it serve again
PURCHASE_ATTEMPTS = 20
SLOW_READ = 1.0  # seconds: a read slower than this is counted (and printed), not failed


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[netns.HostCluster]:
    """The cluster on seven namespaces, healthy; afterwards every process stopped by pid and
    the network deleted, whatever happened (also if the set-up fails half-way)."""
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(reason)
    with netns.running(netns.HostCluster(netns.Network(), tmp_path_factory.mktemp("netns"))) as cluster:
        yield cluster


@pytest.fixture
def api(http: HTTPClient, hosts: netns.HostCluster) -> netns.HostApi:
    return netns.HostApi(http, hosts)


# -- the walkthrough -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_walkthrough_across_hosts(
    hosts: netns.HostCluster, api: netns.HostApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # Seven processes, each in its own namespace, each replica known by its own address.
    for name in NAMES:
        pid = hosts.processes[name].pid
        assert hosts.in_its_namespace(name), f"{name} (pid {pid}) is not in its namespace"
    status = await api.status()
    assert {r["name"]: r["url"] for r in status["replicas"]} == {n: hosts.url(n) for n in REPLICAS}
    assert len({hosts.network.address(n) for n in NAMES}) == len(NAMES)

    # The seven books.
    reply = await api.get("/bazar/info/all")
    assert reply.code == 200, reply
    assert [(b["id"], b["title"], b["topic"]) for b in reply.body] == list(BOOKS)

    # info/0: a miss, then a hit.
    await fill_cache_with_misses(api)
    first = await api.info(0)
    assert (first.header(CACHE), first.body["title"]) == ("miss", BOOKS[0][1]), first
    second = await api.info(0)
    assert (second.header(CACHE), second.body) == ("hit", first.body), second

    # Misses go to catalog-1, -2, -3 in turn.
    _, flush = await fill_cache_with_misses(api)
    served_by = [replica_of(r) for r in flush]
    books = []
    for book in (0, 1, 2):
        miss = await api.info(book)
        assert miss.header(CACHE) == "miss", miss
        books.append(replica_of(miss))
    assert sorted(books) == list(CATALOGS), books
    assert_round_robin(served_by + books)

    # update_price on book 1: the next read, and every catalog replica read directly, see it.
    old = (await api.info(1)).body["price"]
    new = round(old + 7.25, 2)
    assert (await api.set_price(1, new))["price"] == new
    assert (await api.info(1)).body["price"] == new
    assert book_of((await api.get("/bazar/info/all")).body, 1)["price"] == new
    direct = await api.on_each(CATALOGS, "/catalog/books/1")
    assert {n: b["price"] for n, b in direct.items()} == dict.fromkeys(CATALOGS, new)

    # A purchase reaches every catalog replica (the stock) and every order replica (the order).
    book = 2
    (quantity,) = {b["quantity"] for b in (await api.on_each(CATALOGS, f"/catalog/books/{book}")).values()}
    orders_before = await api.on_each(ORDERS, "/order/orders")
    bought = await api.post(f"/bazar/purchase/{book}")
    assert bought.code == 200, bought
    order = recorded(bought.body)
    assert (order["book_id"], order["quantity"], order["title"]) == (book, 1, BOOKS[book][1])
    stock = await api.on_each(CATALOGS, f"/catalog/books/{book}")
    assert {n: b["quantity"] for n, b in stock.items()} == dict.fromkeys(CATALOGS, quantity - 1)
    orders_after = await api.on_each(ORDERS, "/order/orders")
    for name in ORDERS:
        assert orders_after[name] == [*orders_before[name], order], name
    assert (await api.get(f"/bazar/orders/{order['order_id']}")).body == order

    final = await api.status()
    assert_replicas_agree(final)
    with capsys.disabled():
        where = ", ".join(f"{n} {hosts.network.address(n)}" for n in NAMES)
        print(f"\n[netns] {hosts.network.tag}, {hosts.network.subnet}: {where}")
        print(f"[netns] walkthrough: misses served by {served_by + books}; order {order['order_id']}")


# -- the cut cable ---------------------------------------------------------------------------


@dataclass
class Load:
    """What the readers and writers did, and in which phase: before, cut, restored."""

    api: netns.HostApi
    deadline: float
    phase: str = "before"
    stop_reads: bool = False
    stop_writes: bool = False
    reads: Counter[str] = field(default_factory=Counter)  # by phase
    served: Counter[tuple[str, str]] = field(default_factory=Counter)  # (phase, replica)
    slow_reads: list[tuple[str, str, float]] = field(default_factory=list)  # (phase, path, seconds)
    max_read: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # slowest, by phase
    failed_reads: list[str] = field(default_factory=list)
    history: History = field(default_factory=History)  # "price" of PRICE_BOOK, "stock" of BUY_BOOK
    price: float = 2000.0
    prices: list[float] = field(default_factory=list)  # acknowledged, in order
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)  # acknowledged, by id
    writes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (phase, kind) acknowledged
    failed_writes: list[str] = field(default_factory=list)
    purchase_number: int = 0
    cap: int = 0  # each writer stops after this many acknowledged writes in the phase

    def may_write(self, kind: str) -> bool:
        return self.writing() and self.writes[self.phase, kind] < self.cap

    def reading(self) -> bool:
        return (
            not self.stop_reads and sum(self.reads.values()) < MAX_READS and time.monotonic() < self.deadline
        )

    def writing(self) -> bool:
        return not self.stop_writes and time.monotonic() < self.deadline


async def read(load: Load, path: str) -> Reply | None:
    """One read through the front end: anything but a 200 is a failed read."""
    phase = load.phase
    load.reads[phase] += 1
    started = time.monotonic()
    try:
        reply = await load.api.get(path)
    except TRANSPORT_ERRORS as e:
        load.failed_reads.append(f"{phase} {path}: {e!r} after {time.monotonic() - started:.2f}s")
        return None
    took = time.monotonic() - started
    load.max_read[phase] = max(load.max_read[phase], took)
    if took > SLOW_READ:
        load.slow_reads.append((phase, path, took))
    if reply.code != 200:
        load.failed_reads.append(f"{phase} {path}: {reply.code} {reply.body} after {took:.2f}s")
        return None
    if reply.header(CACHE) != "hit":
        load.served[phase, reply.header(REPLICA) or "?"] += 1
    return reply


async def reader(load: Load, number: int) -> None:
    """Every book in turn, then the newest acknowledged order; PRICE_BOOK's price and
    BUY_BOOK's stock recorded, to find any read older than a write acknowledged before it."""
    step = number
    while load.reading():
        book = step % 8
        step += 1
        if book == 7:
            if load.orders:
                order_id = max(load.orders)
                reply = await read(load, f"/bazar/orders/{order_id}")
                if reply is not None and reply.body != load.orders[order_id]:
                    load.failed_reads.append(f"order {order_id}: {reply.body} != {load.orders[order_id]}")
        else:
            started = History.now()
            reply = await read(load, f"/bazar/info/{book}")
            if reply is not None and book == PRICE_BOOK:
                load.history.read("price", reply.body["price"], started)
            elif reply is not None and book == BUY_BOOK:
                load.history.read("stock", reply.body["quantity"], started)
        await sleep(READ_PAUSE)


async def price_writer(load: Load) -> None:
    """Raises PRICE_BOOK's price by one each time, so a read can tell old from new."""
    while load.may_write("price"):
        load.price += 1
        price, phase, started = load.price, load.phase, History.now()
        reply = await load.api.put(f"/bazar/update_price/{PRICE_BOOK}", {"price": price})
        if reply.code == 200:
            assert reply.body["price"] == price, reply
            load.history.write("price", price, started)
            load.prices.append(price)
            load.writes[phase, "price"] += 1
        else:
            took = History.now() - started
            load.failed_writes.append(f"{phase} price {price}: {reply.code} {reply.body} after {took:.2f}s")
        await sleep(WRITE_PAUSE)


async def buyer(load: Load) -> None:
    """Buys one copy of BUY_BOOK at a time, with an Idempotency-Key, retried on 503 as a client
    would (the key makes a retry safe)."""
    while load.may_write("purchase"):
        load.purchase_number += 1
        key, phase, started = f"netns-buy-{load.purchase_number}", load.phase, History.now()
        for _ in range(PURCHASE_ATTEMPTS):
            reply = await load.api.post(f"/bazar/purchase/{BUY_BOOK}", headers={"Idempotency-Key": key})
            if reply.code != 503:
                break
            await sleep(WRITE_PAUSE)
        if reply.code == 200:
            order = recorded(reply.body)
            load.orders[order["order_id"]] = order
            load.history.write("stock", STOCK - len(load.orders), started)
            load.writes[phase, "purchase"] += 1
        else:
            took = History.now() - started
            load.failed_writes.append(f"{phase} purchase {key}: {reply.code} {reply.body} after {took:.2f}s")
        await sleep(WRITE_PAUSE)


def left(deadline: float) -> float:
    """Seconds until ``deadline`` (a little, if it has passed: one more look)."""
    return max(0.1, deadline - time.monotonic())


async def write_until(load: Load, phase: str, enough: Any, cap: int, deadline: float) -> None:
    """Run both writers until ``enough()`` (checked every 50 ms), each at most ``cap`` writes;
    then stop them. AssertionError if that is not so by ``deadline``."""
    load.stop_writes, load.cap = False, cap
    writers = [defer.ensureDeferred(price_writer(load)), defer.ensureDeferred(buyer(load))]
    try:
        await eventually(
            lambda: defer.succeed(enough()), left(deadline), f"the writes {phase}", interval=0.05
        )
    except AssertionError as e:
        counts = {kind: n for (when, kind), n in load.writes.items() if when == load.phase}
        raise AssertionError(f"{e}; writes acknowledged meanwhile: {counts}") from None
    finally:
        load.stop_writes = True
        results = await defer.DeferredList(writers, consumeErrors=True)
    errors = [result for ok, result in results if not ok]
    assert not errors, errors[0]


async def replica_status(api: netns.HostApi, name: str) -> dict[str, Any]:
    reply = await api.internal(name, "/internal/status")
    assert reply.code == 200, reply
    return reply.body


async def sequencer_view(api: netns.HostApi) -> dict[str, Any]:
    """catalog-1's last_seq and what it knows of VICTIM: confirmed seq, in sync."""
    status = await replica_status(api, "catalog-1")
    return {"last_seq": status["last_seq"], **status["followers"][VICTIM]}


_UP = re.compile(r"^bazar_replica_up\{([^}]*)\}\s+(\S+)$", re.M)


async def frontend_reads_from(api: netns.HostApi, name: str) -> bool:
    """The front end's ``bazar_replica_up`` for ``name``: whether it reads from it now."""
    for labels, value in _UP.findall(await api.metrics()):
        if f'replica="{name}"' in labels:
            return float(value) == 1.0
    raise AssertionError(f"no bazar_replica_up for {name} in /metrics")


def victim_unhealthy(status: dict[str, Any]) -> bool:
    """VICTIM unhealthy in ``/bazar/cluster``, every other replica healthy."""
    return all(r["healthy"] == (r["name"] != VICTIM) for r in status["replicas"])


@dataclass
class Timeline:
    cut: float = 0.0
    sequencer_dropped: float | None = None  # catalog-1 stopped waiting for the victim
    frontend_stopped: float | None = None  # the front end stopped reading from it
    cluster_unhealthy: float | None = None  # a /bazar/cluster answer showed it unhealthy
    cluster_call: float | None = None  # how long that /bazar/cluster call took
    restored: float = 0.0
    in_sync: float | None = None  # catalog-1: the victim confirmed every write, in sync
    healthy: float | None = None  # /bazar/cluster: healthy, digests and last_seq equal

    def after(self, start: float, moment: float | None) -> str:
        return "-" if moment is None else f"{moment - start:.2f}s"


async def notice_the_cut(api: netns.HostApi, timeline: Timeline, deadline: float) -> None:
    """Wait until the sequencer, the front end's reads and ``/bazar/cluster`` have all noticed."""

    async def sequencer() -> None:
        await eventually(
            lambda: defer.ensureDeferred(sequencer_view(api)).addCallback(lambda v: not v["in_sync"]),
            left(deadline),
            f"catalog-1 to drop {VICTIM} out of sync",
            interval=0.05,
        )
        timeline.sequencer_dropped = time.monotonic()

    async def frontend() -> None:
        async def stopped() -> bool:
            return not await frontend_reads_from(api, VICTIM)

        await eventually(
            stopped, left(deadline), f"the front end to stop reading from {VICTIM}", interval=0.05
        )
        timeline.frontend_stopped = time.monotonic()

    async def cluster() -> None:
        async def shows() -> bool:
            started = time.monotonic()
            status = await api.status()
            timeline.cluster_call = time.monotonic() - started
            return victim_unhealthy(status)

        await eventually(shows, left(deadline), f"/bazar/cluster to show {VICTIM} unhealthy", interval=0.05)
        timeline.cluster_unhealthy = time.monotonic()

    await defer.gatherResults(
        [defer.ensureDeferred(c()) for c in (sequencer, frontend, cluster)], consumeErrors=True
    )


async def times_out(api: netns.HostApi, url: str) -> None:
    """``url`` does not answer within a second (no refusal either: the frames are dropped)."""
    try:
        reply = await api.call("GET", url, timeout=1.0)
    except (defer.CancelledError, defer.TimeoutError):
        return  # given up while connecting
    except ResponseFailed as e:
        if any(reason.check(defer.CancelledError) for reason in e.reasons):
            return  # given up waiting for the answer on a connection made before the cut
        raise
    raise AssertionError(f"{url} answered {reply.code} with its cable out")


async def catch_up(api: netns.HostApi, seq: int, deadline: float) -> None:
    """Wait until catalog-1 says VICTIM confirmed ``seq`` and is in sync; if it does not, fail
    with what catalog-1 and VICTIM say."""
    try:
        await eventually(
            lambda: defer.ensureDeferred(sequencer_view(api)).addCallback(
                lambda v: v["in_sync"] and v["confirmed"] == seq
            ),
            left(deadline),
            f"{VICTIM} to catch up to seq {seq}",
            interval=0.02,
        )
    except AssertionError as e:
        view = await sequencer_view(api)
        victim = await replica_status(api, VICTIM)
        raise AssertionError(
            f"{e}\ncatalog-1 (last_seq {view['last_seq']}) says {VICTIM} confirmed {view['confirmed']}, "
            f"in_sync {view['in_sync']}; {VICTIM} itself says last_seq {victim['last_seq']}, "
            f"ready {victim['ready']}, epoch {victim.get('epoch')}, sequencer {victim['sequencer']}"
        ) from None


@pytest_twisted.ensureDeferred
async def test_a_cut_link(
    hosts: netns.HostCluster, api: netns.HostApi, capsys: pytest.CaptureFixture[str]
) -> None:
    def say(line: str) -> None:
        """Print a figure as soon as it is measured (so a failing run shows them too)."""
        with capsys.disabled():
            print(f"[netns] {line}", flush=True)

    network = hosts.network
    t = Timeline()
    test_deadline = time.monotonic() + CUT_TEST_SECONDS
    assert (await api.set_stock(BUY_BOOK, STOCK))["quantity"] == STOCK
    load = Load(api, test_deadline)
    load.history.write("stock", STOCK, History.now())
    readers = [defer.ensureDeferred(reader(load, n)) for n in range(READERS)]
    cut = False
    with capsys.disabled():
        print()
    try:
        before = min(test_deadline, time.monotonic() + BEFORE_SECONDS)
        # Before: reads and writes, every replica in sync.
        await write_until(
            load,
            "before the cut",
            lambda: (
                load.writes["before", "price"] >= WRITES_BEFORE
                and load.writes["before", "purchase"] >= WRITES_BEFORE
            ),
            WRITES_BEFORE,
            before,
        )
        await eventually(lambda: converged(api), left(before), "the replicas to agree before the cut")
        seq_at_cut = (await sequencer_view(api))["last_seq"]
        assert (await replica_status(api, VICTIM))["last_seq"] == seq_at_cut

        # The cable out: the victim is unreachable (a timeout, not a refusal), everyone notices,
        # and meanwhile reads and writes go on.
        network.cut(VICTIM)
        cut = True
        load.phase = "cut"
        t.cut = time.monotonic()
        unreachable = defer.ensureDeferred(times_out(api, hosts.url(VICTIM) + "/internal/status"))
        cut_deadline = min(test_deadline, time.monotonic() + CUT_SECONDS)
        noticed = defer.ensureDeferred(notice_the_cut(api, t, cut_deadline))
        await write_until(
            load,
            "while the cable is out",
            lambda: (
                noticed.called and all(load.writes["cut", kind] >= n for kind, n in MIN_WRITES_CUT.items())
            ),
            MAX_WRITES_CUT,
            cut_deadline,
        )
        await noticed
        await unreachable
        say(
            f"cut {VICTIM}'s cable at the switch (seq {seq_at_cut}): catalog-1 dropped it after "
            f"{t.after(t.cut, t.sequencer_dropped)}, the front end stopped reading from it after "
            f"{t.after(t.cut, t.frontend_stopped)}, /bazar/cluster showed it unhealthy after "
            f"{t.after(t.cut, t.cluster_unhealthy)} (that call took {t.cluster_call or 0:.2f}s)"
        )
        seq_at_restore = (await sequencer_view(api))["last_seq"]
        missed = seq_at_restore - seq_at_cut
        say(
            f"while cut ({time.monotonic() - t.cut:.2f}s): {load.reads['cut']} reads "
            f"(slowest {load.max_read['cut']:.2f}s), {load.writes['cut', 'price']} price updates and "
            f"{load.writes['cut', 'purchase']} purchases acknowledged, {len(load.failed_writes)} failed; "
            f"{VICTIM} missed {missed} catalog writes (seq {seq_at_cut} -> {seq_at_restore}; "
            f"MAX_BATCH {MAX_BATCH})"
        )

        # The cable back in: the victim catches up, is healthy, and serves reads again.
        network.restore(VICTIM)
        cut = False
        load.phase = "restored"
        t.restored = time.monotonic()
        recovery = min(test_deadline, t.restored + RECOVERY_SECONDS)
        await catch_up(api, seq_at_restore, recovery)
        t.in_sync = time.monotonic()
        final = await eventually(
            lambda: converged(api), left(recovery), f"{VICTIM} healthy, digests equal", interval=0.05
        )
        t.healthy = time.monotonic()
        say(
            f"cable back: {VICTIM} caught up ({missed} writes) after {t.after(t.restored, t.in_sync)}, "
            f"healthy with equal digests after {t.after(t.restored, t.healthy)}"
        )
        await eventually(
            lambda: defer.succeed(load.served["restored", VICTIM] >= SERVE_AGAIN_READS),
            left(recovery),
            f"{VICTIM} to serve reads again",
            interval=0.05,
        )
    finally:
        if cut:
            network.restore(VICTIM)
        load.stop_reads = load.stop_writes = True
        results = await defer.DeferredList(readers, consumeErrors=True)
        served = {f"{phase}/{name}": n for (phase, name), n in sorted(load.served.items())}
        say(f"reads by phase {dict(load.reads)}; misses served by {served}")
        for phase, path, took in load.slow_reads:
            say(f"slow read ({phase}): {path} took {took:.2f}s")
        for failure in load.failed_writes:
            say(f"failed write: {failure}")
        for failure in load.failed_reads[:10]:
            say(f"failed read: {failure}")
    errors = [result for ok, result in results if not ok]
    assert not errors, errors[0]

    # The victim has every write it missed: read directly (with the cluster secret).
    victim = await replica_status(api, VICTIM)
    assert victim["last_seq"] == seq_at_restore, victim
    books = await api.on_each(CATALOGS, "/catalog/books")
    assert books[VICTIM] == books["catalog-1"] == books["catalog-3"], books
    assert book_of(books[VICTIM], PRICE_BOOK)["price"] == load.prices[-1]
    assert book_of(books[VICTIM], BUY_BOOK)["quantity"] == STOCK - len(load.orders)
    orders = await api.on_each(ORDERS, "/order/orders")
    for name, listed in orders.items():
        by_id = {o["order_id"]: o for o in listed}
        assert all(by_id.get(i) == o for i, o in load.orders.items()), f"{name} lacks acknowledged orders"
    digests = {r["name"]: (r["last_seq"], r["digest"][:12]) for r in final["replicas"]}
    say(f"final (last_seq, digest): {digests}")

    assert load.failed_reads == [], f"{len(load.failed_reads)} failed reads: {load.failed_reads[:5]}"
    stale = load.history.stale_reads()
    assert stale == [], f"{len(stale)} stale reads, e.g. {stale[:3]}"
    assert load.reads["cut"] > 0 and load.reads["restored"] > 0, load.reads
    assert load.served["cut", VICTIM] == 0, load.served
    # Writes went on. The only ones that may fail are those the front end sent to the victim
    # itself before it noticed the cut: they may have arrived, so they are not sent elsewhere
    # (docs/failover.md, "Writes go on without a dead follower"); a 503 after the front end's 10 s deadline.
    assert all(load.writes["cut", kind] >= n for kind, n in MIN_WRITES_CUT.items()), load.writes
    for failure in load.failed_writes:
        assert failure.startswith("cut price") and " 503 " in failure, failure
        assert f"{VICTIM} is unreachable" in failure, failure
    assert len(load.failed_writes) <= 2, load.failed_writes
    # Every catalog write of the cut was acknowledged (a failed one never reached the sequencer).
    assert missed == load.writes["cut", "price"] + load.writes["cut", "purchase"], (missed, load.writes)


# -- a sequencer cut off from its followers, not from the front end -----------------------------

SEPARATED_BOOK = 3  # neither PRICE_BOOK nor BUY_BOOK: its price is this test's alone
SEPARATION_TEST_SECONDS = 45.0  # the whole test, or it fails
SEPARATION_READERS = 3
MAX_SEPARATION_READS = 6000


@dataclass
class PriceRead:
    """One read of SEPARATED_BOOK through the front end: when it started and ended, what it got."""

    started: float
    ended: float
    code: int
    price: float | None
    replica: str | None
    cache: str | None


async def read_prices(api: netns.HostApi, reads: list[PriceRead], stop: list[bool]) -> None:
    while not stop and len(reads) < MAX_SEPARATION_READS:
        started = time.monotonic()
        try:
            reply = await api.get(f"/bazar/info/{SEPARATED_BOOK}")
        except TRANSPORT_ERRORS as e:
            reads.append(PriceRead(started, time.monotonic(), 0, None, repr(e), None))
        else:
            price = reply.body.get("price") if reply.code == 200 else None
            reads.append(
                PriceRead(
                    started, time.monotonic(), reply.code, price, reply.header(REPLICA), reply.header(CACHE)
                )
            )
        await sleep(READ_PAUSE)


async def new_sequencer(api: netns.HostApi, old: str, epoch: int) -> tuple[str, int] | None:
    """The catalog replica that sequences writes in an epoch newer than ``epoch``, once its
    follower says so too."""
    rows = [r for r in (await api.status())["replicas"] if r["role"] == "catalog" and r["name"] != old]
    newer = {(r.get("sequencer"), r.get("epoch", 0)) for r in rows}
    if len(newer) == 1:
        ((name, now),) = newer
        if name != old and now > epoch:
            return name, now
    return None


@pytest_twisted.ensureDeferred
async def test_a_sequencer_cut_off_from_its_followers(
    hosts: netns.HostCluster, api: netns.HostApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """The catalog sequencer loses its followers but not the front end. A price update there
    misses its majority: 503. No read through the front end ever shows that price, neither
    while the update is under way nor after (the followers, which elect a new sequencer,
    never had it), and every read answers.
    A price update in the new epoch is acknowledged; once the links are back, the old
    sequencer steps down and every replica agrees, without the lost price anywhere."""

    def say(line: str) -> None:
        with capsys.disabled():
            print(f"[netns] {line}", flush=True)

    network = hosts.network
    deadline = time.monotonic() + SEPARATION_TEST_SECONDS
    status = await eventually(lambda: converged(api), left(deadline), "the replicas to agree first")
    catalogs = [r for r in status["replicas"] if r["role"] == "catalog"]
    ((sequencer, epoch),) = {(r["sequencer"], r["epoch"]) for r in catalogs}
    followers = [name for name in CATALOGS if name != sequencer]
    before = (await api.info(SEPARATED_BOOK)).body["price"]
    lost, acknowledged = round(before + 11.5, 2), round(before + 23.25, 2)

    reads: list[PriceRead] = []
    stop: list[bool] = []
    readers = [defer.ensureDeferred(read_prices(api, reads, stop)) for _ in range(SEPARATION_READERS)]
    separated: list[str] = []
    with capsys.disabled():
        print()
    try:
        for follower in followers:
            network.separate(sequencer, follower)
            separated.append(follower)
        cut = time.monotonic()
        reply = await api.put(f"/bazar/update_price/{SEPARATED_BOOK}", {"price": lost})
        refused = time.monotonic()
        assert reply.code == 503, reply
        assert "not acknowledged" in reply.body["error"]["message"], reply
        say(f"{sequencer} cut off from {followers}: a price update there refused after {refused - cut:.2f}s")

        taken_over = await eventually(
            lambda: new_sequencer(api, sequencer, epoch), left(deadline), "a follower to take over"
        )
        took_over = time.monotonic()

        async def write_acknowledged() -> Reply | None:
            reply = await api.put(f"/bazar/update_price/{SEPARATED_BOOK}", {"price": acknowledged})
            return reply if reply.code == 200 else None

        await eventually(write_acknowledged, left(deadline), "a price update in the new epoch", interval=0.2)
        written = time.monotonic()
        await eventually(
            lambda: defer.succeed(any(r.price == acknowledged and r.started > written for r in reads)),
            left(deadline),
            "a read of the new price",
            interval=0.05,
        )
        say(
            f"{taken_over[0]} sequences in epoch {taken_over[1]} {took_over - cut:.2f}s after the cut; "
            f"a price update there acknowledged {written - cut:.2f}s after it"
        )
    finally:
        stop.append(True)
        results = await defer.DeferredList(readers, consumeErrors=True)
        for follower in separated:
            network.rejoin(sequencer, follower)
    errors = [result for ok, result in results if not ok]
    assert not errors, errors[0]

    final = await eventually(lambda: converged(api), left(deadline), "every replica to agree again")
    rows = {r["name"]: r for r in final["replicas"] if r["role"] == "catalog"}
    assert {r["sequencer"] for r in rows.values()} == {taken_over[0]}, rows
    books = await api.on_each(CATALOGS, f"/catalog/books/{SEPARATED_BOOK}")
    assert {name: b["price"] for name, b in books.items()} == dict.fromkeys(CATALOGS, acknowledged), books

    in_window = [r for r in reads if r.price == lost]
    after = [r for r in reads if r.started >= refused]
    failed = [r for r in reads if r.code != 200]
    served = Counter((r.replica if r.cache != "hit" else "cache") for r in after)
    during = [r for r in reads if r.started < refused]
    say(
        f"{len(reads)} reads, {len(in_window)} of which showed the refused price; {len(during)} while it "
        f"was under way; after the 503, {len(after)} reads answered by {dict(served)}; "
        f"{len(failed)} failed; all agree again (epoch {taken_over[1]})"
    )
    assert in_window == [], f"{len(in_window)} reads showed the refused price, e.g. {in_window[:3]}"
    assert failed == [], f"{len(failed)} reads failed, e.g. {failed[:3]}"


BATCHED_BOOK = 5  # bought by this test alone: each_order_once counts its orders


@pytest_twisted.ensureDeferred
async def test_sequencers_cut_off_mid_batch(
    hosts: netns.HostCluster, api: netns.HostApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """Batched purchases (``test_failover.batched_buys_through``); the order sequencer, then
    the catalog sequencer, cut off from its followers (not from the front end) as soon as it
    shows batches of more than one: its batches under way miss their majority, the followers
    elect another, purchases are acknowledged again there, and the links come back. Once the
    purchases in doubt are retried with their keys, every acknowledged order is on every order
    replica exactly once and the stock is conserved on every catalog replica."""
    network = hosts.network
    await eventually(lambda: converged(api), CUT_SECONDS, "the replicas to agree first")

    async def separate(buyers: Buyers, old: str, members: tuple[str, ...]) -> str:
        separated = []
        try:
            for follower in members:
                if follower != old:
                    network.separate(old, follower)
                    separated.append(follower)
            new, epoch = await elected(api, old, members)
            await buyers.acknowledged_again(f"{old} was cut off")
        finally:
            for follower in separated:
                network.rejoin(old, follower)
        return f"cut off until {new} took over in epoch {epoch}"

    _, seen = await batched_buys_through(api, separate, BATCHED_BOOK)
    with capsys.disabled():
        print("\n[netns] " + "; ".join(seen))

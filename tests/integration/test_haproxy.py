"""Two front ends on two hosts behind HAProxy (``etc/haproxy.cfg``), each process in a network
namespace of its own (``tests/integration/netns.py``); HAProxy in one more.

* ``test_haproxy_spreads_requests_over_both_hosts``: reads through HAProxy are answered by
  both front ends (``X-Bazar-Frontend``).
* ``test_a_write_through_one_is_never_read_stale_through_the_other``: prices written through
  frontend-1 while readers read through frontend-2 and through HAProxy: no read older than an
  acknowledged write (``tests.history``), hits and misses both seen at frontend-2.
* ``test_a_frontend_cut_off_from_the_sequencer_serves_nothing_cached``: only the link between
  frontend-1 and the catalog sequencer is cut (clients still reach it). Once its lease has run
  out it answers no read from its cache (no hit; its hit counter stands still), though a
  price is changed through frontend-2 meanwhile; plugged back, it serves hits again, of the
  new price.
* ``test_a_killed_frontend_is_taken_out_by_the_health_check``: frontend-2 is SIGKILLed (its
  process group); requests through HAProxy go on succeeding, HAProxy's log says its health
  check took frontend-2 out, and once frontend-2 is restarted, put back in.

Skipped where network namespaces cannot be used, or HAProxy is not installed (Debian:
``apt-get install haproxy``; ``.ci/run`` installs it). Everything started (the cluster and
HAProxy, by pid, their process groups killed if need be) and the namespaces are removed by the
module fixture on every path, failure included.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import defer

from bazar.launch import START_TIMEOUT, Process, StartError, holds_its_leases, wait_for
from bazar.leases import LEASE_TERM
from bazar.protocol import SECRET_HEADER
from tests.history import History
from tests.integration import netns
from tests.integration.api import TRANSPORT_ERRORS, Reply, eventually, request, sleep

pytestmark = pytest.mark.integration

HAPROXY_CONFIG = Path(__file__).resolve().parents[2] / "etc" / "haproxy.cfg"
FRONTENDS = ("frontend-1", "frontend-2")
SEQUENCER = "catalog-1"
READY_SECONDS = 30.0  # every front end holding its leases, HAProxy seeing both up
STATE_SECONDS = 15.0  # HAProxy taking a server out, or putting it back
HEADER = "X-Bazar-Frontend"


def haproxy_config(template: str, bind: str, servers: dict[str, str]) -> str:
    """``template`` (etc/haproxy.cfg) with its ``bind`` line on ``bind`` and its ``server``
    lines replaced by one per ``servers`` entry (name: address:port), as checked as written."""
    lines, placed = [], False
    for line in template.splitlines():
        stripped = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if stripped.startswith("bind "):
            lines.append(f"{indent}bind {bind}")
        elif stripped.startswith("server "):
            if not placed:
                lines += [f"{indent}server {name} {address} check" for name, address in servers.items()]
                placed = True
        else:
            lines.append(line)
    assert placed, "no server line in the template"
    return "\n".join(lines) + "\n"


@dataclass
class Balanced:
    """The cluster, and HAProxy in front of its two front ends."""

    cluster: netns.HostCluster
    haproxy: Process | None = None

    @property
    def url(self) -> str:
        return self.cluster.url(netns.BALANCER)

    def log(self) -> str:
        assert self.haproxy is not None
        return self.haproxy.log_path.read_text(errors="replace")

    def start_haproxy(self) -> None:
        network, directory = self.cluster.network, self.cluster.directory
        servers = {name: f"{network.address(name)}:{network.hosts[name][2]}" for name in FRONTENDS}
        port = network.hosts[netns.BALANCER][2]
        bind = f"{network.address(netns.BALANCER)}:{port}"
        config = directory / "haproxy.cfg"
        config.write_text(haproxy_config(HAPROXY_CONFIG.read_text(), bind, servers))
        namespace = network.namespace(netns.BALANCER)
        command = ["ip", "netns", "exec", namespace, "haproxy", "-db", "-f", str(config)]
        haproxy = self.haproxy = self.cluster.started.start("haproxy", command)

        def listening() -> bool:
            if not haproxy.running():
                raise StartError(f"HAProxy exited:\n{haproxy.log_tail()}")
            try:
                socket.create_connection((network.address(netns.BALANCER), port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(listening, START_TIMEOUT, "HAProxy to listen")


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balanced]:
    """Seven namespaces for the cluster (two front ends), one for HAProxy; afterwards every
    process stopped by pid and the network deleted, whatever happened."""
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(reason)
    if shutil.which("haproxy") is None:
        pytest.skip("HAProxy is not installed (Debian: apt-get install haproxy)")
    network = netns.Network(hosts=dict(netns.BALANCED_HOSTS))
    cluster = netns.HostCluster(network, tmp_path_factory.mktemp("haproxy"), names=list(netns.TWO_FRONTENDS))
    balanced = Balanced(cluster)
    with netns.running(cluster, then=balanced.start_haproxy):  # HAProxy stopped with the cluster
        yield balanced


async def call(http: HTTPClient, balanced: Balanced, method: str, url: str, **kwargs: Any) -> Reply:
    return await request(http, method, url, allowed=balanced.cluster.allows, **kwargs)


async def leases_held(http: HTTPClient, balanced: Balanced) -> bool:
    """Whether both front ends hold every lease (``/bazar/cluster`` at frontend-2; that each
    sees every replica up, ``HostCluster.wait_healthy`` waited for)."""
    reply = await call(http, balanced, "GET", balanced.cluster.url(FRONTENDS[-1]) + "/bazar/cluster")
    frontends = reply.body.get("frontends", []) if reply.code == 200 else []
    held = [f for f in frontends if holds_its_leases(f)]
    return len(held) == len(FRONTENDS)


async def served_by(http: HTTPClient, balanced: Balanced, count: int) -> list[str]:
    """``count`` reads through HAProxy, each of which must succeed: who served each."""
    names = []
    for _ in range(count):
        reply = await call(http, balanced, "GET", balanced.url + "/bazar/info/1", raw=True)
        assert reply.code == 200, reply
        names.append(reply.header(HEADER) or "")
    return names


async def ready(http: HTTPClient, balanced: Balanced) -> None:
    """Both front ends hold their leases, and HAProxy sends reads to both."""
    await eventually(lambda: leases_held(http, balanced), READY_SECONDS, "both front ends' leases")

    async def both() -> bool:
        try:
            return set(await served_by(http, balanced, 6)) == set(FRONTENDS)
        except AssertionError:  # HAProxy has not seen it up yet (503)
            return False

    await eventually(both, READY_SECONDS, "HAProxy to send reads to both front ends")


async def cache_counts(http: HTTPClient, balanced: Balanced, frontend: str) -> dict[str, int]:
    """A front end's ``bazar_cache_hits`` and ``bazar_cache_misses`` (its /metrics)."""
    url = balanced.cluster.url(frontend) + "/metrics"
    reply = await call(http, balanced, "GET", url, headers={SECRET_HEADER: balanced.cluster.secret}, raw=True)
    assert reply.code == 200, reply
    counts = {}
    for kind in ("hits", "misses"):
        found = re.search(rf"^bazar_cache_{kind}(?:_total)?(?:{{[^}}]*}})? ([0-9.e+]+)$", reply.body, re.M)
        assert found, (kind, reply.body[:2000])
        counts[kind] = int(float(found.group(1)))
    return counts


async def catalog_lease_lapsed(http: HTTPClient, balanced: Balanced, frontend: str) -> bool:
    """Whether a front end's catalog cache lease has run out (its ``bazar_cache_lease_valid``)."""
    url = balanced.cluster.url(frontend) + "/metrics"
    reply = await call(http, balanced, "GET", url, headers={SECRET_HEADER: balanced.cluster.secret}, raw=True)
    assert reply.code == 200, reply
    found = re.search(r'^bazar_cache_lease_valid{[^}]*role="catalog"[^}]*} ([0-9.e+]+)$', reply.body, re.M)
    assert found, reply.body[:2000]
    return float(found.group(1)) == 0


# -- the tests -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_haproxy_spreads_requests_over_both_hosts(http: HTTPClient, balanced: Balanced) -> None:
    assert all(balanced.cluster.in_its_namespace(name) for name in FRONTENDS)
    await ready(http, balanced)
    names = await served_by(http, balanced, 20)
    # Round robin: each of the two serves about half (some checks' timing aside).
    assert set(names) == set(FRONTENDS), names
    assert min(names.count(n) for n in FRONTENDS) >= 5, names


@pytest_twisted.ensureDeferred
async def test_a_write_through_one_is_never_read_stale_through_the_other(
    http: HTTPClient, balanced: Balanced
) -> None:
    """A writer through frontend-1; two readers at frontend-2 and two through HAProxy."""
    await ready(http, balanced)
    book, writes, history, writing = 2, 25, History(), True
    price_url = balanced.cluster.url("frontend-1") + f"/bazar/update_price/{book}"

    async def write(price: int) -> None:
        started = History.now()
        reply = await call(http, balanced, "PUT", price_url, body={"price": price})
        assert (reply.code, reply.header(HEADER)) == (200, "frontend-1"), reply
        history.write("price", price, started)

    async def reader(url: str) -> None:
        while writing:
            started = History.now()
            reply = await call(http, balanced, "GET", url + f"/bazar/info/{book}")
            assert reply.code == 200, reply
            note = f"{reply.header(HEADER)} {reply.header('X-Bazar-Cache')}"
            history.read("price", reply.body["price"], started, note=note)

    async def writer() -> None:
        for price in range(1, writes + 1):
            await write(price)
            await sleep(0.05)  # time for reads to fill the caches between writes

    await write(0)  # acknowledged before any reader starts
    urls = [balanced.cluster.url("frontend-2")] * 2 + [balanced.url] * 2
    reading = [defer.ensureDeferred(reader(url)) for url in urls]
    try:
        await writer()
    finally:
        writing = False
        await defer.gatherResults(reading, consumeErrors=True)

    history.assert_no_stale_reads()
    notes = {r.note for r in history.reads_after(1)}
    assert {"frontend-2 hit", "frontend-2 miss"} <= notes, notes  # not vacuous: its cache was used
    assert "frontend-1 hit" in notes or "frontend-1 miss" in notes, notes  # HAProxy sent some to frontend-1


@pytest_twisted.ensureDeferred
async def test_a_frontend_cut_off_from_the_sequencer_serves_nothing_cached(
    http: HTTPClient, balanced: Balanced, capsys: pytest.CaptureFixture[str]
) -> None:
    await ready(http, balanced)
    network, book = balanced.cluster.network, 4
    cut_off = balanced.cluster.url("frontend-1") + f"/bazar/info/{book}"
    price_url = balanced.cluster.url("frontend-2") + f"/bazar/update_price/{book}"

    async def read() -> Reply:
        return await call(http, balanced, "GET", cut_off, timeout=10)

    async def hit() -> bool:
        return (await read()).header("X-Bazar-Cache") == "hit"

    await eventually(hit, 10, f"a hit for book {book} at frontend-1")
    old = (await read()).body["price"]
    network.separate("frontend-1", SEQUENCER)
    rejoined = False
    try:
        await eventually(
            lambda: catalog_lease_lapsed(http, balanced, "frontend-1"), LEASE_TERM + 5, "its lease to run out"
        )
        before = await cache_counts(http, balanced, "frontend-1")
        new = round(old + 3.5, 2)
        written = await call(http, balanced, "PUT", price_url, body={"price": new})
        assert written.code == 200, written  # acknowledged without frontend-1 (its lease is out)
        reads = [await read() for _ in range(10)]
        after = await cache_counts(http, balanced, "frontend-1")
        # No answer from its cache, and no error: each is a miss with the new price, read from a
        # follower under its read lease (bazar.leases), since the sequencer is out of reach.
        assert all(r.code == 200 and r.header("X-Bazar-Cache") != "hit" for r in reads), reads
        assert all(r.body["price"] == new for r in reads), reads
        assert after["hits"] == before["hits"], (before, after)
        network.rejoin("frontend-1", SEQUENCER)
        rejoined = True
        started = time.monotonic()
        await eventually(hit, 20, f"a hit for book {book} at frontend-1 again")
        back = time.monotonic() - started
        again = await read()
        assert (again.header("X-Bazar-Cache"), again.body["price"]) == ("hit", new), again
        assert (await cache_counts(http, balanced, "frontend-1"))["hits"] > after["hits"]
    finally:
        if not rejoined:
            network.rejoin("frontend-1", SEQUENCER)
    codes = sorted({r.code for r in reads})
    misses = after["misses"] - before["misses"]
    with capsys.disabled():
        print(f"\n[haproxy] frontend-1 cut off from {SEQUENCER}: its reads answered {codes}, {misses} misses")
        print(f"[haproxy] no hit while cut off; hits again {back:.1f}s after the link was back")


@pytest_twisted.ensureDeferred
async def test_a_killed_frontend_is_taken_out_by_the_health_check(
    http: HTTPClient, balanced: Balanced, capsys: pytest.CaptureFixture[str]
) -> None:
    await ready(http, balanced)
    victim = balanced.cluster.processes["frontend-2"]
    victim.kill_group()  # SIGKILL to its process group; reaped
    balanced.cluster.started.started.remove(victim)  # killed on purpose: not an unclean stop
    killed = time.monotonic()
    failed: list[Any] = []
    names: list[str] = []

    async def taken_out() -> bool:
        try:
            names.extend(await served_by(http, balanced, 5))
        except (AssertionError, *TRANSPORT_ERRORS) as e:
            failed.append(e)
        return "frontend-2 is DOWN" in balanced.log()

    await eventually(taken_out, STATE_SECONDS, "HAProxy to take frontend-2 out")
    out = time.monotonic() - killed
    # Every request succeeded meanwhile: one sent to the dead front end was refused before
    # anything was sent, and HAProxy sent it to frontend-1 instead.
    assert not failed, failed
    after = await served_by(http, balanced, 20)
    assert set(after) == {"frontend-1"}, after

    balanced.cluster.start_one("frontend-2", log_name="frontend-2.restarted")
    await eventually(
        lambda: defer.succeed("frontend-2 is UP" in balanced.log()), READY_SECONDS, "frontend-2 put back"
    )
    await ready(http, balanced)
    with capsys.disabled():
        print(
            f"\n[haproxy] frontend-2 taken out {out:.1f}s after the kill; "
            f"{len(names)} requests meanwhile, all 200"
        )

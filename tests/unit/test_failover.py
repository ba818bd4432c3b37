"""Tests for sequencer failover (``bazar.failover``) and what it relies on.

* The store: ``save_epoch`` is durable, ``wipe`` forgets every write (not the epoch) and
  seeds anew, ``entry_at``.
* ``Role`` and its election rules over a fake ``ReplicaClient`` (``FakeClient``), and the
  sequencer's quorum over fake followers.
* ``Trio``: three real catalog replicas (CatalogApp, Role, Watchdog) behind one
  ``treq.testing.StubTreq``, on a ``task.Clock``: their real /internal/status, /elect,
  /replicate and /log handlers answer each other. A replica can be *isolated*: it drops
  every request it gets (as ``MemCluster.unreachable`` does) and none it sends leaves.
  With it: elections, fencing of a replaced sequencer, and the check of a follower's log.
* The internal endpoints that elections and fencing use.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bazar import config as bazar_config
from bazar import follower_link
from bazar.assembly import build_frontend
from bazar.catalog.store import SEED_BOOKS, CatalogStore
from bazar.client import ReplicaClient, ReplicaResponse
from bazar.config import Config, Replica
from bazar.errors import NotSent, Unavailable
from bazar.failover import ELECTION_CHECK, ELECTION_TIMEOUT, STARTUP_GRACE, Role, Watchdog, majority
from bazar.follower_link import REPLICATION_TIMEOUT, FollowerLink
from bazar.invalidation import PUSH_TIMEOUT
from bazar.leases import LEASE_TERM, VOTE_GUARD
from bazar.order.store import OrderStore
from bazar.protocol import REPLICATE_PATH
from bazar.replication import HEARTBEAT_INTERVAL, Sequencer
from bazar.runners import InlineRunner
from bazar.storage import Entry, ReplicatedStore
from tests.unit.memnet import Held, MemNetwork

SECRET = "failover-secret"
STEP = 0.25  # seconds the clock moves between flushes (heartbeats and checks: every 0.5 s)
MAX_FLUSHES = 100

C1, C2, C3 = "catalog-1", "catalog-2", "catalog-3"
PORTS = {C1: 5101, C2: 5102, C3: 5103}


def make_config(order: tuple[str, ...] = (C1, C2, C3)) -> Config:
    """Three catalog replicas in config order ``order``."""
    catalog = [{"name": n, "listen": f"tcp:{PORTS[n]}", "url": f"http://127.0.0.1:{PORTS[n]}"} for n in order]
    return bazar_config.parse(
        {"cluster": {"secret": SECRET, "data_dir": "unused"}, "catalog": catalog}, source="test_failover"
    )


CONFIG = make_config()
REPLICAS = {r.name: r for r in CONFIG.catalog}


def new_store(path: str = ":memory:") -> CatalogStore:
    store = CatalogStore(InlineRunner(path))
    result = []
    store.setup().addBoth(result.append)
    assert result == [None], result
    return store


def meta(store: ReplicatedStore, key: str) -> Any:
    """``key`` as the database holds it, read afresh."""
    d = store.runner.runInteraction(lambda txn: ReplicatedStore._meta(txn, key))
    result: list[Any] = []
    d.addBoth(result.append)
    return result[0]


def answer(code: int, body: Any, name: str = "") -> ReplicaResponse:
    return ReplicaResponse(code, json.dumps(body).encode(), name)


def status(name: str, epoch: int, sequencer: str, last_seq: int) -> ReplicaResponse:
    return answer(200, {"name": name, "epoch": epoch, "sequencer": sequencer, "last_seq": last_seq}, name)


# -- a fake ReplicaClient --------------------------------------------------------------


@dataclass
class Sent:
    method: str
    to: str
    path: str
    body: Any


Handler = Callable[[str, str, str, Any], Any]


class FakeClient:
    """Answers each request with ``handler(method, to, path, body)``: a ReplicaResponse, an
    exception (the request fails with it) or a Deferred. Records every request."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.sent: list[Sent] = []
        self.handler: Handler = handler or (lambda method, to, path, body: NotSent(f"{to} is down"))

    def request(
        self, method: str, replica: Replica, path: str, body: Any = None, timeout: float | None = None
    ) -> Deferred[ReplicaResponse]:
        self.sent.append(Sent(method, replica.name, path, body))
        result = self.handler(method, replica.name, path, body)
        if isinstance(result, Deferred):
            return result
        if isinstance(result, BaseException):
            return fail(result)
        return succeed(result)

    def to(self, path: str) -> list[Sent]:
        return [s for s in self.sent if s.path.split("?")[0] == path]


# -- three real replicas behind one StubTreq -----------------------------------------


class NoJitter(Random):
    """Every election timeout exactly ELECTION_TIMEOUT, so that tests can time elections."""

    def random(self) -> float:
        return 0.0


class IsolatableClient(ReplicaClient):
    """A replica's own client: nothing leaves while its replica is isolated, or to a replica
    it is cut off from."""

    def __init__(
        self,
        http: Any,
        clock: Clock,
        name: str,
        isolated: set[str],
        cuts: set[frozenset[str]],
        paused: dict[str, list[Callable[[], None]]],
        blocked: set[tuple[str, str, str]] | None = None,
    ) -> None:
        super().__init__(http, SECRET, clock)
        self.name = name
        self.isolated = isolated
        self.cuts = cuts
        self.paused = paused
        self.blocked = blocked if blocked is not None else set()

    def request(
        self, method: str, replica: Replica, path: str, body: Any = None, timeout: float | None = None
    ) -> Any:
        if (
            self.name in self.isolated
            or frozenset((self.name, replica.name)) in self.cuts
            or (self.name, replica.name, path) in self.blocked
        ):
            return fail(NotSent(f"{self.name} is cut off from {replica.name}"))
        if self.name in self.paused:
            # A paused process sends nothing; what it meant to send leaves when it resumes
            # (and its deadline counts from then, as a stopped process's timers do).
            sent: Deferred[Any] = Deferred()
            self.paused[self.name].append(
                lambda: (
                    super(IsolatableClient, self)
                    .request(method, replica, path, body, timeout)
                    .chainDeferred(sent)
                )
            )
            return sent
        return super().request(method, replica, path, body, timeout)


class Trio:
    """Three catalog replicas built as the catalog tap builds one (``bazar.assembly``), with a
    front end for their invalidations (its probe not started), on one in-memory network
    (``tests.unit.memnet``). ``start()`` starts each replica's services, as twistd would."""

    def __init__(self, test: SynchronousTestCase, config: Config = CONFIG) -> None:
        self.test = test
        self.config = config
        self.clock = Clock()
        self.net = MemNetwork()
        self.dispatch = self.net.dispatch
        self.outside = ReplicaClient(self.net.http, SECRET, self.clock)  # an operator, never isolated
        self.frontend = build_frontend(config, self.outside, self.clock)
        self.net.add(config.frontend, self.frontend.resource)
        self.stores: dict[str, CatalogStore] = {}
        self.roles: dict[str, Role] = {}
        self.services = MultiService()
        self.wipes: Counter[str] = Counter()
        self.cuts: set[frozenset[str]] = set()
        self.outbox: dict[str, list[Callable[[], None]]] = {}  # what paused replicas would send
        self.blocked: set[tuple[str, str, str]] = set()  # (from, to, path) that never leaves
        for replica in config.catalog:
            store = new_store()
            test.addCleanup(store.close)
            self._count_wipes(replica.name, store)
            client = IsolatableClient(
                self.net.http,
                self.clock,
                replica.name,
                self.dispatch.unreachable,
                self.cuts,
                self.outbox,
                self.blocked,
            )
            process = self.net.add_replica(config, replica.name, store, client, self.clock, NoJitter())
            self.stores[replica.name] = store
            self.roles[replica.name] = process.role
            for service in process.services:
                service.setServiceParent(self.services)
        test.addCleanup(self.stop)

    def _count_wipes(self, name: str, store: CatalogStore) -> None:
        wipe = store.wipe

        def counted() -> Deferred[None]:
            self.wipes[name] += 1
            return wipe()

        store.wipe = counted  # type: ignore[method-assign]

    def start(self) -> None:
        self.services.startService()
        self.flush()

    def stop(self) -> None:
        if self.services.running:
            self.services.stopService()

    # -- time and the network -------------------------------------------------------

    def flush(self) -> None:
        for _ in range(MAX_FLUSHES):
            if not self.net.flush():
                return

    def run(self, seconds: float) -> None:
        """Advance the clock ``seconds``, a STEP at a time, delivering everything in between."""
        for _ in range(max(1, round(seconds / STEP))):
            self.clock.advance(STEP)
            self.flush()

    def isolate(self, name: str, cut: bool = True) -> None:
        if cut:
            self.dispatch.unreachable.add(name)
        else:
            self.dispatch.unreachable.discard(name)

    def pause(self, name: str) -> None:
        """As SIGSTOP: ``name`` reads nothing sent to it and sends nothing until ``resume``.
        (Its timers still fire meanwhile; what they would send waits, as above.)"""
        self.dispatch.paused[name] = []
        self.outbox[name] = []

    def resume(self, name: str) -> None:
        """``name`` reads what reached it meanwhile, then sends what it meant to (delivered
        with the next flush, together with whatever else is sent meanwhile)."""
        self.dispatch.resume(name)
        for send in self.outbox.pop(name):
            send()

    def replaced(self, old: str) -> str:
        """Run until another replica than ``old`` leads (at most 4 election timeouts); its name."""
        for _ in range(round(4 * ELECTION_TIMEOUT / STEP)):
            self.run(STEP)
            if self.leaders() != [old]:
                break
        (new,) = [name for name in self.leaders() if name != old]
        return new

    def cut(self, a: str, b: str) -> None:
        """No request between ``a`` and ``b`` either way (each still reaches the third)."""
        self.cuts.add(frozenset((a, b)))

    def block(self, sender: str, to: str, path: str) -> None:
        """``sender``'s requests for ``path`` to ``to`` never leave (all else goes through)."""
        self.blocked.add((sender, to, path))

    def hold_next(self, name: str) -> Held:
        """``name`` answers its next request at once, but the answer leaves on release()."""
        held = self.dispatch.holds[name] = Held(self, name)  # type: ignore[arg-type]
        return held

    def call(self, method: str, to: str, path: str, body: Any = None) -> ReplicaResponse:
        """A request to replica ``to`` with the secret, answered (a write may wait out the read
        lease of a follower it cannot reach: the clock moves on then, a lease term at most)."""
        d = self.outside.request(method, self.replica(to), path, body)
        self.flush()
        for _ in range(round(LEASE_TERM / STEP) + 1):
            if d.called:
                break
            self.run(STEP)
        return self.test.successResultOf(d)

    def write_price(self, to: str, book: int, price: float) -> ReplicaResponse:
        return self.call("PUT", to, f"/catalog/books/{book}/price", {"price": price})

    def read_price(self, book: int, frontend: str = "frontend") -> float:
        """The price of ``book`` through a front end (its misses wait a turn of the clock)."""
        d = self.outside.request("GET", self.replica(frontend), f"/bazar/info/{book}")
        self.run(STEP)
        response: ReplicaResponse = self.test.successResultOf(d)
        self.test.assertEqual(response.code, 200, response.body)
        return float(response.json()["price"])

    # -- looking inside ---------------------------------------------------------------

    def replica(self, name: str) -> Replica:
        return next(r for r in (*self.config.catalog, *self.config.frontends) if r.name == name)

    def served(self, name: str, method: str, path: str) -> int:
        """How many ``method path`` requests ``name`` received (and answered)."""
        return sum(1 for s in self.dispatch.seen if (s.name, s.method, s.path) == (name, method, path))

    def elect_requests(self) -> list[str]:
        """Who received a POST /internal/elect, in order."""
        return [s.name for s in self.dispatch.seen if (s.method, s.path) == ("POST", "/internal/elect")]

    def leaders(self) -> list[str]:
        return [name for name, role in self.roles.items() if role.writer is not None]

    def epochs(self) -> dict[str, tuple[int, str]]:
        return {name: (role.epoch, role.sequencer.name) for name, role in self.roles.items()}

    def state(self, name: str) -> dict[str, Any]:
        return self.test.successResultOf(self.stores[name].status())

    def price(self, name: str, book: int) -> float:
        return self.stores[name].book(book)["price"]

    def entry_at(self, name: str, seq: int) -> Entry | None:
        return self.test.successResultOf(self.stores[name].entry_at(seq))


class FailoverTestCase(SynchronousTestCase):
    def assertSameData(self, trio: Trio, *names: str) -> None:
        """Equal last_seq, digest and log on every replica named."""
        first, *rest = names
        for name in rest:
            self.assertEqual(trio.state(name), trio.state(first), name)
            self.assertEqual(
                self.successResultOf(trio.stores[name].entries_after(0)),
                self.successResultOf(trio.stores[first].entries_after(0)),
                name,
            )


# -- 1. storage -------------------------------------------------------------------------


class EpochStorageTests(FailoverTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bazar-failover-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = str(Path(self.dir) / "catalog.sqlite")

    def open(self) -> CatalogStore:
        store = new_store(self.path)
        self.addCleanup(store.close)
        return store

    def test_nothing_recorded(self) -> None:
        """A new database records no epoch: 0 and no sequencer."""
        store = self.open()
        self.assertEqual((store.epoch, store.epoch_sequencer), (0, None))

    def test_save_epoch_survives_reopening(self) -> None:
        """save_epoch is in the file: another store on it reads it back at setup."""
        store = self.open()
        self.assertIsNone(self.successResultOf(store.save_epoch(3, C2)))
        self.assertEqual((store.epoch, store.epoch_sequencer), (3, C2))
        store.close()
        again = self.open()
        self.assertEqual((again.epoch, again.epoch_sequencer), (3, C2))

    def test_save_epoch_replaces(self) -> None:
        """The last saved epoch and sequencer are the ones read back."""
        store = self.open()
        self.successResultOf(store.save_epoch(2, C2))
        self.successResultOf(store.save_epoch(5, C3))
        store.close()
        again = self.open()
        self.assertEqual((again.epoch, again.epoch_sequencer), (5, C3))

    def test_wipe_forgets_writes_and_reseeds(self) -> None:
        """After wipe: no log, no data change, no idempotency key; the digest, rows and topics
        of a fresh store."""
        store = self.open()
        self.successResultOf(store.set_price(1, 5.5))
        self.successResultOf(store.buy(2, 3, key="k-1"))
        self.successResultOf(store.add_quantity(6, 4))
        fresh = new_store()
        self.addCleanup(fresh.close)
        self.assertNotEqual(self.successResultOf(store.status()), self.successResultOf(fresh.status()))

        self.assertIsNone(self.successResultOf(store.wipe()))

        self.assertEqual(store.applied_seq, 0)
        self.assertEqual(self.successResultOf(store.entries_after(0)), [])
        self.assertEqual(self.successResultOf(store.status()), self.successResultOf(fresh.status()))
        self.assertEqual(self.successResultOf(store.all_books()), self.successResultOf(fresh.all_books()))
        self.assertEqual(self.successResultOf(store.row_count()), len(SEED_BOOKS))
        self.assertEqual(
            self.successResultOf(store.recompute_digest()), self.successResultOf(store.status())["digest"]
        )
        topics = "SELECT topic, books FROM topics ORDER BY topic"
        self.assertEqual(
            self.successResultOf(store.runner.runInteraction(lambda txn: txn.execute(topics).fetchall())),
            self.successResultOf(fresh.runner.runInteraction(lambda txn: txn.execute(topics).fetchall())),
        )
        # The key is forgotten: the same purchase is a new write, not a replay of the old one.
        seq, _ = self.successResultOf(store.buy(2, 3, key="k-1"))
        self.assertEqual(seq, 1)

    def test_wipe_keeps_the_epoch(self) -> None:
        """wipe keeps the recorded epoch, in memory and in the file."""
        store = self.open()
        self.successResultOf(store.save_epoch(4, C3))
        self.successResultOf(store.set_price(0, 1.0))
        self.successResultOf(store.wipe())
        self.assertEqual((store.epoch, store.epoch_sequencer), (4, C3))
        store.close()
        again = self.open()
        self.assertEqual((again.epoch, again.epoch_sequencer), (4, C3))
        self.assertEqual(again.applied_seq, 0)

    def test_wipe_records_how_far_the_log_went_until_caught_up(self) -> None:
        """wipe records the last sequence number it forgot (the larger of two wipes before a
        catch-up), in memory and in the file; caught_up clears it, in the file too."""
        store = self.open()
        self.assertEqual(store.forgot_up_to, 0)
        for book in (0, 1, 2):
            self.successResultOf(store.set_price(book, 1.0))
        self.successResultOf(store.wipe())
        self.assertEqual(store.forgot_up_to, 3)
        self.successResultOf(store.set_price(0, 2.0))
        self.successResultOf(store.wipe())  # caught up to 1 only, then forgot again
        self.assertEqual(store.forgot_up_to, 3)
        store.close()
        again = self.open()
        self.assertEqual((again.forgot_up_to, again.applied_seq), (3, 0))
        self.successResultOf(again.caught_up())
        self.assertEqual(again.forgot_up_to, 0)
        again.close()
        self.assertEqual(self.open().forgot_up_to, 0)

    def test_wipe_order_store(self) -> None:
        """An order store forgets its orders too and matches a fresh one."""
        store = OrderStore(InlineRunner())
        fresh = OrderStore(InlineRunner())
        for s in (store, fresh):
            self.addCleanup(s.close)
            self.successResultOf(s.setup())
        self.successResultOf(store.record(1, "RPCs for Noobs.", 22.35, 2, key="k"))
        self.successResultOf(store.wipe())
        self.assertEqual(self.successResultOf(store.all_orders()), [])
        self.assertEqual(self.successResultOf(store.status()), self.successResultOf(fresh.status()))
        self.assertEqual(self.successResultOf(store.record(1, "RPCs for Noobs.", 22.35, 2, key="k"))[0], 1)

    def test_entry_at(self) -> None:
        """entry_at: the logged entry at that sequence number, None where there is none."""
        store = self.open()
        _, first = self.successResultOf(store.set_price(1, 5.5))
        _, second = self.successResultOf(store.set_quantity(2, 9))
        self.assertEqual(self.successResultOf(store.entry_at(1)), first)
        self.assertEqual(self.successResultOf(store.entry_at(2)), second)
        self.assertEqual(self.successResultOf(store.entry_at(2))["book"]["quantity"], 9)
        self.assertIsNone(self.successResultOf(store.entry_at(0)))
        self.assertIsNone(self.successResultOf(store.entry_at(3)))


# -- 2. Role at start ---------------------------------------------------------------------


class RoleStartTests(FailoverTestCase):
    def role(self, name: str, store: CatalogStore | None = None, client: Any = None) -> Role:
        store = store or new_store()
        self.addCleanup(store.close)
        role = Role(REPLICAS[name], CONFIG.catalog, store, client or FakeClient(), None, Clock())
        self.addCleanup(role.stop)
        return role

    def recorded(self, epoch: int, sequencer: str) -> CatalogStore:
        store = new_store()
        self.successResultOf(store.save_epoch(epoch, sequencer))
        return store

    def test_majority(self) -> None:
        """More than half: 1 of 1, 2 of 2, 2 of 3, 3 of 4, 3 of 5."""
        self.assertEqual([majority(n) for n in (1, 2, 3, 4, 5)], [1, 2, 2, 3, 3])

    def test_nothing_recorded(self) -> None:
        """Epoch 1, sequenced by the config's first replica."""
        role = self.role(C2)
        self.assertEqual((role.epoch, role.sequencer.name), (1, C1))
        self.assertIsNone(role.writer)

    def test_nothing_recorded_follows_config_order(self) -> None:
        """With nothing recorded, the sequencer is the first replica of the config as written."""
        config = make_config((C3, C1, C2))
        store = new_store()
        self.addCleanup(store.close)
        role = Role(REPLICAS[C1], config.catalog, store, FakeClient(), None, Clock())
        self.assertEqual(role.sequencer.name, C3)

    def test_recorded_epoch(self) -> None:
        """The recorded epoch and sequencer are where a replica starts."""
        role = self.role(C1, self.recorded(4, C3))
        self.assertEqual((role.epoch, role.sequencer.name), (4, C3))
        self.assertEqual(role.verified_epoch, 4)

    def test_start_leads_only_when_recorded_sequencer(self) -> None:
        """start() leads on the recorded sequencer only; its links carry the epoch; quorum 2 of 3."""
        leading = {}
        for name in (C1, C2, C3):
            role = self.role(name, self.recorded(4, C3))
            role.start()
            leading[name] = role.writer is not None
            if name == C3:
                assert role.writer is not None and role.heartbeats is not None
                self.assertTrue(role.heartbeats.running)
                self.assertEqual(role.writer.quorum, 2)
                self.assertEqual(
                    [(link.follower.name, link.epoch) for link in role.writer.links],
                    [(C1, (4, C3)), (C2, (4, C3))],
                )
        self.assertEqual(leading, {C1: False, C2: False, C3: True})

    def test_start_fresh(self) -> None:
        """With nothing recorded, the config's first replica leads and heartbeats in epoch 1."""
        client = FakeClient()
        first, second = self.role(C1, client=client), self.role(C2)
        first.start()
        second.start()
        self.assertIsNotNone(first.writer)
        self.assertIsNone(second.writer)
        beats = client.to(REPLICATE_PATH)
        self.assertEqual(sorted(s.to for s in beats), [C2, C3])
        self.assertEqual({(s.body["epoch"], s.body["sequencer"]) for s in beats}, {(1, C1)})

    def test_stop_stops_leading(self) -> None:
        """stop(): no writer, no heartbeats."""
        role = self.role(C1)
        role.start()
        heartbeats = role.heartbeats
        assert heartbeats is not None
        role.stop()
        self.assertIsNone(role.writer)
        self.assertFalse(heartbeats.running)


# -- 3a. election rules, over a fake client -------------------------------------------


class ElectionRuleTests(FailoverTestCase):
    """The election as ``catalog-2`` (or ``catalog-3``) runs it, answers scripted per peer."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.statuses: dict[str, Any] = {}
        self.votes: dict[str, Any] = {}
        self.client = FakeClient(self.handle)

    def handle(self, method: str, to: str, path: str, body: Any) -> Any:
        if path == "/internal/status":
            return self.statuses.get(to, NotSent(f"{to} is down"))
        if path == "/internal/elect":
            return self.votes.get(to, answer(200, {"last_seq": 0, "epoch": body["epoch"]}, to))
        if path == REPLICATE_PATH:
            return answer(200, {"last_seq": body["last_seq"]}, to)
        return NotSent(f"unexpected {method} {path}")

    def role(self, name: str, writes: int = 0) -> Role:
        store = new_store()
        self.addCleanup(store.close)
        for i in range(writes):
            self.successResultOf(store.set_price(0, float(i)))
        role = Role(REPLICAS[name], CONFIG.catalog, store, self.client, None, self.clock)
        self.addCleanup(role.stop)
        return role

    def proposals(self) -> list[tuple[str, Any]]:
        """(to, {"epoch", "sequencer"}) of every proposal sent."""
        return [
            (s.to, {"epoch": s.body["epoch"], "sequencer": s.body["sequencer"]})
            for s in self.client.to("/internal/elect")
        ]

    def test_wins_a_tie_by_config_order(self) -> None:
        """Equal last_seq: catalog-2 (before catalog-3) proposes epoch 2 to the reachable peer
        only, and leads once it votes yes."""
        self.statuses[C3] = status(C3, 1, C1, 2)
        role = self.role(C2, writes=2)
        self.successResultOf(role.elect())
        self.assertEqual(self.proposals(), [(C3, {"epoch": 2, "sequencer": C2})])
        self.assertEqual((role.epoch, role.sequencer.name), (2, C2))
        self.assertIsNotNone(role.writer)
        self.assertEqual((role.store.epoch, role.store.epoch_sequencer), (2, C2))
        self.assertEqual(meta(role.store, "epoch"), 2)

    def test_non_voters_start_out_of_sync_and_the_front_end_is_told(self) -> None:
        """Elected by catalog-3 alone, catalog-2 starts with catalog-1 (silent, the old
        sequencer) out of sync and catalog-3 in sync, so that no write waits out a deadline
        for the old sequencer; and it tells the front end at once that it sequences writes."""
        self.statuses[C3] = status(C3, 1, C1, 2)
        silent: Deferred[Any] = Deferred()  # catalog-1's replication calls are never answered
        handle = self.handle
        self.client.handler = lambda method, to, path, body: (
            silent if (to, path) == (C1, REPLICATE_PATH) else handle(method, to, path, body)
        )
        notice = AnnounceNotice()
        store = new_store()
        self.addCleanup(store.close)
        for i in range(2):
            self.successResultOf(store.set_price(0, float(i)))
        role = Role(REPLICAS[C2], CONFIG.catalog, store, self.client, notice, self.clock)
        self.addCleanup(role.stop)
        self.successResultOf(role.elect())
        assert role.writer is not None
        self.assertEqual(
            {link.follower.name: link.in_sync for link in role.writer.links}, {C1: False, C3: True}
        )
        self.assertEqual(notice.announced, [(C2, 2)])

    def test_leader_from_its_recorded_epoch_presumes_every_follower_in_sync(self) -> None:
        """At start-up from a recorded epoch nobody voted: every follower is presumed in sync
        (writes wait for them) and nothing is announced."""
        notice = AnnounceNotice()
        store = new_store()
        self.addCleanup(store.close)
        role = Role(REPLICAS[C1], CONFIG.catalog, store, self.client, notice, self.clock)
        self.addCleanup(role.stop)
        role.start()
        assert role.writer is not None
        self.assertEqual([link.in_sync for link in role.writer.links], [True, True])
        self.assertEqual(notice.announced, [])

    def test_loses_a_tie_by_config_order(self) -> None:
        """Equal last_seq: catalog-3 leaves it to catalog-2 and proposes nothing."""
        self.statuses[C2] = status(C2, 1, C1, 2)
        role = self.role(C3, writes=2)
        self.successResultOf(role.elect())
        self.assertEqual(self.proposals(), [])
        self.assertEqual((role.epoch, role.sequencer.name, role.writer), (1, C1, None))

    def test_config_order_not_names_breaks_ties(self) -> None:
        """With catalog-3 listed before catalog-2, catalog-3 wins the tie."""
        config = make_config((C1, C3, C2))
        self.statuses[C2] = status(C2, 1, C1, 0)
        store = new_store()
        self.addCleanup(store.close)
        role = Role(REPLICAS[C3], config.catalog, store, self.client, None, self.clock)
        self.addCleanup(role.stop)
        self.successResultOf(role.elect())
        self.assertEqual(self.proposals(), [(C2, {"epoch": 2, "sequencer": C3})])
        self.assertIsNotNone(role.writer)

    def test_highest_last_seq_wins(self) -> None:
        """A reachable peer with a higher last_seq wins, though later in the config."""
        self.statuses[C3] = status(C3, 1, C1, 3)
        role = self.role(C2, writes=2)
        self.successResultOf(role.elect())
        self.assertEqual(self.proposals(), [])
        self.assertEqual((role.epoch, role.writer), (1, None))

    def test_own_higher_last_seq_wins(self) -> None:
        """catalog-3 with the higher last_seq proposes, though later in the config."""
        self.statuses[C2] = status(C2, 1, C1, 1)
        role = self.role(C3, writes=2)
        self.successResultOf(role.elect())
        self.assertEqual(self.proposals(), [(C2, {"epoch": 2, "sequencer": C3})])
        self.assertIsNotNone(role.writer)

    def test_a_replica_that_forgot_writes_does_not_stand(self) -> None:
        """catalog-2 forgot writes up to 2 and was not sent them again: though it wins the
        tie at last_seq 0 by config order, it proposes nothing."""
        self.statuses[C3] = status(C3, 1, C1, 0)
        role = self.role(C2, writes=2)
        self.successResultOf(role.store.wipe())
        self.successResultOf(role.elect())
        self.assertEqual(self.proposals(), [])
        self.assertEqual((role.epoch, role.writer), (1, None))

    def test_a_peer_that_forgot_writes_is_not_ranked(self) -> None:
        """catalog-2 reports it forgot writes up to 2: catalog-3, though later in the config,
        is the best candidate and proposes (with five replicas, two others could elect it)."""
        forgot = status(C2, 1, C1, 0)
        self.statuses[C2] = answer(200, {**forgot.json(), "forgot_up_to": 2}, C2)
        role = self.role(C3)
        self.successResultOf(role.elect())
        self.assertEqual(self.proposals(), [(C2, {"epoch": 2, "sequencer": C3})])

    def test_no_majority_reachable(self) -> None:
        """Both peers unreachable: no proposal, no change."""
        role = self.role(C2)
        self.successResultOf(role.elect())
        self.assertEqual(len(self.client.to("/internal/status")), 2)
        self.assertEqual(self.proposals(), [])
        self.assertEqual((role.epoch, role.writer, role.store.epoch), (1, None, 0))

    def test_vote_refused(self) -> None:
        """The only peer refuses (409): not elected, epoch unchanged, nothing recorded."""
        self.statuses[C3] = status(C3, 1, C1, 0)
        self.votes[C3] = answer(409, {"error": {"code": 409, "message": "not newer"}}, C3)
        role = self.role(C2)
        self.successResultOf(role.elect())
        self.assertEqual(len(self.proposals()), 1)
        self.assertEqual((role.epoch, role.sequencer.name, role.writer), (1, C1, None))
        self.assertEqual(role.store.epoch, 0)

    def test_vote_lost(self) -> None:
        """The only vote fails in transit: not elected."""
        self.statuses[C3] = status(C3, 1, C1, 0)
        self.votes[C3] = Unavailable("catalog-3 is unreachable")
        role = self.role(C2)
        self.successResultOf(role.elect())
        self.assertEqual((role.epoch, role.writer), (1, None))

    def test_sequencer_answers(self) -> None:
        """The sequencer answers its status: it counts as heard, and nobody is proposed."""
        self.statuses[C1] = status(C1, 1, C1, 0)
        self.statuses[C3] = status(C3, 1, C1, 0)
        role = self.role(C2)
        self.clock.advance(10)
        self.successResultOf(role.elect())
        self.assertEqual(self.proposals(), [])
        self.assertEqual(role.last_heard, 10)
        self.assertEqual((role.epoch, role.writer), (1, None))

    def test_newer_epoch_adopted(self) -> None:
        """A peer reports a newer epoch: adopt it (persisted), propose nothing."""
        self.statuses[C3] = status(C3, 3, C3, 0)
        role = self.role(C2, writes=5)
        self.clock.advance(10)
        self.successResultOf(role.elect())
        self.assertEqual(self.proposals(), [])
        self.assertEqual((role.epoch, role.sequencer.name, role.writer), (3, C3, None))
        self.assertEqual(role.last_heard, 10)
        self.assertEqual((meta(role.store, "epoch"), meta(role.store, "sequencer")), (3, C3))

    def test_one_election_at_a_time(self) -> None:
        """While an election waits for answers, another elect() sends nothing."""
        pending: Deferred[ReplicaResponse] = Deferred()
        self.statuses[C1] = pending
        self.statuses[C3] = status(C3, 1, C1, 0)
        role = self.role(C2)
        first = role.elect()
        self.assertNoResult(first)
        sent = len(self.client.sent)
        self.successResultOf(role.elect())
        self.assertEqual(len(self.client.sent), sent)
        pending.errback(Unavailable("catalog-1 is unreachable"))
        self.successResultOf(first)
        self.assertIsNotNone(role.writer)

    def test_answers_that_straddle_a_new_epoch_elect_nobody(self) -> None:
        """While catalog-3 asks its peers, it joins catalog-2's new epoch (it voted for it). The
        answers it then gets describe the cluster before that epoch (catalog-2 still naming
        catalog-1), so it must not act on them: it proposes nothing and stays with catalog-2.
        (Seen on a real cluster: catalog-3 replaced catalog-2 a moment after electing it.)"""
        c2_status: Deferred[ReplicaResponse] = Deferred()
        self.statuses[C2] = c2_status
        self.statuses[C1] = status(C1, 2, C2, 0)  # the old sequencer, back, resynchronizing
        role = self.role(C3, writes=2)
        election = role.elect()
        self.assertNoResult(election)
        self.successResultOf(role.adopt(2, C2))  # what voting for catalog-2 does
        c2_status.callback(status(C2, 1, C1, 2))  # sent before catalog-2 won
        self.successResultOf(election)
        self.assertEqual(self.proposals(), [])
        self.assertEqual((role.epoch, role.sequencer.name, role.writer), (2, C2, None))

    def test_leader_does_not_elect(self) -> None:
        """A leading replica never runs an election."""
        role = self.role(C1)
        role.start()
        self.client.sent.clear()
        self.successResultOf(role.elect())
        self.assertEqual(self.client.to("/internal/status"), [])


# -- 3b. elections among real replicas --------------------------------------------------


class AnnounceNotice:
    """A FrontendNotice that records announcements (and answers everything at once)."""

    def __init__(self) -> None:
        self.announced: list[tuple[str, int]] = []

    def written(self, seq: int, entry: Entry, lagging: list[str]) -> Deferred[Any]:
        return succeed(None)

    def caught_up(self, follower: str, seq: int) -> Deferred[Any]:
        return succeed(None)

    def announce(self, sequencer: str, seq: int) -> Deferred[Any]:
        self.announced.append((sequencer, seq))
        return succeed(None)


class ElectionTimeoutTests(FailoverTestCase):
    """Each follower waits a random time from ELECTION_TIMEOUT to 1.5 times it, drawn anew
    after every try, so that two followers rarely try at once."""

    def watchdog(self, random: Random) -> tuple[Watchdog, Role, FakeClient, Clock]:
        """catalog-2's watchdog (not started), its role, a client to whom every peer is down,
        and the clock."""
        clock = Clock()
        store = new_store()
        self.addCleanup(store.close)
        client = FakeClient(lambda method, to, path, body: NotSent(f"{to} is down"))
        role = Role(REPLICAS[C2], CONFIG.catalog, store, client, None, clock)  # type: ignore[arg-type]
        return Watchdog(role, clock, random), role, client, clock

    def test_drawn_within_the_bounds_and_anew_after_each_try(self) -> None:
        draws = itertools.chain([0.0, 0.999], itertools.repeat(0.5))

        class Scripted(Random):
            def random(self) -> float:
                return next(draws)

        watchdog, role, client, clock = self.watchdog(Scripted())
        self.assertEqual(watchdog.timeout, ELECTION_TIMEOUT)
        role.heard()  # a sequencer reached it once: no start-up grace
        watchdog.startService()
        self.addCleanup(watchdog.stopService)
        clock.advance(ELECTION_TIMEOUT + ELECTION_CHECK)  # the first try
        self.assertEqual(len(client.to("/internal/status")), 2)
        self.assertAlmostEqual(watchdog.timeout, ELECTION_TIMEOUT * 1.4995)
        role.heard()
        clock.pump([ELECTION_CHECK] * 8)  # 0.8 s of silence
        self.assertEqual(len(client.to("/internal/status")), 2)  # not yet: its timeout is longer now
        clock.pump([ELECTION_CHECK])  # 0.9 s
        self.assertEqual(len(client.to("/internal/status")), 4)
        self.assertAlmostEqual(watchdog.timeout, ELECTION_TIMEOUT * 1.25)

    def test_start_up_grace_until_a_sequencer_is_heard(self) -> None:
        """A replica that no sequencer has reached since it started waits STARTUP_GRACE (its
        peers may still be starting), then its usual timeout once one has."""
        watchdog, role, client, clock = self.watchdog(NoJitter())
        watchdog.startService()
        self.addCleanup(watchdog.stopService)
        clock.pump([ELECTION_CHECK] * (round(STARTUP_GRACE / ELECTION_CHECK) - 1))
        self.assertEqual(client.to("/internal/status"), [])
        clock.advance(1.5 * ELECTION_CHECK)  # past the grace
        self.assertEqual(len(client.to("/internal/status")), 2)
        role.heard()
        clock.pump([ELECTION_CHECK] * (round(ELECTION_TIMEOUT / ELECTION_CHECK) - 1))
        self.assertEqual(len(client.to("/internal/status")), 2)
        clock.advance(1.5 * ELECTION_CHECK)  # past ELECTION_TIMEOUT
        self.assertEqual(len(client.to("/internal/status")), 4)

    def test_unseeded_draws_spread(self) -> None:
        """Without a seed, timeouts differ between watchdogs and stay within the bounds."""
        clock = Clock()
        store = new_store()
        self.addCleanup(store.close)
        role = Role(REPLICAS[C2], CONFIG.catalog, store, FakeClient(), None, clock)  # type: ignore[arg-type]
        timeouts = {Watchdog(role, clock).timeout for _ in range(20)}
        self.assertGreater(len(timeouts), 1)
        for timeout in timeouts:
            self.assertTrue(ELECTION_TIMEOUT <= timeout < 1.5 * ELECTION_TIMEOUT, timeout)


class ElectionTests(FailoverTestCase):
    def setUp(self) -> None:
        self.trio = Trio(self)

    def test_heartbeats_prevent_elections(self) -> None:
        """While the sequencer heartbeats, nobody elects, however long."""
        trio = self.trio
        trio.start()
        trio.run(4 * ELECTION_TIMEOUT)
        self.assertEqual(trio.leaders(), [C1])
        self.assertEqual(set(trio.epochs().values()), {(1, C1)})
        self.assertEqual(trio.served(C1, "GET", "/internal/status"), 0)
        self.assertEqual(trio.elect_requests(), [])

    def test_silent_sequencer_replaced(self) -> None:
        """catalog-1 isolated: nothing before ELECTION_TIMEOUT; then catalog-2 (a tie, first in
        config) alone proposes, catalog-3 adopts epoch 2 (persisted), catalog-2 leads."""
        trio = self.trio
        trio.start()
        self.assertEqual(trio.write_price(C2, 1, 11.0).code, 200)
        trio.isolate(C1)
        trio.run(ELECTION_TIMEOUT)
        self.assertEqual(trio.leaders(), [C1])
        self.assertEqual(trio.elect_requests(), [])
        self.assertEqual(trio.dispatch.refused, [])

        trio.run(ELECTION_CHECK)

        self.assertEqual(trio.elect_requests(), [C3])
        self.assertEqual(trio.epochs(), {C1: (1, C1), C2: (2, C2), C3: (2, C2)})
        self.assertEqual(trio.leaders(), [C1, C2])  # catalog-1 does not know yet
        for name in (C2, C3):
            self.assertEqual(
                (meta(trio.stores[name], "epoch"), meta(trio.stores[name], "sequencer")), (2, C2)
            )
        self.assertEqual(trio.call("GET", C3, "/internal/status").json()["epoch"], 2)
        self.assertEqual(trio.wipes, Counter())

        # The new sequencer takes writes, forwarded by catalog-3, acknowledged with it.
        reply = trio.write_price(C3, 1, 12.5)
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual([trio.price(n, 1) for n in (C1, C2, C3)], [11.0, 12.5, 12.5])
        self.assertSameData(trio, C2, C3)

    def test_highest_last_seq_wins(self) -> None:
        """catalog-3 holds a write catalog-2 missed: catalog-3 wins, catalog-2 proposes nothing
        and is brought up to date by the new sequencer."""
        trio = self.trio
        trio.start()
        trio.isolate(C2)
        self.assertEqual(trio.write_price(C1, 0, 42.0).code, 200)
        trio.isolate(C1)
        trio.isolate(C2, False)
        self.assertEqual((trio.state(C2)["last_seq"], trio.state(C3)["last_seq"]), (0, 1))

        trio.run(ELECTION_TIMEOUT + ELECTION_CHECK)

        self.assertEqual(trio.elect_requests(), [C2])
        self.assertEqual(trio.leaders(), [C1, C3])
        self.assertEqual(trio.epochs()[C2], (2, C3))
        trio.run(1)
        self.assertEqual(trio.price(C2, 0), 42.0)
        self.assertSameData(trio, C3, C2)

    def test_tie_broken_by_config_order(self) -> None:
        """Configured as catalog-1, catalog-3, catalog-2, with equal last_seq: catalog-3 wins."""
        trio = self.trio = Trio(self, make_config((C1, C3, C2)))
        trio.start()
        trio.isolate(C1)
        trio.run(ELECTION_TIMEOUT + ELECTION_CHECK)
        self.assertEqual(trio.elect_requests(), [C2])
        self.assertEqual(trio.epochs(), {C1: (1, C1), C2: (2, C3), C3: (2, C3)})

    def test_no_majority_no_takeover(self) -> None:
        """catalog-2 alone (catalog-1 and catalog-3 isolated) asks around but never takes
        over; once catalog-3 answers again, it does."""
        trio = self.trio
        trio.start()
        trio.isolate(C1)
        trio.isolate(C3)
        trio.run(4 * ELECTION_TIMEOUT)
        asked = {(s.name, s.path) for s in trio.dispatch.refused}
        self.assertEqual(asked, {(C1, "/internal/status"), (C3, "/internal/status")})
        self.assertEqual(trio.leaders(), [C1])
        self.assertEqual(trio.epochs()[C2], (1, C1))
        self.assertEqual(trio.stores[C2].epoch, 0)

        trio.isolate(C3, False)
        trio.run(ELECTION_CHECK)
        self.assertEqual(trio.epochs(), {C1: (1, C1), C2: (2, C2), C3: (2, C2)})
        self.assertEqual(trio.leaders(), [C1, C2])

    def test_sequencer_answering_status_is_not_replaced(self) -> None:
        """The sequencer stops heartbeating but answers its status: no election."""
        trio = self.trio
        trio.start()
        heartbeats = trio.roles[C1].heartbeats
        assert heartbeats is not None
        heartbeats.stopService()
        trio.run(4 * ELECTION_TIMEOUT)
        self.assertGreater(trio.served(C1, "GET", "/internal/status"), 0)
        self.assertEqual(trio.elect_requests(), [])
        self.assertEqual(set(trio.epochs().values()), {(1, C1)})
        self.assertEqual(trio.leaders(), [C1])

    def test_newer_epoch_learned_from_a_peer(self) -> None:
        """A follower that missed the election (isolated) learns epoch 2 from a peer's status
        and adopts it, proposing nothing."""
        trio = self.trio
        trio.start()
        trio.isolate(C1)
        trio.run(ELECTION_TIMEOUT + ELECTION_CHECK)
        self.assertEqual(trio.leaders(), [C1, C2])
        # catalog-1 is demoted by hand (it forgets it led) and comes back after catalog-2 dies.
        trio.roles[C1].stop()
        trio.isolate(C2)
        trio.roles[C2].stop()
        trio.isolate(C1, False)
        trio.dispatch.seen.clear()
        trio.run(ELECTION_CHECK)
        self.assertEqual(trio.epochs()[C1], (2, C2))
        self.assertEqual(meta(trio.stores[C1], "epoch"), 2)
        self.assertEqual(trio.elect_requests(), [])


class VoteRaceTests(FailoverTestCase):
    def test_write_acknowledged_during_election_survives(self) -> None:
        """catalog-1 and catalog-2 cannot reach each other; catalog-3 reaches both. catalog-2
        elects itself on catalog-3's status (last_seq 1); before catalog-3 votes, catalog-1
        gets seq 2 acknowledged with catalog-3. That write must survive the new epoch."""
        trio = Trio(self)
        trio.start()
        self.assertEqual(trio.write_price(C1, 1, 5.0).code, 200)
        trio.cut(C1, C2)
        heartbeats = trio.roles[C1].heartbeats
        assert heartbeats is not None
        heartbeats.stopService()  # so that catalog-2's status request is catalog-3's next one
        trio.run(ELECTION_TIMEOUT)
        held = trio.hold_next(C3)
        trio.run(ELECTION_CHECK)
        assert held.request is not None
        self.assertEqual((held.arrived, held.request.path), (True, b"/internal/status"))
        # Acknowledged with catalog-3, once catalog-2's read lease has run out.
        written = trio.outside.request("PUT", trio.replica(C1), "/catalog/books/0/price", {"price": 77.0})
        trio.flush()
        held.release()
        trio.run(LEASE_TERM + 1)
        self.assertEqual(self.successResultOf(written).code, 200)

        sequencer = trio.epochs()[C3][1]
        self.assertEqual(trio.price(sequencer, 0), 77.0)
        self.assertEqual(trio.price(C3, 0), 77.0)


# -- a sequencer that hangs and resumes ---------------------------------------------------


class HangTests(FailoverTestCase):
    """catalog-1, the sequencer, hangs (SIGSTOP) with a log longer than one replication batch
    while writes go on; another replica takes over; catalog-1 resumes at each offset from the
    takeover, 0 to 3 s in STEP steps. Before the fix, a resume within about 2 s left it in
    sync at the new sequencer, sent batches with a gap that it refused forever, and every
    later write waited for it and failed."""

    WRITES = 12  # with MAX_BATCH patched to 4: three batches

    def setUp(self) -> None:
        # A catch-up is cut by count (MAX_BATCH) and by bytes (MAX_BATCH_BYTES): here 4
        # entries and about 3.5 entries' worth, as 500 entries and 48 KB cut a real one.
        self.patch(follower_link, "MAX_BATCH", 4)

    def test_first_write_after_the_takeover_does_not_wait_for_the_old_sequencer(self) -> None:
        """catalog-1 hangs; the replica that replaces it acknowledges its first write at once,
        naming catalog-1 lagging, rather than after catalog-1's 2 s deadline (which made the
        write outage after a hang 2 s longer)."""
        trio = Trio(self)
        trio.start()
        trio.pause(C1)
        new = trio.replaced(C1)
        self.assertEqual(trio.write_price(new, 2, 5.0).code, 200)  # answered without the clock moving
        writer = trio.roles[new].writer
        assert writer is not None
        self.assertFalse(writer.followers()[C1]["in_sync"])
        trio.resume(C1)
        trio.run(2)
        self.assertTrue(writer.followers()[C1]["in_sync"])
        self.assertSameData(trio, new, C1)

    def test_resumed_at_every_offset_from_the_takeover(self) -> None:
        for step in range(round(3.0 / STEP) + 1):
            self.hang_and_resume(step * STEP)

    def hang_and_resume(self, offset: float) -> None:
        trio = Trio(self)
        trio.start()
        for n in range(self.WRITES):
            self.assertEqual(trio.write_price(C1, 3, 100.0 + n).code, 200)  # entries of one size
        entry = trio.entry_at(C1, 1)
        self.patch(follower_link, "MAX_BATCH_BYTES", round(3.5 * (len(json.dumps(entry)) + 16)))
        trio.pause(C1)
        new = trio.replaced(C1)
        answered: list[tuple[float, float, int]] = []  # (sent, answered, status) of each write

        def write(price: float) -> None:
            sent = trio.clock.seconds()
            d = trio.outside.request("PUT", trio.replica(new), "/catalog/books/3/price", {"price": price})
            d.addBoth(lambda r: answered.append((sent, trio.clock.seconds(), getattr(r, "code", 0))))

        for n in range(round(offset / STEP)):
            write(100.0 + n)
            trio.run(STEP)
        trio.resume(C1)
        for n in range(round(8 / STEP)):  # writes go on, three at a time, during any catch-up
            for k in range(3):
                write(200.0 + 3 * n + k)
            trio.run(STEP)
        trio.run(4)  # quiet
        where = f"resumed {offset:g} s after the takeover"
        self.assertEqual(len(answered), round(offset / STEP) + 3 * round(8 / STEP), where)
        for sent, at, code in answered:
            self.assertEqual(code, 200, f"{where}: the write sent at {sent:g} s")
            self.assertLessEqual(at - sent, REPLICATION_TIMEOUT + 2 * STEP, f"{where}: sent at {sent:g} s")
        writer = trio.roles[new].writer
        assert writer is not None
        self.assertEqual(
            {name: (f["in_sync"], f["confirmed"]) for name, f in writer.followers().items()},
            {name: (True, trio.stores[new].applied_seq) for name in (C1, C2, C3) if name != new},
            where,
        )
        self.assertSameData(trio, new, C1, *[n for n in (C2, C3) if n != new])
        before = sum(1 for s in trio.dispatch.seen if s.path == REPLICATE_PATH)
        trio.run(2)
        replicate_calls = sum(1 for s in trio.dispatch.seen if s.path == REPLICATE_PATH) - before
        self.assertLessEqual(replicate_calls, 2 * 2 / HEARTBEAT_INTERVAL + 2, f"{where}: no spinning")
        trio.stop()


# -- 4. fencing a replaced sequencer -----------------------------------------------------


class VoterBehindTests(FailoverTestCase):
    """A replica can vote for a new sequencer while it lacks writes acknowledged before (it
    was out of sync: paused, or cut off). The new sequencer catches it up, but until then
    the front end must not read from it."""

    def test_a_voter_behind_is_not_read_until_it_has_caught_up(self) -> None:
        trio = Trio(self)
        trio.start()
        self.assertEqual(trio.write_price(C1, 3, 10.0).code, 200)
        trio.pause(C1)
        first = trio.replaced(C1)
        # Acknowledged by ``first`` and the third replica; C1, paused, lacks it.
        self.assertEqual(trio.write_price(first, 3, 42.0).code, 200)
        (third,) = {C2, C3} - {first}
        trio.isolate(first)
        trio.block(third, C1, REPLICATE_PATH)  # C1 may vote, but is not caught up
        trio.resume(C1)
        self.assertEqual(trio.replaced(first), third)  # C1's vote, and the third's own
        self.assertEqual(trio.price(C1, 3), 10.0)  # behind: it lacks an acknowledged write

        replicas = trio.frontend.app.replicas
        self.assertFalse(replicas.health.readable(trio.replica(C1)))
        for _ in range(len(trio.config.catalog)):  # every replica's turn
            d = replicas.read(replicas.catalogs, "/catalog/books/3")
            trio.flush()
            self.assertEqual(self.successResultOf(d).json()["price"], 42.0)

        # Caught up, it is read from again once its sequencer says so (a probe of its status).
        trio.blocked.clear()
        trio.run(1)
        self.assertEqual(trio.price(C1, 3), 42.0)
        (probe,) = trio.frontend.services
        probe.probe_all()  # type: ignore[attr-defined]
        trio.flush()
        self.assertTrue(replicas.health.readable(trio.replica(C1)))


class WipedVoterTests(FailoverTestCase):
    """A replica that forgot its writes (a replaced sequencer, or a follower whose log
    diverged) may have held acknowledged writes that only one other replica has: its empty
    log must not vote a replica that lacks them into office. Found by the simulator (seed
    489 before the leases merge): catalog-1 and catalog-3 acknowledge a write while
    catalog-2 is down; catalog-3 replaces a hung catalog-1 with the vote of catalog-2,
    back but behind, and is cut off before it caught catalog-2 up; catalog-1 resumes,
    steps down and forgets its writes, then voted catalog-2 in (epoch 3) with its empty
    log; after the heal catalog-3 stepped down and forgot the write too."""

    def test_a_wiped_replica_votes_in_no_replica_lacking_its_writes(self) -> None:
        trio = Trio(self)
        trio.start()
        trio.isolate(C2)  # down: catalog-1 and catalog-3 acknowledge the write alone
        self.assertEqual(trio.write_price(C1, 3, 42.0).code, 200)
        self.assertEqual([trio.price(n, 3) for n in (C1, C2, C3)], [42.0, SEED_BOOKS[3][3], 42.0])
        trio.pause(C1)
        trio.isolate(C2, False)  # back, behind
        for name in (C1, C2):  # catalog-3 is cut off before it catches either up
            trio.block(C3, name, REPLICATE_PATH)
        self.assertEqual(trio.replaced(C1), C3)
        self.assertEqual(trio.epochs()[C2], (2, C3))
        self.assertEqual(trio.price(C2, 3), SEED_BOOKS[3][3])
        trio.isolate(C3)
        trio.blocked.clear()
        trio.resume(C1)
        trio.run(4 * ELECTION_TIMEOUT)
        self.assertEqual(trio.wipes[C1], 1)  # it stepped down and forgot its writes
        # No replica lacking the write was elected meanwhile: catalog-2 and catalog-1 wait.
        self.assertEqual(trio.leaders(), [C3])
        self.assertEqual([trio.roles[n].epoch for n in (C1, C2)], [2, 2])

        trio.isolate(C3, False)
        trio.run(2)
        self.assertEqual(trio.leaders(), [C3])
        for name in (C1, C2, C3):
            self.assertEqual(trio.price(name, 3), 42.0, name)
        self.assertSameData(trio, C3, C1, C2)
        self.assertEqual(trio.stores[C1].forgot_up_to, 0)  # caught up: it votes on its log again

    def test_two_replicas_that_forgot_wait_for_the_third_then_elect_again(self) -> None:
        """catalog-1 (replaced) and the other follower both forgot their writes and were not
        sent them again; the new sequencer hangs: neither stands, nor votes for the other.
        Once it is back it catches both up, and when it hangs again one of them takes over."""
        trio = Trio(self)
        trio.start()
        self.assertEqual(trio.write_price(C1, 3, 42.0).code, 200)
        trio.pause(C1)
        for name in (C2, C3):  # catalog-1 learns of the new epoch from their refusals
            trio.block(name, C1, REPLICATE_PATH)
        new = trio.replaced(C1)
        (other,) = {C2, C3} - {new}
        trio.block(new, other, REPLICATE_PATH)
        trio.resume(C1)
        trio.run(1)
        self.assertEqual(trio.wipes[C1], 1)
        self.successResultOf(trio.stores[other].wipe())  # as Role.verify does with a diverged log
        self.assertEqual([trio.stores[n].forgot_up_to for n in (C1, other)], [1, 1])
        for name in (C1, other):  # not ready (the other was, as a follower in sync, before)
            self.assertFalse(trio.call("GET", name, "/internal/status").json()["ready"], name)
        trio.pause(new)
        trio.run(4 * ELECTION_TIMEOUT)
        self.assertEqual(trio.leaders(), [new])  # paused, it still thinks it leads; nobody else does
        self.assertEqual([trio.roles[n].epoch for n in (C1, other)], [2, 2])

        trio.blocked.clear()
        trio.resume(new)
        trio.run(1)
        self.assertEqual([trio.stores[n].forgot_up_to for n in (C1, other)], [0, 0])
        self.assertSameData(trio, new, C1, other)
        for name in (C1, other):
            self.assertTrue(trio.call("GET", name, "/internal/status").json()["ready"], name)
        trio.pause(new)
        self.assertIn(trio.replaced(new), (C1, other))
        self.assertEqual(trio.price(C1, 3), 42.0)


class ReadBehindARetiredSequencerTests(FailoverTestCase):
    """A read at the sequencer while a write runs waits for the write (Raft's read index). If
    the sequencer steps down meanwhile, that write may never reach a majority (the replica
    wipes it): the read, which ran after it, must be refused rather than show it. (Found by
    the simulator: an orphan scan read a take from a sequencer that then stepped down, and
    recorded an order for a take that was lost.)"""

    def test_a_read_waiting_for_a_write_is_refused_if_its_sequencer_steps_down(self) -> None:
        trio = Trio(self)
        trio.start()
        self.assertEqual(trio.write_price(C1, 3, 10.0).code, 200)
        trio.pause(C2)
        trio.pause(C3)
        write = trio.outside.request("PUT", trio.replica(C1), "/catalog/books/3/price", {"price": 42.0})
        read = trio.outside.request("GET", trio.replica(C1), "/catalog/books/3")
        trio.flush()
        self.assertNoResult(read)  # behind the write, which no follower has confirmed
        role = trio.roles[C1]
        role.adopt(role.epoch + 1, C2)  # as when it hears of the epoch C2 and C3 elected C2 in
        trio.flush()
        self.assertEqual(trio.leaders(), [])
        trio.run(REPLICATION_TIMEOUT + 1)  # the write gives up on its followers
        self.assertEqual(self.successResultOf(write).code, 503)
        self.assertEqual(self.successResultOf(read).code, 503)  # not 42.0, which nobody kept
        self.assertNotEqual(trio.price(C1, 3), 42.0)  # wiped, to be caught up by C2


class ReadAtAReplacedSequencerTests(FailoverTestCase):
    """A replaced sequencer stops sequencing the moment it hears of the new epoch, but forgets
    its writes (some never reached a majority) only once it has recorded that epoch on disk.
    In between it is no follower whose writes a majority has: it must serve no read. (Found
    by the simulator, seeds 1019 and 10023: catalog-1, resumed after a hang, was asked for its
    takes by the order sequencer's orphan scan in that window, showed a take it then wiped, and
    an order was recorded for it.)"""

    def test_no_read_between_stepping_down_and_forgetting_the_writes(self) -> None:
        trio = Trio(self)
        trio.start()
        self.assertEqual(trio.call("POST", C1, "/catalog/books/3/buy", {"idempotency_key": "j"}).code, 200)
        trio.pause(C2)
        trio.pause(C3)
        buy = trio.outside.request("POST", trio.replica(C1), "/catalog/books/3/buy", {"idempotency_key": "k"})
        trio.flush()
        self.assertNoResult(buy)  # taken at C1 only: no follower has confirmed it
        disk: Deferred[None] = Deferred()  # C1's disk is busy: the new epoch waits to be written
        store = trio.stores[C1]
        save_epoch = store.save_epoch
        store.save_epoch = lambda *a: disk.addCallback(lambda _: save_epoch(*a))  # type: ignore[method-assign]
        role = trio.roles[C1]
        role.adopt(role.epoch + 1, C2)  # as when it hears of the epoch C2 and C3 elected C2 in
        self.assertEqual(trio.leaders(), [])

        takes = trio.call("GET", C1, "/catalog/takes?after=0")
        self.assertEqual(takes.code, 503, takes.json())  # not take k, which nobody will keep
        self.assertEqual(trio.call("GET", C1, "/catalog/books/3").code, 503)
        self.assertFalse(trio.call("GET", C1, "/internal/status").json()["ready"])

        disk.callback(None)
        trio.flush()
        self.assertEqual(trio.wipes[C1], 1)
        self.assertEqual(self.successResultOf(trio.stores[C1].last_seq()), 0)  # take k is gone


class ReadAtARestartedSequencerTests(FailoverTestCase):
    """A sequencer that starts from its disk leads in the epoch recorded there until a
    follower tells it of a newer one, and its newest writes may be ones no follower ever got
    (it stopped before sending them): a replica elected meanwhile never has them. Until a
    majority has them it serves no read."""

    def test_no_read_before_a_follower_has_its_writes(self) -> None:
        """Its take, read there, would be lost: the others elect a sequencer without it."""
        trio = Trio(self)
        # On catalog-1's disk: a take it committed just before it stopped, sent to nobody.
        self.successResultOf(trio.stores[C1].buy(3, 1, "k"))
        trio.block(C1, C2, REPLICATE_PATH)  # its heartbeats (which would send the take) are late
        trio.block(C1, C3, REPLICATE_PATH)
        trio.start()
        self.assertEqual(trio.leaders(), [C1])
        takes = trio.call("GET", C1, "/catalog/takes?after=0")
        self.assertEqual(takes.code, 503, takes.json())  # not take k: see below
        self.assertFalse(trio.call("GET", C1, "/internal/status").json()["ready"])

        trio.isolate(C1)  # the others replace it, and never hear of take k
        trio.run(STARTUP_GRACE + 1)
        self.assertEqual(trio.epochs()[C3], (2, C2))
        trio.isolate(C1, cut=False)
        trio.blocked.clear()
        trio.run(1)
        self.assertEqual(trio.leaders(), [C2])
        for name in (C1, C2, C3):
            self.assertEqual(trio.call("GET", name, "/catalog/takes?after=0").json()["takes"], [], name)

    def test_reads_once_a_follower_has_its_writes(self) -> None:
        """It reads as soon as one has (its heartbeats send them the writes they lack)."""
        trio = Trio(self)
        self.successResultOf(trio.stores[C1].buy(3, 1, "k"))
        trio.block(C1, C2, REPLICATE_PATH)
        trio.start()
        takes = trio.call("GET", C1, "/catalog/takes?after=0")
        self.assertEqual([take["key"] for take in takes.json()["takes"]], ["k"])  # C3 has it
        self.assertTrue(trio.call("GET", C1, "/internal/status").json()["ready"])


class UnansweredPushTests(FailoverTestCase):
    """A push to the front end that is never answered (lost to a partition that then heals)
    must not hold writes for long: pushes go one at a time, so every later write waits for it
    (simulator seed 15: no order write acknowledged for 10 s after a partition healed). With
    cache leases (``bazar.leases``) the write is acknowledged once the front end's lease has
    run out, and the front end, resumed, shows no older price."""

    def test_a_write_whose_push_is_unanswered_is_answered_once_the_lease_ran_out(self) -> None:
        trio = Trio(self)
        trio.start()
        self.assertEqual(trio.write_price(C1, 3, 10.0).code, 200)
        self.assertEqual(trio.read_price(3), 10.0)  # cached
        trio.pause("frontend")  # what reaches it waits, unread
        answered: list[Any] = []
        d = trio.outside.request("PUT", trio.replica(C1), "/catalog/books/3/price", {"price": 11.0})
        d.addBoth(answered.append)
        waited = max(PUSH_TIMEOUT, LEASE_TERM) + STEP
        trio.run(waited)
        self.assertEqual(len(answered), 1, f"no answer within {waited:g} s")
        self.assertEqual(getattr(answered[0], "code", None), 200)  # its lease ran out
        trio.resume("frontend")
        self.assertEqual(trio.read_price(3), 11.0)
        trio.flush()
        self.assertEqual(trio.write_price(C1, 3, 12.0).code, 200)  # the next write goes through


class FencingTests(FailoverTestCase):
    def setUp(self) -> None:
        self.trio = Trio(self)
        self.trio.start()
        self.assertEqual(self.trio.write_price(C1, 0, 10.0).code, 200)

    def replace_c1(self) -> None:
        self.trio.isolate(C1)
        self.trio.run(ELECTION_TIMEOUT + ELECTION_CHECK)
        self.assertEqual(self.trio.epochs()[C2], (2, C2))
        self.assertEqual(self.trio.leaders(), [C1, C2])

    def assertFenced(self) -> None:
        trio = self.trio
        self.assertIsNone(trio.roles[C1].writer)
        self.assertEqual(trio.epochs()[C1], (2, C2))
        self.assertEqual((meta(trio.stores[C1], "epoch"), meta(trio.stores[C1], "sequencer")), (2, C2))
        self.assertEqual(trio.wipes[C1], 1)

    def test_paused_sequencer_write_refused_and_fenced(self) -> None:
        """catalog-1 pauses (no heartbeats, no answers) and is replaced; on resuming its next
        write meets 409 stale_epoch from both followers: 503, it steps down, adopts epoch 2,
        wipes (the write is gone), then catalog-2's heartbeat gives it everything back."""
        trio = self.trio
        heartbeats = trio.roles[C1].heartbeats
        assert heartbeats is not None
        heartbeats.stopService()
        self.replace_c1()
        self.assertEqual(trio.write_price(C3, 1, 33.0).code, 200)
        trio.isolate(C1, False)

        reply = trio.write_price(C1, 0, 99.0)

        self.assertEqual(reply.code, 503, reply.body)
        self.assertIn("not acknowledged", reply.json()["error"]["message"])
        self.assertFenced()
        self.assertEqual(trio.state(C1)["last_seq"], 0)
        self.assertEqual(trio.price(C1, 0), SEED_BOOKS[0][3])
        self.assertEqual([trio.price(n, 0) for n in (C2, C3)], [10.0, 10.0])

        trio.run(1)
        self.assertSameData(trio, C2, C1, C3)
        self.assertEqual((trio.price(C1, 0), trio.price(C1, 1)), (10.0, 33.0))
        self.assertEqual(trio.leaders(), [C2])

    def test_isolated_sequencer_write_unacknowledged(self) -> None:
        """An isolated catalog-1 still sequences a write but cannot acknowledge it (Unavailable:
        1 of 3, and the front end out of reach); catalog-2 is elected and writes seq 2
        otherwise; when catalog-1 is back it is fenced and ends with catalog-2's entry at seq 2."""
        trio = self.trio
        trio.isolate(C1)
        writer = trio.roles[C1].writer
        assert writer is not None
        # Unavailable: no follower confirms it (only 1 of 3), nor can the front end be told:
        # once the front end's cache lease has surely run out (bazar.leases).
        written = writer.write(trio.stores[C1].set_price(0, 99.0))
        self.assertNoResult(written)
        trio.clock.advance(LEASE_TERM)
        self.failureResultOf(written, Unavailable)
        self.assertEqual(trio.price(C1, 0), 99.0)  # sequenced here, never acknowledged
        self.replace_c1()
        self.assertEqual(trio.write_price(C3, 0, 20.0).code, 200)
        theirs = trio.entry_at(C2, 2)
        self.assertNotEqual(trio.entry_at(C1, 2), theirs)

        trio.isolate(C1, False)
        trio.run(1)

        self.assertFenced()
        self.assertEqual(trio.leaders(), [C2])
        self.assertEqual(trio.entry_at(C1, 2), theirs)
        self.assertEqual(trio.price(C1, 0), 20.0)
        self.assertSameData(trio, C2, C1, C3)

    def test_fenced_sequencer_forwards_writes(self) -> None:
        """Once fenced, a write sent to catalog-1 is forwarded to catalog-2 and acknowledged."""
        trio = self.trio
        self.replace_c1()
        trio.isolate(C1, False)
        trio.run(1)
        self.assertFenced()
        reply = trio.write_price(C1, 4, 4.5)
        self.assertEqual(reply.code, 200, reply.body)
        trio.run(1)
        self.assertEqual([trio.price(n, 4) for n in (C1, C2, C3)], [4.5, 4.5, 4.5])


# -- 5. a follower's log, checked against the new sequencer's ----------------------------


class VerifyTests(FailoverTestCase):
    """Over a fake client: the follower asks the sequencer for its entry at our last seq."""

    def setUp(self) -> None:
        self.store = new_store()
        self.addCleanup(self.store.close)
        self.successResultOf(self.store.set_price(0, 1.0))
        _, self.last = self.successResultOf(self.store.set_price(1, 2.0))
        self.log: Any = answer(200, {"entries": [[2, self.last]]}, C3)
        self.client = FakeClient(lambda method, to, path, body: self.log)
        self.role = Role(REPLICAS[C2], CONFIG.catalog, self.store, self.client, None, Clock())
        self.successResultOf(self.role.adopt(2, C3))
        self.assertEqual(self.role.verified_epoch, 1)

    def verify(self) -> None:
        self.assertIsNone(self.successResultOf(self.role.verify(2)))

    def test_matching_entry_keeps_data(self) -> None:
        """Same entry at our last seq: nothing wiped; verified for epoch 2."""
        self.verify()
        self.assertEqual(
            [(s.method, s.to, s.path) for s in self.client.sent],
            [("GET", C3, "/internal/log?after=1&limit=1")],
        )
        self.assertEqual(self.store.applied_seq, 2)
        self.assertEqual(self.role.verified_epoch, 2)

    def test_same_entry_other_key_order_matches(self) -> None:
        """Entries are compared as JSON values, not as text."""
        reordered = {"book": dict(reversed(list(self.last["book"].items())))}
        self.log = answer(200, {"entries": [[2, reordered]]}, C3)
        self.verify()
        self.assertEqual(self.store.applied_seq, 2)

    def test_different_entry_wipes(self) -> None:
        """Another entry at our last seq: wiped, back to the seed."""
        self.log = answer(200, {"entries": [[2, {"book": {**self.last["book"], "price": 3.0}}]]}, C3)
        self.verify()
        self.assertEqual(self.store.applied_seq, 0)
        self.assertEqual(self.store.book(1)["price"], SEED_BOOKS[1][3])
        self.assertEqual(self.role.verified_epoch, 2)
        self.assertEqual(self.store.epoch, 2)

    def test_longer_log_wipes(self) -> None:
        """The sequencer has nothing at our last seq: wiped."""
        self.log = answer(200, {"entries": []}, C3)
        self.verify()
        self.assertEqual(self.store.applied_seq, 0)

    def test_unanswered_tries_again(self) -> None:
        """No answer from the sequencer: nothing wiped, not verified (asked again next time)."""
        self.log = answer(503, {"error": {"code": 503, "message": "busy"}}, C3)
        self.verify()
        self.assertEqual((self.store.applied_seq, self.role.verified_epoch), (2, 1))
        self.log = answer(200, {"entries": [[2, self.last]]}, C3)
        self.verify()
        self.assertEqual((self.store.applied_seq, self.role.verified_epoch), (2, 2))

    def test_verified_once(self) -> None:
        """Once verified for an epoch, no further request in that epoch."""
        self.verify()
        self.verify()
        self.assertEqual(len(self.client.sent), 1)

    def test_empty_log_needs_no_check(self) -> None:
        """Nothing applied: nothing to compare, verified at once."""
        self.successResultOf(self.store.wipe())
        self.verify()
        self.assertEqual(self.client.sent, [])
        self.assertEqual(self.role.verified_epoch, 2)


class FollowerLogTests(FailoverTestCase):
    """Among real replicas: catalog-1 steps down (not leading, so adopt alone would not wipe)
    while isolated, and comes back to catalog-2's epoch 2."""

    def setUp(self) -> None:
        self.trio = Trio(self)
        self.trio.start()
        self.assertEqual(self.trio.write_price(C1, 0, 10.0).code, 200)

    def step_down_and_replace(self, unacknowledged: bool) -> None:
        trio = self.trio
        trio.isolate(C1)
        if unacknowledged:
            writer = trio.roles[C1].writer
            assert writer is not None
            written = writer.write(trio.stores[C1].set_price(0, 99.0))
            trio.clock.advance(LEASE_TERM)  # the front end's lease has run out (bazar.leases)
            self.failureResultOf(written, Unavailable)
        trio.roles[C1].stop()
        trio.run(ELECTION_TIMEOUT + ELECTION_CHECK)
        self.assertEqual(trio.leaders(), [C2])

    def come_back(self) -> None:
        self.trio.dispatch.seen.clear()
        self.trio.isolate(C1, False)
        self.trio.run(1)
        self.assertEqual(self.trio.epochs()[C1], (2, C2))

    def test_diverging_entry_wiped_and_resent(self) -> None:
        """catalog-1's seq 2 is not catalog-2's seq 2: wiped, then sent everything."""
        trio = self.trio
        self.step_down_and_replace(unacknowledged=True)
        self.assertEqual(trio.write_price(C2, 3, 7.0).code, 200)
        self.come_back()
        self.assertEqual(trio.wipes[C1], 1)
        self.assertEqual(trio.entry_at(C1, 2), trio.entry_at(C2, 2))
        self.assertEqual((trio.price(C1, 0), trio.price(C1, 3)), (10.0, 7.0))
        self.assertSameData(trio, C2, C1, C3)

    def test_longer_log_wiped(self) -> None:
        """catalog-1 holds seq 2, which catalog-2 never had: wiped, back to seq 1."""
        trio = self.trio
        self.step_down_and_replace(unacknowledged=True)
        self.come_back()
        self.assertEqual(trio.wipes[C1], 1)
        self.assertEqual(trio.price(C1, 0), 10.0)
        self.assertSameData(trio, C2, C1, C3)

    def test_matching_log_kept(self) -> None:
        """catalog-1's last entry is catalog-2's: checked (GET /internal/log), not wiped, and
        sent only what it lacks."""
        trio = self.trio
        self.step_down_and_replace(unacknowledged=False)
        self.assertEqual(trio.write_price(C2, 3, 7.0).code, 200)
        self.come_back()
        self.assertEqual(trio.served(C2, "GET", "/internal/log"), 1)
        self.assertEqual(trio.wipes, Counter())
        self.assertSameData(trio, C2, C1, C3)


# -- 6. the sequencer's quorum ---------------------------------------------------------


class QuorumTests(FailoverTestCase):
    def setUp(self) -> None:
        self.store = new_store()
        self.addCleanup(self.store.close)
        self.up: set[str] = set()
        self.client = FakeClient(self.handle)

    def handle(self, method: str, to: str, path: str, body: Any) -> Any:
        if to in self.up:
            return answer(200, {"last_seq": body["last_seq"]}, to)
        return Unavailable(f"{to} is unreachable")

    def sequencer(self, quorum: int) -> Sequencer:
        links = [FollowerLink(REPLICAS[n], self.client, self.store, Clock()) for n in (C2, C3)]
        return Sequencer(self.store, links, None, quorum=quorum)

    def test_both_followers_failing(self) -> None:
        """Quorum 2, no follower confirms: Unavailable (the entry stays in the local log)."""
        d = self.sequencer(2).write(self.store.set_price(0, 5.0))
        failure = self.failureResultOf(d, Unavailable)
        self.assertIn("only 1 of 3", failure.value.message)
        self.assertEqual(len(self.client.to(REPLICATE_PATH)), 2)
        self.assertEqual(self.store.applied_seq, 1)

    def test_one_follower_confirms(self) -> None:
        """Quorum 2, catalog-2 confirms: acknowledged."""
        self.up.add(C2)
        entry = self.successResultOf(self.sequencer(2).write(self.store.set_price(0, 5.0)))
        self.assertEqual(entry["book"]["price"], 5.0)

    def test_quorum_of_all(self) -> None:
        """Quorum 3 with one follower failing: Unavailable; both confirming: acknowledged."""
        self.up.add(C2)
        self.failureResultOf(self.sequencer(3).write(self.store.set_price(0, 5.0)), Unavailable)
        self.up.add(C3)
        self.successResultOf(self.sequencer(3).write(self.store.set_price(0, 6.0)))

    def test_quorum_one_needs_nobody(self) -> None:
        """The default quorum 1 acknowledges with every follower failing."""
        self.successResultOf(self.sequencer(1).write(self.store.set_price(0, 5.0)))

    def test_replayed_write_counts_too(self) -> None:
        """A keyed retry is acknowledged only once a majority has the original write."""
        sequencer = self.sequencer(2)
        self.failureResultOf(sequencer.write(self.store.buy(0, 1, key="k")), Unavailable)
        self.failureResultOf(sequencer.write(self.store.buy(0, 1, key="k")), Unavailable)
        self.up.add(C2)
        entry = self.successResultOf(sequencer.write(self.store.buy(0, 1, key="k")))
        self.assertEqual(entry["book"]["quantity"], SEED_BOOKS[0][4] - 1)
        self.assertEqual(self.store.applied_seq, 1)


# -- 7. the internal endpoints ---------------------------------------------------------


class EndpointTests(FailoverTestCase):
    """Requests from outside to a replica of a Trio that was not started."""

    def setUp(self) -> None:
        self.trio = Trio(self)

    def elect(self, to: str, body: Any) -> ReplicaResponse:
        return self.trio.call("POST", to, "/internal/elect", body)

    def test_elect_refuses_an_epoch_not_newer(self) -> None:
        """Epochs 0 and 1 (ours) are refused with 409, and change nothing."""
        for epoch in (0, 1):
            response = self.elect(C2, {"epoch": epoch, "sequencer": C3})
            self.assertEqual(response.code, 409, response.body)
            self.assertIn("not newer", response.json()["error"]["message"])
        self.assertEqual(self.trio.epochs()[C2], (1, C1))
        self.assertEqual(self.trio.stores[C2].epoch, 0)

    def test_elect_accepts_a_newer_epoch(self) -> None:
        """Epoch 2 from a candidate holding what we hold: 200 with our last_seq; adopted and
        persisted; then epoch 2 again is refused. A candidate holding less is refused."""
        self.successResultOf(self.trio.stores[C2].set_price(0, 3.0))
        behind = self.elect(C2, {"epoch": 2, "sequencer": C3, "last_seq": 0})
        self.assertEqual(behind.code, 409, behind.body)
        self.assertEqual(self.trio.epochs()[C2][0], 1)
        response = self.elect(C2, {"epoch": 2, "sequencer": C3, "last_seq": 1})
        self.assertEqual(response.code, 200, response.body)
        self.assertEqual(response.json(), {"last_seq": 1, "epoch": 2})
        self.assertEqual(self.trio.epochs()[C2], (2, C3))
        self.assertEqual(
            (meta(self.trio.stores[C2], "epoch"), meta(self.trio.stores[C2], "sequencer")), (2, C3)
        )
        self.assertEqual(self.trio.call("GET", C2, "/internal/status").json()["epoch"], 2)
        self.assertEqual(self.elect(C2, {"epoch": 2, "sequencer": C1}).code, 409)
        self.assertEqual(self.trio.epochs()[C2], (2, C3))

    def test_elect_refuses_a_candidate_lacking_what_we_forgot(self) -> None:
        """A replica that forgot its writes (up to 2 here) votes as if it still held them,
        until its sequencer has sent it everything: then it votes on its log again."""
        store = self.trio.stores[C2]
        for book in (0, 1):
            self.successResultOf(store.set_price(book, 3.0))
        self.successResultOf(store.wipe())
        self.assertEqual(self.trio.call("GET", C2, "/internal/status").json()["forgot_up_to"], 2)
        behind = self.elect(C2, {"epoch": 2, "sequencer": C3, "last_seq": 1})
        self.assertEqual(behind.code, 409, behind.body)
        self.assertIn("forgot", behind.json()["error"]["message"])
        self.trio.call(
            "POST", C2, REPLICATE_PATH, {"entries": [], "last_seq": 0, "epoch": 1, "sequencer": C1}
        )
        self.assertEqual(store.forgot_up_to, 0)
        self.trio.clock.advance(VOTE_GUARD)  # it heard from its sequencer: no vote before this
        self.assertEqual(self.elect(C2, {"epoch": 2, "sequencer": C3, "last_seq": 1}).code, 200)

    def test_elect_validates(self) -> None:
        """A non-integer epoch or a missing sequencer: 400."""
        for body in ({"epoch": "2", "sequencer": C3}, {"epoch": True, "sequencer": C3}, {"epoch": 2}):
            self.assertEqual(self.elect(C2, body).code, 400, body)
        self.assertEqual(self.trio.epochs()[C2], (1, C1))

    def test_replicate_refuses_an_older_epoch(self) -> None:
        """In epoch 2, a call from epoch 1: 409 with stale_epoch and our sequencer; nothing applied."""
        self.assertEqual(self.elect(C2, {"epoch": 2, "sequencer": C3}).code, 200)
        _, entry = self.successResultOf(self.trio.stores[C1].set_price(0, 3.0))
        body = {"entries": [[1, entry]], "last_seq": 1, "epoch": 1, "sequencer": C1}
        response = self.trio.call("POST", C2, REPLICATE_PATH, body)
        self.assertEqual(response.code, 409, response.body)
        answer = response.json()
        self.assertEqual((answer["stale_epoch"], answer["sequencer"]), (2, C3))
        self.assertEqual(answer["error"]["code"], 409)
        self.assertEqual(self.trio.state(C2)["last_seq"], 0)

    def test_replicate_current_epoch_applies(self) -> None:
        """A call from the current epoch is applied."""
        _, entry = self.successResultOf(self.trio.stores[C1].set_price(0, 3.0))
        body = {"entries": [[1, entry]], "last_seq": 1, "epoch": 1, "sequencer": C1}
        response = self.trio.call("POST", C2, REPLICATE_PATH, body)
        self.assertEqual((response.code, response.json()), (200, {"last_seq": 1}))

    def test_replicate_newer_epoch_adopted(self) -> None:
        """A call from a newer epoch: adopted, persisted, and applied."""
        _, entry = self.successResultOf(self.trio.stores[C3].set_price(0, 3.0))
        body = {"entries": [[1, entry]], "last_seq": 1, "epoch": 3, "sequencer": C3}
        response = self.trio.call("POST", C2, REPLICATE_PATH, body)
        self.assertEqual(response.code, 200, response.body)
        self.assertEqual(self.trio.epochs()[C2], (3, C3))
        self.assertEqual(meta(self.trio.stores[C2], "epoch"), 3)
        self.assertEqual(self.trio.price(C2, 0), 3.0)

    def test_replicate_validates_epoch(self) -> None:
        """A non-integer epoch: 400."""
        body = {"entries": [], "last_seq": 0, "epoch": "1", "sequencer": C1}
        self.assertEqual(self.trio.call("POST", C2, REPLICATE_PATH, body).code, 400)

    def test_log(self) -> None:
        """/internal/log: the entries after ``after``, at most ``limit``, in order."""
        store = self.trio.stores[C1]
        entries = [self.successResultOf(store.set_price(b, float(b))) for b in range(4)]
        expected = [[seq, entry] for seq, entry in entries]

        def log(query: str) -> Any:
            response = self.trio.call("GET", C1, f"/internal/log{query}")
            self.assertEqual(response.code, 200, response.body)
            return response.json()["entries"]

        self.assertEqual(log("?after=1&limit=2"), expected[1:3])
        self.assertEqual(log("?after=1&limit=1"), expected[1:2])
        self.assertEqual(log("?after=2"), expected[2:])
        self.assertEqual(log(""), expected)
        self.assertEqual(log("?after=4"), [])
        self.assertEqual(self.trio.call("GET", C1, "/internal/log?after=x").code, 400)

    def test_status_has_epoch(self) -> None:
        """/internal/status reports the epoch and its sequencer."""
        reply = self.trio.call("GET", C3, "/internal/status").json()
        self.assertEqual((reply["epoch"], reply["sequencer"]), (1, C1))

"""A whole Bazar cluster in memory: the front end, three catalog and three order replicas.

Every process is built by ``bazar.assembly`` as the taps build it in production (epochs,
elections and all), and started as twistd starts it: the first replica of each role finds
no epoch recorded, so it sequences writes. Except that:

* each store runs on an ``InlineRunner`` (synchronous, in-memory SQLite);
* every ``ReplicaClient`` goes through ONE in-memory network (``tests.unit.memnet``) whose
  root dispatches on the request's ``Host`` header to the app that the config gives that
  URL, so a call from one app to another is an in-memory HTTP request through real
  Twisted Web;
* the clock is a ``task.Clock`` that advances only when a test says so (each flush, below,
  advances it by 0 to end a "turn of the reactor": what was put off to its end runs, as
  ``bazar.batching``'s lookups do); so no heartbeat, probe or election deadline comes due
  unless a test moves the clock.

Any replica can be told to hold back its next request (``hold_next``) and answer it
later, to make a response arrive after something else has happened, or to be unreachable
(``unreachable``: it drops every connection unanswered, as a dead process would).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from typing import Any, NamedTuple

import treq
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bazar import config as bazar_config
from bazar.assembly import ReplicaProcess, build_frontend
from bazar.catalog.store import CatalogStore, seed_books
from bazar.client import ReplicaClient
from bazar.config import Config
from bazar.failover import Role
from bazar.frontend.app import FrontendApp
from bazar.leases import LEASE_TERM
from bazar.order.store import OrderStore
from bazar.protocol import SECRET_HEADER
from bazar.replication import Sequencer
from bazar.runners import InlineRunner
from bazar.storage import Entry, ReplicatedStore
from tests.invariants import stock_problems
from tests.unit.memnet import Delayed, Held, MemNetwork, Seen
from tests.unit.queuedrunner import QueuedRunner

SECRET = "unit-test-secret"
MAX_FLUSHES = 50
LEASE_STEP = 0.05  # seconds the clock moves at a time while a reply waits out a lease
LEASE_RENEWAL = 0.5  # seconds of a jump of the clock left for after the heartbeats renewed leases


class Reply(NamedTuple):
    """A response: status, headers (lower-case names, last value of each) and the body: decoded
    JSON, or the text itself for another content type (``/metrics``)."""

    code: int
    headers: dict[str, str]
    json: Any


class MemCluster:
    """Seven processes on one in-memory network; see the module docstring."""

    def __init__(
        self,
        test: SynchronousTestCase,
        cache_size: int = 5,
        books: int = 7,
        queued: bool = False,
        frontends: int = 1,
    ) -> None:
        """``queued``: each store's transactions run at the end of the turn (``QueuedRunner``),
        as on adbapi's thread, so writes form batches (``bazar.group_commit``). ``frontends``:
        how many front ends (``frontend-1``, ... for more than one; the first is ``frontend``,
        the default one)."""
        self.test = test  # whose successResultOf reads the stores' Deferreds, fired in memory
        self._tmp = tempfile.mkdtemp(prefix="bazar-unit-")
        cluster = {"secret": SECRET, "data_dir": self._tmp, "cache_size": cache_size, "books": books}
        if frontends > 1:
            cluster["frontends"] = frontends
        self.config: Config = bazar_config.parse({"cluster": cluster}, source="memcluster")
        self.clock = Clock()
        self.net = MemNetwork()
        self.dispatch = self.net.dispatch
        self.stores: dict[str, ReplicatedStore] = {}
        self.runners: dict[str, QueuedRunner] = {}
        self.processes: dict[str, ReplicaProcess] = {}
        self.service = MultiService()

        self.frontends: dict[str, FrontendApp] = {}
        for replica in self.config.frontends:
            built = build_frontend(self.config, self.client(), self.clock, replica.name)
            self.frontends[replica.name] = built.app
            self.net.add(replica, built.resource)
            if replica == self.config.frontend:
                frontend = built
        self.frontend = frontend.app
        for replica in (*self.config.catalog, *self.config.order):
            store_type = CatalogStore if replica.role == "catalog" else OrderStore
            runner = QueuedRunner(self.clock) if queued else InlineRunner()
            store = store_type(runner, **store_type.options(self.config))
            if isinstance(runner, QueuedRunner):
                self.runners[replica.name] = runner
            self._now(replica.name, store.setup())
            self.stores[replica.name] = store
            process = self.net.add_replica(self.config, replica.name, store, self.client(), self.clock)
            self.processes[replica.name] = process
            for child in process.services:
                child.setServiceParent(self.service)
        # Not the front end's health probe: a test probes when it means to (``probe``), so
        # what the front end knows of the replicas is the test's to set.
        self.probe = frontend.services
        self.service.startService()  # as twistd does: the sequencers lead, the timers run once
        self.flush()
        self.dispatch.seen.clear()  # what the start-up did (the order sequencer's first scan, ...)

    def client(self) -> ReplicaClient:
        """A client like each process's own: the cluster secret, the shared network, our clock."""
        return ReplicaClient(self.net.http, self.config.secret, self.clock)

    @property
    def apps(self) -> dict[str, Any]:
        return {name: process.app for name, process in self.processes.items()}

    @property
    def roles(self) -> dict[str, Role]:
        return {name: process.role for name, process in self.processes.items()}

    @property
    def sequencers(self) -> dict[str, Sequencer]:
        """Each role's sequencing machinery, on the replica that sequences it now."""
        return {role.replica.role: role.writer for role in self.roles.values() if role.writer is not None}

    def take_over(self, name: str, *others: str) -> None:
        """``name`` sequences its role in a new epoch, as after an election it won with the
        votes of ``others`` (they join the epoch; whoever is not named learns of it later,
        from the new sequencer, as a hung or cut-off one would)."""
        role = self.roles[name]
        epoch = role.epoch + 1
        for voter in others:
            self._now(voter, self.roles[voter].adopt(epoch, name))
        self._now(name, role.adopt(epoch, name))
        assert role.writer is not None

    def scan_orders(self, after: float = 0) -> None:
        """Advance the clock ``after`` seconds and tick every order replica's scan for takes
        without orders (``bazar.order.orphans``), as its timer would; then flush. The
        clock jumps in two: the heartbeats that the first jump fired are answered (they renew
        the replicas' read leases, which ran out in the jump, as they would not in time that
        flows) before the last LEASE_RENEWAL seconds, in which a scan falls due."""
        first = max(0.0, after - LEASE_RENEWAL)
        self.clock.advance(first)
        self.flush()
        self.clock.advance(after - first)
        for name in self.order_names:
            app = self.apps[name]
            app.orphans.tick(app.writer)
        self.flush()

    def close(self) -> None:
        if self.service.running:
            self.service.stopService()
        for store in self.stores.values():
            store.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- driving requests --------------------------------------------------------------

    def flush(self) -> None:
        """Move every byte between every in-memory client and server that can move now."""
        for _ in range(3):
            self._turn()

    def _turn(self) -> None:
        """One turn of a reactor: the bytes that can move, then what was put off until now."""
        self.net.flush()
        self.clock.advance(0)

    def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        to: str = "frontend",
        data: bytes | None = None,
        headers: dict[str, str | bytes] | None = None,
    ) -> Deferred[Reply]:
        """Start a request to the front end (or to replica ``to``); fires with its Reply.

        ``body`` is sent as JSON; ``data`` as raw bytes. No secret unless ``headers`` has one.
        Redirects are not followed.
        """
        url = self.url(to) + path
        if body is not None:
            data = json.dumps(body).encode()
        d = self.net.http.request(method, url, data=data, headers=headers or {}, allow_redirects=False)
        d.addCallback(self._read)
        return d

    def _read(self, response: Any) -> Deferred[Reply]:
        def decode(content: bytes) -> Reply:
            headers = {k.decode().lower(): v[-1].decode() for k, v in response.headers.getAllRawHeaders()}
            text = content.decode("utf-8", "replace")
            if not headers.get("content-type", "").startswith("application/json"):
                return Reply(response.code, headers, text)
            try:
                decoded = json.loads(content)
            except ValueError:
                raise AssertionError(f"not JSON ({response.code}): {content!r}") from None
            return Reply(response.code, headers, decoded)

        return treq.content(response).addCallback(decode)

    def wait(self, d: Deferred[Reply]) -> Reply:
        """Flush until ``d`` fires; its Reply (the test fails if it failed or is still in flight).
        If flushing is not enough, the clock moves on too, a LEASE_STEP at a time, for at most
        a lease term: a write waits out the read lease of a follower it cannot reach
        (``bazar.leases``)."""
        fired: list[bool] = []

        def seen(result: Any) -> Any:
            fired.append(True)
            return result

        d.addBoth(seen)
        for _ in range(MAX_FLUSHES):
            if fired:
                break
            self._turn()
        for _ in range(round((LEASE_TERM + LEASE_STEP) / LEASE_STEP)):
            if fired:
                break
            self.clock.advance(LEASE_STEP)
            self.flush()
        return self.test.successResultOf(d)

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.wait(self.send(method, path, body, **kwargs))

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Reply:
        return self.request("POST", path, json, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> Reply:
        return self.request("PUT", path, json, **kwargs)

    def internal(self, method: str, to: str, path: str, body: Any = None) -> Reply:
        """A request to ``to`` carrying the cluster secret, as another replica would send it."""
        return self.request(method, path, body, to=to, headers={SECRET_HEADER: self.config.secret})

    def delay_next(self, name: str) -> Delayed:
        """Keep the next request to ``name`` from reaching it until ``deliver()``: the replica
        does not see it (a write is not applied) in between."""
        delayed = self.dispatch.holds[name] = Delayed(self, name)
        return delayed

    def hold_next(self, name: str) -> Held:
        """Make ``name`` answer the next request it receives at once, but send the answer
        only on ``release()``: an answer computed before, and delivered after, whatever the
        test does in between."""
        held = self.dispatch.holds[name] = Held(self, name)
        return held

    def unreachable(self, name: str, down: bool = True) -> None:
        """Make ``name`` drop every connection (``down=False``: answer again)."""
        if down:
            self.dispatch.unreachable.add(name)
        else:
            self.dispatch.unreachable.discard(name)

    # -- looking inside ----------------------------------------------------------------

    def url(self, name: str) -> str:
        if name == "frontend":
            return self.config.frontend.url
        for replica in (*self.config.frontends, *self.config.catalog, *self.config.order):
            if replica.name == name:
                return replica.url
        raise KeyError(name)

    @property
    def catalog_names(self) -> list[str]:
        return [r.name for r in self.config.catalog]

    @property
    def order_names(self) -> list[str]:
        return [r.name for r in self.config.order]

    def books(self, name: str) -> list[dict[str, Any]]:
        """Every book in catalog replica ``name``'s own store."""
        store = self.stores[name]
        assert isinstance(store, CatalogStore)
        return self._now(name, store.all_books())

    def book(self, name: str, book_id: int) -> dict[str, Any]:
        store = self.stores[name]
        assert isinstance(store, CatalogStore)
        return store.book(book_id)

    def orders(self, name: str) -> list[dict[str, Any]]:
        """Every order in order replica ``name``'s own store."""
        store = self.stores[name]
        assert isinstance(store, OrderStore)
        return self._now(name, store.all_orders())

    def log(self, name: str) -> list[tuple[int, Entry]]:
        """Replica ``name``'s whole log."""
        return self._now(name, self.stores[name].entries_after(0, 2**62))

    def _now(self, name: str, d: Deferred[Any]) -> Any:
        """The result of a read of ``name``'s store, run now even if its runner is queued
        (whatever transactions wait before it run first)."""
        runner = self.runners.get(name)
        if runner is not None and not runner.paused:
            runner.run_all()
        return self.test.successResultOf(d)

    def stock_problems(self, catalogs: tuple[str, ...] = (), orders: tuple[str, ...] = ()) -> list[str]:
        """What breaks the conservation of stock (``tests.invariants``) on each of ``catalogs``
        with the orders of each of ``orders`` (by default every replica)."""
        initial = {book[0]: book[4] for book in seed_books(self.config.books)}
        problems = []
        for catalog in catalogs or self.catalog_names:
            current = {book["id"]: book["quantity"] for book in self.books(catalog)}
            log = self.log(catalog)
            for order in orders or self.order_names:
                found = stock_problems(initial, log, current, self.log(order))
                problems += [f"{catalog} with {order}'s orders: {problem}" for problem in found]
        return problems

    def cached_keys(self, frontend: str | None = None) -> list[str]:
        """The cache keys of ``frontend`` (by default the default one), least recently used first."""
        app = self.frontend if frontend is None else self.frontends[frontend]
        return app.cache.lru.keys()

    def pause(self, name: str) -> None:
        """As SIGSTOP: what reaches ``name`` waits, unread, until ``resume``."""
        self.dispatch.paused[name] = []

    def resume(self, name: str) -> None:
        self.dispatch.resume(name)
        self.flush()

    def run(self, seconds: float, step: float = 0.05) -> None:
        """Advance the clock ``seconds``, a ``step`` at a time, moving every byte in between
        (the sequencers' lease grants, heartbeats, ...)."""
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.flush()

    def served(self, name: str) -> list[Seen]:
        """The requests that reached ``name``, in order."""
        return [s for s in self.dispatch.seen if s.name == name]

"""A whole Bazar cluster in memory: the front end, three catalog and three order replicas.

Every app is wired the way ``bazar.replica.replica_service`` and the taps wire it in
production (the first replica of each role sequences, the catalog sequencer pushes
invalidations to the front end), except that:

* each store runs on an ``InlineRunner`` (synchronous, in-memory SQLite);
* every ``ReplicaClient`` shares ONE ``treq.testing.StubTreq`` whose resource dispatches
  on the request's ``Host`` header to the app that the config gives that URL, so a call
  from one app to another is an in-memory HTTP request through real Twisted Web;
* the clock is a ``task.Clock`` that only ever advances by 0 (each flush, below, ends a
  "turn of the reactor": what was put off to its end runs, as ``bazar.batching``'s lookups
  do), so no deadline ever fires.

Any replica can be told to hold back its next request (``hold_next``) and answer it
later, to make a response arrive after something else has happened, or to be unreachable
(``unreachable``: it drops every connection unanswered, as a dead process would).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Site

from bazar import config as bazar_config
from bazar.catalog import tap as catalog_tap
from bazar.catalog.store import CatalogStore, seed_books
from bazar.client import ReplicaClient
from bazar.config import Config, Replica
from bazar.failover import Role
from bazar.frontend.app import FrontendApp
from bazar.http_limits import make_site
from bazar.invalidation import FrontendNotifier, book_keys
from bazar.metrics import MeasuredResource
from bazar.order import tap as order_tap
from bazar.order.store import OrderStore
from bazar.protocol import SECRET_HEADER
from bazar.replica import measured
from bazar.replication import FollowerLink, Sequencer
from bazar.storage import Entry, InlineRunner, ReplicatedStore
from bazar.web import respond_json
from tests.invariants import stock_problems
from tests.unit.queuedrunner import QueuedRunner

SECRET = "unit-test-secret"
MAX_FLUSHES = 50


def result_of(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired; raises its failure, or if it has not fired."""
    results: list[Any] = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError(f"{d!r} has not fired")
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class Reply(NamedTuple):
    """A response: status, headers (lower-case names, last value of each) and the body: decoded
    JSON, or the text itself for another content type (``/metrics``)."""

    code: int
    headers: dict[str, str]
    json: Any


@dataclass
class Seen:
    """One request as a replica (or the front end) received it."""

    name: str
    method: str
    path: str
    query: str = ""  # after the "?", if any: which ids a lookup names, say


def _seen(name: str, request: IRequest) -> Seen:
    _, _, query = request.uri.decode().partition("?")
    return Seen(name, request.method.decode(), request.path.decode(), query)


class Held:
    """An answer a replica has computed but not sent yet (see ``MemCluster.hold_next``)."""

    def __init__(self, cluster: MemCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.request: IRequest | None = None
        self._writes: list[bytes] = []
        self._finished = False

    @property
    def arrived(self) -> bool:
        """The held request reached the replica and the replica has answered it (into the hold)."""
        return self.request is not None and self._finished

    def capture(self, request: IRequest, resource: IResource) -> Any:
        """Render ``request`` now, but keep what it writes instead of sending it."""
        self.request = request
        request.write = self._writes.append  # type: ignore[method-assign]
        request.finish = self._finish  # type: ignore[method-assign]
        body = resource.render(request)
        if body is not NOT_DONE_YET:
            self._writes.append(body)
            self._finished = True
        return NOT_DONE_YET

    def _finish(self) -> None:
        self._finished = True

    def release(self) -> None:
        """Send the answer the replica gave when the request arrived, and deliver it."""
        if not self.arrived:
            raise AssertionError(f"{self.name} has not answered a held request")
        request, self.request = self.request, None
        assert request is not None
        del request.write, request.finish  # type: ignore[attr-defined]
        for chunk in self._writes:
            request.write(chunk)
        request.finish()
        self.cluster.flush()


class Delayed:
    """A request that has reached a replica's host but not the replica yet (``MemCluster.delay_next``)."""

    def __init__(self, cluster: MemCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.request: IRequest | None = None
        self.resource: IResource | None = None

    @property
    def arrived(self) -> bool:
        return self.request is not None

    def capture(self, request: IRequest, resource: IResource) -> Any:
        self.request, self.resource = request, resource
        return NOT_DONE_YET

    def drop(self) -> None:
        """Never hand it over: the connection drops, as if the replica had died meanwhile."""
        if self.request is None:
            raise AssertionError(f"no request for {self.name} has been delayed")
        request, self.request = self.request, None
        request.transport.abortConnection()  # type: ignore[attr-defined]
        self.cluster.flush()

    def deliver(self) -> None:
        """Hand the request to the replica now, and its answer back to the caller."""
        if self.request is None or self.resource is None:
            raise AssertionError(f"no request for {self.name} has been delayed")
        request, self.request = self.request, None
        body = self.resource.render(request)
        if body is not NOT_DONE_YET:
            request.write(body)
            request.finish()
        self.cluster.flush()


class HostDispatch(Resource):
    """The root of the StubTreq: hands each request to the app whose URL has its Host."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.by_host: dict[str, str] = {}
        self.resources: dict[str, IResource] = {}
        self.seen: list[Seen] = []
        self.holds: dict[str, Held | Delayed] = {}
        self.unreachable: set[str] = set()
        self.refused: list[Seen] = []  # requests to an unreachable app, which it never saw
        # Apps that are paused (SIGSTOP): what reaches them waits here, unread, until resume().
        self.paused: dict[str, list[IRequest]] = {}

    def add(self, replica: Replica, resource: IResource) -> None:
        self.by_host[urlsplit(replica.url).netloc] = replica.name
        self.resources[replica.name] = resource

    def render(self, request: IRequest) -> Any:
        host = (request.getHeader("host") or "").lower()
        name = self.by_host.get(host)
        if name is None:
            # Not an app's answer: the shape tells a test that dispatch itself failed.
            return respond_json(request, {"dispatch": f"no app at host {host!r}"}, 599)
        if name in self.unreachable:
            # As if the process had died: the connection drops before any answer, which the
            # client sees as a transport error (ReplicaClient: Unavailable).
            self.refused.append(_seen(name, request))
            request.transport.abortConnection()  # type: ignore[attr-defined]
            return NOT_DONE_YET
        if name in self.paused:
            self.paused[name].append(request)
            return NOT_DONE_YET
        self.seen.append(_seen(name, request))
        held = self.holds.pop(name, None)
        if held is not None:
            return held.capture(request, self.resources[name])
        return self.resources[name].render(request)

    def resume(self, name: str) -> None:
        """A paused app reads what reached it meanwhile, in order; what its callers gave up on
        (their connection is gone) it never answers."""
        for request in self.paused.pop(name, []):
            if getattr(request, "_disconnected", False):
                continue
            body = self.render(request)
            if body is not NOT_DONE_YET:
                request.write(body)
                request.finish()


class MemCluster:
    """Seven apps behind one StubTreq; see the module docstring."""

    def __init__(
        self, cache_size: int = 5, books: int = 7, failover: bool = False, queued: bool = False
    ) -> None:
        """``failover``: every replica has a ``Role`` (epochs), as in production, so a test can
        make another replica take over (``take_over``); else the first of each role
        sequences for good. ``queued``: each store's transactions run at the end of the turn
        (``QueuedRunner``, in ``runners``), as on adbapi's thread, so writes form batches."""
        self._tmp = tempfile.mkdtemp(prefix="bazar-unit-")
        self.config: Config = bazar_config.parse(
            {"cluster": {"secret": SECRET, "data_dir": self._tmp, "cache_size": cache_size, "books": books}},
            source="memcluster",
        )
        self.clock = Clock()
        self.dispatch = HostDispatch()
        self.stub: Any = StubTreq(self.dispatch)  # its treq functions are set per instance
        # Serve through production's request class and settings (body limit, JSON for bad
        # paths, no tracebacks), not StubTreq's plain Site ones.
        production = make_site(self.dispatch)
        site = self.stub._agent._serverFactory  # treq.testing keeps its Site there
        assert isinstance(site, Site)
        site.requestFactory = production.requestFactory
        site.protocol = production.protocol
        site.displayTracebacks = production.displayTracebacks
        self.failover = failover
        self.stores: dict[str, ReplicatedStore] = {}
        self.queued = queued
        self.runners: dict[str, QueuedRunner] = {}
        self.apps: dict[str, Any] = {}
        self.sequencers: dict[str, Sequencer] = {}
        self.roles: dict[str, Role] = {}

        self.frontend = FrontendApp(self.config, self.client())
        self.dispatch.add(
            self.config.frontend,
            MeasuredResource(self.frontend.resource(), self.frontend.metrics, SECRET),
        )
        self._replicas(self.config.catalog, CatalogStore, catalog_tap._app, book_keys)
        self._replicas(self.config.order, OrderStore, order_tap._app, lambda entry: [])
        for role in self.roles.values():
            role.start()
            if role.writer is not None:
                self.sequencers[role.replica.role] = role.writer
        self.scan_orders()  # as each order replica's timer does when it starts
        self.dispatch.seen.clear()  # what the start-up did (the order sequencer's first scan)

    def client(self) -> ReplicaClient:
        """A client like each process's own: the cluster secret, the shared StubTreq, our clock."""
        return ReplicaClient(self.stub, self.config.secret, self.clock)

    def _replicas(
        self,
        replicas: tuple[Replica, ...],
        store_type: type[ReplicatedStore],
        make_app: Callable[..., Any],
        keys: Callable[[Entry], list[str]],
    ) -> None:
        """Mirrors ``replica_service``: one store and client each, the first one sequences."""
        for replica in replicas:
            runner = QueuedRunner(self.clock) if self.queued else InlineRunner()
            store = store_type(runner, **store_type.options(self.config))
            if isinstance(runner, QueuedRunner):
                self.runners[replica.name] = runner
            self._now(replica.name, store.setup())
            client = self.client()
            self.stores[replica.name] = store
            if self.failover:
                self._with_role(replica, replicas, store, client, make_app, keys)
                continue
            writer = None
            if replica == replicas[0]:
                links = [FollowerLink(f, client, store, self.clock) for f in replicas if f != replica]
                writer = Sequencer(store, links, FrontendNotifier(client, self.config.frontend, keys))
                self.sequencers[replica.role] = writer
            app = make_app(self.config, replica, store, client, writer)
            self.apps[replica.name] = app
            self.dispatch.add(replica, measured(app.resource(), replica, store, lambda w=writer: w, SECRET))

    def _with_role(
        self,
        replica: Replica,
        replicas: tuple[Replica, ...],
        store: ReplicatedStore,
        client: ReplicaClient,
        make_app: Callable[..., Any],
        keys: Callable[[Entry], list[str]],
    ) -> None:
        """A replica whose sequencer follows its ``Role``, started once every app is there."""
        notifier = FrontendNotifier(
            client, self.config.frontend, keys, epoch=lambda: (replica.role, role.epoch)
        )
        role = Role(replica, replicas, store, client, notifier, self.clock)
        app = make_app(self.config, replica, store, client, None, role)
        self.roles[replica.name] = role
        self.apps[replica.name] = app
        self.dispatch.add(replica, measured(app.resource(), replica, store, lambda: role.writer, SECRET))

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
        self.sequencers[role.replica.role] = role.writer

    def scan_orders(self, after: float = 0) -> None:
        """Advance the clock ``after`` seconds and tick every order replica's scan for takes
        without orders (``bazar.order.orphans``), as its timer would; then flush."""
        self.clock.advance(after)
        for name in self.order_names:
            app = self.apps[name]
            app.orphans.tick(app.writer)
        self.flush()

    def close(self) -> None:
        for role in self.roles.values():
            role.stop()
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
        self.stub.flush()
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
        d = self.stub.request(method, url, data=data, headers=headers or {}, allow_redirects=False)
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

        return self.stub.content(response).addCallback(decode)

    def wait(self, d: Deferred[Reply]) -> Reply:
        """Flush until ``d`` fires; its Reply."""
        results: list[Any] = []
        d.addBoth(results.append)
        for _ in range(MAX_FLUSHES):
            if results:
                break
            self._turn()
        if not results:
            raise AssertionError("no response: the request is still in flight")
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

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
        for replica in (*self.config.catalog, *self.config.order):
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
        return result_of(d)

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

    def cached_keys(self) -> list[str]:
        """The front end's cache keys, least recently used first."""
        return self.frontend.cache.lru.keys()

    def served(self, name: str) -> list[Seen]:
        """The requests that reached ``name``, in order."""
        return [s for s in self.dispatch.seen if s.name == name]

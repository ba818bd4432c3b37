"""The front end's public HTTP API.

Reads (info, search) are answered from the LRU cache, or fetched from the next catalog
replica in round-robin order and cached; misses for several books in one turn of the
reactor are fetched in one lookup (``bazar.batching``). Writes go to their role's
sequencer (else to the next replica, which forwards them) and are passed through: by the
time a replica answers, the write is on every replica and the catalog sequencer has
already told this front end which cache entries to drop (``/internal/invalidate``), so no
later read can see the old value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from klein import Klein
from prometheus_client.core import Metric
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from bazar import validation
from bazar.batching import Batcher
from bazar.channel import Handler
from bazar.client import ReplicaClient, ReplicaResponse
from bazar.config import Config, Replica
from bazar.errors import BadRequest, BazarError, NotSent, Unavailable, error_body
from bazar.frontend import openapi, storefront
from bazar.frontend.fastpath import ReadShortcut, UriKeys
from bazar.health import OLD_EPOCH, STATUS_FAILED, TURNED_A_READ_AWAY, Health, unreachable
from bazar.invalidation import PageKey, all_books_page_key, info_key, search_page_key
from bazar.lru import LRUCache
from bazar.metrics import Metrics, counter, gauge
from bazar.paging import Page, parse_page, public_page_headers, search_path
from bazar.protocol import (
    BOOKS_PATH,
    CACHE_HEADER,
    IDEMPOTENCY_HEADER,
    INVALIDATE_PATH,
    LOOKUP_PATH,
    ORDER_ROUTE,
    ORDERS_PATH,
    PRICE_ROUTE,
    PURCHASE_ROUTE,
    QUANTITY_ROUTE,
    REPLICA_HEADER,
    SEARCH_PATH,
    STATUS_PATH,
    fill,
)
from bazar.protocol.messages import Invalidate, Purchase
from bazar.readthrough import ReadThroughCache
from bazar.roundrobin import RoundRobin
from bazar.web import (
    RETRY_AFTER,
    Reply,
    check_secret,
    install_json_errors,
    json_bytes,
    json_reply,
    parse_id,
    parse_json,
    raw_header,
    read_body,
    read_json,
    respond,
    respond_json,
    respond_reply,
    runs_to_completion,
)

log = Logger()

STATUS_TIMEOUT = 2.0  # seconds: /bazar/cluster does not wait longer for a replica that hangs
READ_TIMEOUT = 2.0  # seconds before a read is retried on the next replica (reads take milliseconds)


def _cacheable(response: ReplicaResponse) -> bool:
    return response.code == 200


def _keyed_error(code: int, message: str, key: str) -> bytes:
    """A purchase's error, with its key; one that may have happened (5xx) says how to find out."""
    if code >= 500:
        message = validation.in_doubt(message, key)
    return json_bytes({"error": {"code": code, "message": message}, "idempotency_key": key})


def split_lookup(response: ReplicaResponse, book_ids: list[int]) -> dict[int, ReplicaResponse]:
    """A lookup's answer as the answers each book's own read would have had: same body, same
    replica, sequence number and epoch. An error for the whole lookup is every book's."""
    if response.code != 200:
        return {book_id: response for book_id in book_ids}
    answer = response.json()

    def one(code: int, body: bytes) -> ReplicaResponse:
        return ReplicaResponse(
            code, body, response.replica, {}, response.seq, response.sequencer, response.epoch
        )

    each = {book["id"]: one(200, json_bytes(book)) for book in answer["books"]}
    for error in answer["errors"]:
        each[error["id"]] = one(error["code"], error_body(error["code"], error["message"]))
    return each


class FrontendApp:
    app = Klein()
    install_json_errors(app)
    # A path with "//" in it (e.g. a topic that starts with %2F) is no path (404), not a redirect.
    app.url_map.merge_slashes = False

    def __init__(self, config: Config, client: ReplicaClient, metrics: Metrics | None = None) -> None:
        self.config = config
        self.client = client
        self.cache: ReadThroughCache[str, ReplicaResponse] = ReadThroughCache(
            LRUCache(config.cache_size), cacheable=_cacheable, version=lambda response: response.seq
        )
        self.uri_keys = UriKeys(max(64, 4 * config.cache_size))
        self.catalogs = RoundRobin(config.catalog)
        # Misses for different books in one turn of the reactor share one read.
        self.lookups: Batcher[int, ReplicaResponse] = Batcher(self._look_up, client.clock)
        self.orders = RoundRobin(config.order)
        self.health = Health(self._replicas())
        self.health.on_new_epoch = self._new_epoch
        self.metrics = metrics if metrics is not None else Metrics("frontend", "frontend")
        self.metrics.collect_with(self._collect)

    def _new_epoch(self, role: str, previous: int, epoch: int) -> None:
        """Another catalog replica took over sequencing: forget every cached answer, which
        may show a write the new sequencer never had (see ``bazar.readthrough``)."""
        if role != "catalog" or not previous:
            return  # the first epoch heard of: every cached answer came from a replica in it
        dropped = self.cache.invalidate_all()
        log.info(
            "catalog epoch {epoch} (was {previous}): dropped {dropped} cached answers",
            epoch=epoch,
            previous=previous,
            dropped=dropped,
        )

    def resource(self) -> IResource:
        """The app behind its lean path for cache hits (see ``bazar.frontend.fastpath``)."""
        return ReadShortcut(self.app.resource(), self.cache.lru, self.uri_keys)

    def _collect(self) -> list[Metric]:
        stats = self.cache.lru.stats
        return [
            counter("bazar_cache_hits", "Reads answered from the cache", stats.hits),
            counter("bazar_cache_misses", "Reads the cache could not answer", stats.misses),
            counter("bazar_cache_evictions", "Entries dropped to make room", stats.evictions),
            counter(
                "bazar_cache_invalidations",
                "Entries dropped because a write changed them",
                stats.invalidations,
            ),
            gauge("bazar_cache_entries", "Entries in the cache", [], [([], len(self.cache.lru))]),
            gauge(
                "bazar_replica_up",
                "1 if the front end reads from the replica (it answers, is ready and not lagging)",
                ["replica", "role"],
                [([r.name, r.role], float(self.health.readable(r))) for r in self._replicas()],
            ),
        ]

    def _replicas(self) -> list[Replica]:
        return [*self.config.catalog, *self.config.order]

    def _call(
        self, method: str, replica: Replica, path: str, body: Any = None, timeout: float | None = None
    ) -> Deferred[ReplicaResponse]:
        """Every call to a replica goes through here: one that cannot reach it marks it down."""

        def failed(failure: Failure) -> Failure:
            failure.trap(Unavailable)
            self.health.mark(replica, False, unreachable(failure), failure.getErrorMessage())
            return failure

        return self.client.request(method, replica, path, body, timeout=timeout).addErrback(failed)

    def _write_order(self, replicas: RoundRobin[Replica]) -> list[Replica]:
        """Where a write goes: the role's sequencer first (a follower would only forward it to
        the sequencer, one more hop), then the others in turn."""
        rotation = replicas.rotation()
        sequencer = self.health.sequencer(rotation[0].role)
        first = [r for r in rotation if r.name == sequencer]
        return first + [r for r in rotation if r.name != sequencer]

    @inlineCallbacks
    def _write(self, replicas: RoundRobin[Replica], method: str, path: str, body: Any) -> Any:
        """Send a write to the sequencer, or else the next replica in turn, that is up. Only
        a write that never left (the connection was refused) is sent on to the next one: a
        write that may have arrived is never sent twice."""
        error: Unavailable | None = None
        order = self._write_order(replicas)
        for replica in order:
            if not self.health.is_up(replica):
                continue
            try:
                return (yield self._call(method, replica, path, body))
            except NotSent as e:
                error = e
        raise self._none_can_answer(order[0].role, f"{method} {path}", "take it", error, NotSent)

    # -- reads through the cache -----------------------------------------------------

    @app.route("/bazar/info/all", methods=["GET"])
    def info_all(self, request: IRequest) -> Any:
        """One page of every book, by id (``limit``, ``offset``, ``after``: see ``bazar.paging``)."""
        page = parse_page(request)
        return self._paged_read(request, all_books_page_key(page), page, BOOKS_PATH, "/bazar/info/all")

    @app.route("/bazar/info/<book_id>", methods=["GET"])
    def info(self, request: IRequest, book_id: str) -> Any:
        book = parse_id(book_id)
        return self._cached_read(request, info_key(book), lambda: self.lookups.load(book))

    @app.route("/bazar/search/<path:topic>", methods=["GET"])
    def search(self, request: IRequest, topic: str) -> Any:
        """One page of a topic's books, by id."""
        if not topic.strip():
            raise BadRequest("a topic is required")
        page = parse_page(request)
        return self._paged_read(
            request,
            search_page_key(topic, page),
            page,
            search_path(SEARCH_PATH, topic),
            search_path("/bazar/search", topic),
        )

    def _paged_read(self, request: IRequest, key: PageKey, page: Page, path: str, public_path: str) -> Any:
        """``_cached_read`` for one page of a listing: the answer carries its paging headers
        (total, Link to the next page), cached with it and sent on hits and misses alike."""

        def public(response: ReplicaResponse) -> ReplicaResponse:
            if response.code != 200:
                return replace(response, headers={})
            return replace(response, headers=public_page_headers(response.headers, public_path, page))

        path = f"{path}?{page.query()}"
        return self._cached_read(request, key, lambda: self._read(self.catalogs, path).addCallback(public))

    def _cached_read(
        self, request: IRequest, key: str, fetch: Callable[[], Deferred[ReplicaResponse]]
    ) -> Any:
        """Answer from the cache, or through ``fetch`` (then cached): a read at the next
        catalog replica, with only the headers the client should see."""
        # The lean path answers this URI next time, from the cache or through the same read.
        self.uri_keys.learn(request.uri, key, lambda again: self._read_through(again, key, fetch))
        return self._read_through(request, key, fetch)

    def _read_through(
        self, request: IRequest, key: str, fetch: Callable[[], Deferred[ReplicaResponse]]
    ) -> Any:
        cached, pending = self.cache.get(key, fetch)
        if pending is None:
            assert cached is not None
            request.setHeader(CACHE_HEADER, "hit")
            for name, value in cached.headers.items():
                request.setHeader(name, value)
            return respond(request, cached.body, cached.code)
        request.setHeader(CACHE_HEADER, "miss")
        return pending.addCallback(self._relay, request)

    def _look_up(self, book_ids: list[int]) -> Deferred[dict[int, ReplicaResponse]]:
        """Every book a batch of misses wants, in one read (see ``bazar.batching``)."""
        path = f"{LOOKUP_PATH}?ids={','.join(map(str, book_ids))}"
        return self._read(self.catalogs, path).addCallback(split_lookup, book_ids)

    @inlineCallbacks
    def _read(self, replicas: RoundRobin[Replica], path: str) -> Any:
        """GET from the next readable replica in turn; from the one after if it cannot be
        reached, cannot serve reads now (503: e.g. a sequencer holding a write no majority
        has), or answers from an older epoch than the newest one known (it may lack writes
        acknowledged since the takeover). Its probe says when it may be read again."""
        error: Unavailable | None = None
        rotation = replicas.rotation()
        for replica in rotation:
            if not self.health.readable(replica):
                continue
            try:
                response = yield self._call("GET", replica, path, timeout=READ_TIMEOUT)
            except Unavailable as e:
                error = e
                continue
            if response.code == 503:
                error, why = Unavailable(response.error_message()), TURNED_A_READ_AWAY
            elif response.epoch and not self.health.current_epoch(replica.role, response.epoch):
                error = Unavailable(f"{replica.name} answered from epoch {response.epoch}, an old one")
                why = OLD_EPOCH
            else:
                return response
            self.health.mark(replica, False, why, error.message)
        raise self._none_can_answer(rotation[0].role, f"GET {path}", "answer", error)

    @staticmethod
    def _none_can_answer(
        role: str,
        call: str,
        verb: str,
        error: Unavailable | None,
        kind: type[Unavailable] = Unavailable,
    ) -> Unavailable:
        """The 503 for a call no replica of a role could serve, in the client's words; which
        replica failed how (``error``, the last one) goes to the log and ``/bazar/cluster``."""
        log.warn(
            "{call}: no {role} replica could {verb}: {why}",
            call=call,
            role=role,
            verb=verb,
            why=error.message if error is not None else "none is up",
        )
        return kind(f"no {role} replica can answer right now; try again shortly")

    @staticmethod
    def _relay(response: ReplicaResponse, request: IRequest) -> bytes:
        request.setHeader(REPLICA_HEADER, response.replica)
        for name, value in response.headers.items():
            request.setHeader(name, value)
        if response.code == 503:
            request.setHeader(b"Retry-After", RETRY_AFTER)
        return respond(request, response.body, response.code)

    # -- writes and order reads ------------------------------------------------------

    @app.route("/bazar/purchase/<book_id>", methods=["POST"])
    @runs_to_completion
    def purchase(self, request: IRequest, book_id: str) -> Any:
        """Every purchase has a key: the client's, or one given here. It ties the take at the
        catalog to the order (see ``bazar.order.orphans``), and every answer gives it back
        (header and body), so that a client told 503 can ask how its purchase ended: a retry
        with the key returns the order if there is one, and buys nothing more."""
        raw = raw_header(request, IDEMPOTENCY_HEADER)
        key = validation.idempotency_key(raw) or validation.new_idempotency_key()
        request.setHeader(IDEMPOTENCY_HEADER, key)
        d = maybeDeferred(self._purchase, request, book_id, key)
        return d.addErrback(self._purchase_failed, request, key)

    def _purchase(self, request: IRequest, book_id: str, key: str) -> Deferred[bytes]:
        book = parse_id(book_id)
        quantity = validation.purchase_quantity(read_json(request, required=False))
        body = Purchase(quantity, key).body()
        d = self._write(self.orders, "POST", fill(PURCHASE_ROUTE, book), body)
        return d.addCallback(self._keyed_answer, key).addCallback(self._relay, request)

    @staticmethod
    def _keyed_answer(response: ReplicaResponse, key: str) -> ReplicaResponse:
        """An order replica's error answer, with the key (its order is the key's, and says so)."""
        if response.code < 400:
            return response
        try:
            error = response.json()["error"]
            code, message = error["code"], error["message"]
        except (ValueError, TypeError, KeyError):
            return response
        return replace(response, body=_keyed_error(code, message, key))

    @staticmethod
    def _purchase_failed(failure: Failure, request: IRequest, key: str) -> bytes:
        """This front end's own error for a purchase (a bad request, an order replica that
        cannot be reached or did not answer in time), with the key."""
        failure.trap(BazarError)
        error = failure.value
        assert isinstance(error, BazarError)
        if error.code == 503:
            request.setHeader(b"Retry-After", RETRY_AFTER)
        return respond(request, _keyed_error(error.code, error.message, key), error.code)

    @app.route("/bazar/update_price/<book_id>", methods=["PUT"])
    @runs_to_completion
    def update_price(self, request: IRequest, book_id: str) -> Any:
        book = parse_id(book_id)
        body = {"price": validation.new_price(read_json(request))}
        return self._send(request, self.catalogs, "PUT", fill(PRICE_ROUTE, book), body)

    @app.route("/bazar/update_quantity/<book_id>", methods=["PUT"])
    @runs_to_completion
    def update_quantity(self, request: IRequest, book_id: str) -> Any:
        book = parse_id(book_id)
        body = validation.quantity_change(read_json(request))
        return self._send(request, self.catalogs, "PUT", fill(QUANTITY_ROUTE, book), body)

    def _send(
        self, request: IRequest, replicas: RoundRobin[Replica], method: str, path: str, body: Any
    ) -> Any:
        return self._write(replicas, method, path, body).addCallback(self._relay, request)

    @app.route("/bazar/orders", methods=["GET"])
    def orders_all(self, request: IRequest) -> Any:
        return self._read(self.orders, ORDERS_PATH).addCallback(self._relay, request)

    @app.route("/bazar/orders/<order_id>", methods=["GET"])
    def order(self, request: IRequest, order_id: str) -> Any:
        order = parse_id(order_id, "order id")
        return self._read(self.orders, fill(ORDER_ROUTE, order)).addCallback(self._relay, request)

    # -- the cluster at a glance -------------------------------------------------------

    @app.route("/bazar/cluster", methods=["GET"])
    @inlineCallbacks
    def cluster(self, request: IRequest) -> Any:
        """Every replica's name, role, URL, health and data digest: equal digests mean equal data."""
        replicas = self._replicas()
        results = yield DeferredList(
            [
                self._call("GET", r, STATUS_PATH, timeout=STATUS_TIMEOUT).addCallback(
                    lambda r: r.raise_for_error().json()
                )
                for r in replicas
            ],
            consumeErrors=True,
        )
        out = []
        for replica, (ok, result) in zip(replicas, results, strict=True):
            why = self.health.why_unreadable(replica)
            if not ok and why is None:  # it answered its status with an error
                why = STATUS_FAILED
            # The same fields for every replica: null where it could not be asked.
            entry: dict[str, Any] = {
                "name": replica.name,
                "role": replica.role,
                "url": replica.url,
                "healthy": why is None,
                "why_unhealthy": why,
                "error": None if ok else result.getErrorMessage(),
                "last_seq": result["last_seq"] if ok else None,
                "digest": result["digest"] if ok else None,
                "sequencer": result["sequencer"] if ok else None,
                "epoch": result.get("epoch", 1) if ok else None,
            }
            out.append(entry)
        stats = self.cache.lru.stats
        cache = {
            "capacity": self.cache.lru.capacity,
            "size": len(self.cache.lru),
            "keys": self.cache.lru.keys(),
            "hits": stats.hits,
            "misses": stats.misses,
            "evictions": stats.evictions,
            "invalidations": stats.invalidations,
        }
        return respond_json(request, {"replicas": out, "cache": cache})

    @app.route("/openapi.json", methods=["GET"])
    def openapi_document(self, request: IRequest) -> Any:
        """This API's OpenAPI 3 document: bazar/frontend/openapi.json, as is."""
        return respond(request, openapi.document_bytes())

    # -- internal ----------------------------------------------------------------------

    @app.route(INVALIDATE_PATH, methods=["POST"])
    def invalidate(self, request: IRequest) -> Any:
        check_secret(request, self.config.secret)
        return respond_reply(request, self.invalidate_call(read_body(request)))

    def channel_handlers(self) -> dict[str, Handler]:
        """The carried routes the front end serves over the channel (the same handlers as HTTP)."""
        return {INVALIDATE_PATH: self.invalidate_call}

    def invalidate_call(self, raw: bytes) -> Reply:
        """Called by a sequencer before it acknowledges a write: drop these cache keys, stop
        reading from these ``lagging`` followers; or, later, read from ``caught_up`` ones again.
        (Over HTTP or the channel: ``INVALIDATE_PATH``.)"""
        message = Invalidate.parse(parse_json(raw))  # all checked first
        seq = message.seq
        if message.role is not None and message.epoch is not None:
            self.health.current_epoch(message.role, message.epoch)
            if message.sequencer is not None:
                self.health.report_sequencer(message.role, message.epoch, message.sequencer)
        for name in message.lagging or ():
            self.health.report_lagging(name, True, seq, pushed=True)
        for name in message.caught_up or ():
            self.health.report_lagging(name, False, seq, pushed=True)
        for key in message.keys:
            self.cache.invalidate(key, seq)
        return json_reply({"invalidated": message.keys})

    @app.route("/", methods=["GET"])
    def index(self, request: IRequest) -> Any:
        """The storefront page (plain HTML/JS over the API below)."""
        return storefront.index_resource()

    @app.route("/static/", branch=True, methods=["GET"])
    def static(self, request: IRequest) -> Any:
        """The page's assets; an unknown one is a JSON 404 like any unknown path."""
        return storefront.static_resource()

"""The front end's public HTTP API: the routes, and the parts they are answered with.

Reads (info, search) go through the cache (``bazar.frontend.cached_reads``). Writes go to
their role's sequencer (else to the next replica, which forwards them; see
``bazar.frontend.replicas``) and are passed through: by the time a replica answers, the
write is on every replica and the catalog sequencer has already told this front end which
cache entries to drop (``bazar.frontend.internal``), so no later read can see the old
value. ``/bazar/cluster`` is ``bazar.frontend.status_page``.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from bazar import validation
from bazar.channel import Handler
from bazar.client import ReplicaClient, ReplicaResponse
from bazar.completion import runs_to_completion
from bazar.config import Config, Replica
from bazar.errors import BadRequest
from bazar.frontend import openapi, storefront
from bazar.frontend.answers import keyed_answer, purchase_failed, relay
from bazar.frontend.cached_reads import CachedReads
from bazar.frontend.internal import Internal
from bazar.frontend.replicas import Replicas
from bazar.frontend.status_page import cluster_view
from bazar.invalidation import all_books_page_key, info_key, search_page_key
from bazar.json_errors import install_json_errors
from bazar.jsonio import raw_header, read_json, respond, respond_json
from bazar.leases import Leases, Now
from bazar.metrics import Metrics
from bazar.paging import parse_page, search_path
from bazar.protocol import (
    BOOKS_PATH,
    FRONTEND_STATUS_PATH,
    IDEMPOTENCY_HEADER,
    INVALIDATE_PATH,
    ORDER_ROUTE,
    ORDERS_PATH,
    PRICE_ROUTE,
    PURCHASE_ROUTE,
    QUANTITY_ROUTE,
    SEARCH_PATH,
    fill,
)
from bazar.protocol.messages import Purchase
from bazar.roundrobin import SequencerFirst
from bazar.secret import check_secret


class FrontendApp:
    app = Klein()
    install_json_errors(app)
    # A path with "//" in it (e.g. a topic that starts with %2F) is no path (404), not a redirect.
    app.url_map.merge_slashes = False

    def __init__(
        self,
        config: Config,
        client: ReplicaClient,
        metrics: Metrics | None = None,
        name: str | None = None,
        now: Now | None = None,
    ) -> None:
        """Front end ``name`` of ``config`` (by default the default one); ``now``: the clock
        its cache leases are counted on (``bazar.leases``; by default the client's)."""
        self.config = config
        self.me = config.frontend_named(name) if name is not None else config.frontend
        self.replicas = Replicas(config, client)
        self.health = self.replicas.health
        self.leases = Leases(now if now is not None else client.clock.seconds)
        self.reads = CachedReads(config, self.replicas, lambda: self.leases.valid("catalog"), self.me.name)
        self.cache = self.reads.cache
        self.uri_keys = self.reads.uri_keys
        self.metrics = metrics if metrics is not None else Metrics("frontend", self.me.name)
        self.internal = Internal(config.secret, self.replicas, self.cache, self.metrics, self.leases)
        self.peers = [f for f in config.frontends if f.name != self.me.name]

    def resource(self) -> IResource:
        """The app behind its lean path for cache hits (see ``bazar.frontend.fastpath``)."""
        return self.reads.shortcut(self.app.resource())

    def channel_handlers(self) -> dict[str, Handler]:
        """The carried routes the front end serves over the channel (the same handlers as HTTP)."""
        return self.internal.channel_handlers()

    # -- reads through the cache -----------------------------------------------------

    @app.route("/bazar/info/all", methods=["GET"])
    def info_all(self, request: IRequest) -> Any:
        """One page of every book, by id (``limit``, ``offset``, ``after``: see ``bazar.paging``)."""
        page = parse_page(request)
        return self.reads.page(request, all_books_page_key(page), page, BOOKS_PATH, "/bazar/info/all")

    @app.route("/bazar/info/<book_id>", methods=["GET"])
    def info(self, request: IRequest, book_id: str) -> Any:
        book = validation.parse_id(book_id)
        return self.reads.book(request, info_key(book), book)

    @app.route("/bazar/search/<path:topic>", methods=["GET"])
    def search(self, request: IRequest, topic: str) -> Any:
        """One page of a topic's books, by id."""
        if not topic.strip():
            raise BadRequest("a topic is required")
        page = parse_page(request)
        return self.reads.page(
            request,
            search_page_key(topic, page),
            page,
            search_path(SEARCH_PATH, topic),
            search_path("/bazar/search", topic),
        )

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
        return d.addErrback(purchase_failed, request, key)

    def _purchase(self, request: IRequest, book_id: str, key: str) -> Deferred[bytes]:
        book = validation.parse_id(book_id)
        quantity = validation.purchase_quantity(read_json(request, required=False))
        body = Purchase(quantity, key).body()
        d = self.replicas.write(self.replicas.orders, "POST", fill(PURCHASE_ROUTE, book), body)
        return d.addCallback(keyed_answer, key).addCallback(relay, request)

    @app.route("/bazar/update_price/<book_id>", methods=["PUT"])
    @runs_to_completion
    def update_price(self, request: IRequest, book_id: str) -> Any:
        book = validation.parse_id(book_id)
        body = {"price": validation.new_price(read_json(request))}
        return self._send(request, self.replicas.catalogs, "PUT", fill(PRICE_ROUTE, book), body)

    @app.route("/bazar/update_quantity/<book_id>", methods=["PUT"])
    @runs_to_completion
    def update_quantity(self, request: IRequest, book_id: str) -> Any:
        book = validation.parse_id(book_id)
        body = validation.quantity_change(read_json(request))
        return self._send(request, self.replicas.catalogs, "PUT", fill(QUANTITY_ROUTE, book), body)

    def _send(
        self, request: IRequest, replicas: SequencerFirst[Replica], method: str, path: str, body: Any
    ) -> Deferred[bytes]:
        d: Deferred[ReplicaResponse] = self.replicas.write(replicas, method, path, body)
        return d.addCallback(relay, request)

    @app.route("/bazar/orders", methods=["GET"])
    def orders_all(self, request: IRequest) -> Any:
        return self.replicas.read(self.replicas.orders, ORDERS_PATH).addCallback(relay, request)

    @app.route("/bazar/orders/<order_id>", methods=["GET"])
    def order(self, request: IRequest, order_id: str) -> Any:
        order = validation.parse_id(order_id, "order id")
        return self.replicas.read(self.replicas.orders, fill(ORDER_ROUTE, order)).addCallback(relay, request)

    # -- the cluster at a glance, the API's description, the storefront ---------------

    @app.route("/bazar/cluster", methods=["GET"])
    def cluster(self, request: IRequest) -> Any:
        """Every replica's name, role, URL, health and data digest: equal digests mean equal data."""
        view = cluster_view(self.replicas, self.cache.lru, self.internal.status(self.me.name), self.peers)
        return view.addCallback(lambda answer: respond_json(request, answer))

    @app.route("/openapi.json", methods=["GET"])
    def openapi_document(self, request: IRequest) -> Any:
        """This API's OpenAPI 3 document: bazar/frontend/openapi.json, as is."""
        return respond(request, openapi.document_bytes())

    @app.route("/", methods=["GET"])
    def index(self, request: IRequest) -> Any:
        """The storefront page (plain HTML/JS over the API below)."""
        return storefront.index_resource()

    @app.route("/static/", branch=True, methods=["GET"])
    def static(self, request: IRequest) -> Any:
        """The page's assets; an unknown one is a JSON 404 like any unknown path."""
        return storefront.static_resource()

    # -- internal ----------------------------------------------------------------------

    @app.route(INVALIDATE_PATH, methods=["POST"])
    def invalidate(self, request: IRequest) -> Any:
        return self.internal.invalidate(request)

    @app.route(FRONTEND_STATUS_PATH, methods=["GET"])
    def frontend_status(self, request: IRequest) -> Any:
        """This front end's cache figures and leases, for another front end's ``/bazar/cluster``."""
        check_secret(request, self.config.secret)
        return respond_json(request, self.internal.status(self.me.name))

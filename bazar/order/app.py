"""The order replica's HTTP API (internal: every call needs the cluster secret).

A purchase reaching a follower is forwarded to the order sequencer. The sequencer has the
catalog take the stock (one atomic conditional decrement at the catalog sequencer,
replicated and invalidated before it answers), then records the order under the next
sequence number and replicates it to every order follower, and only then answers. Both
writes carry the purchase's idempotency key, so that a take whose order was never recorded
is found and given its order (``bazar.order.orphans``). Under load, the takes and then the
orders of the purchases that queue meanwhile go in batches (``bazar.order.takes``).
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.application.internet import TimerService
from twisted.application.service import IService
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from bazar import validation
from bazar.channel import Handler
from bazar.client import ReplicaClient
from bazar.completion import runs_to_completion
from bazar.config import Replica
from bazar.errors import BazarError, ReplicaError, Unavailable
from bazar.failover import Role
from bazar.json_errors import install_json_errors
from bazar.jsonio import json_reply, parse_json, read_body, respond_json, respond_reply
from bazar.order.orphans import CHECK_INTERVAL, Orphans
from bazar.order.store import OrderStore
from bazar.order.takes import TakeBatcher
from bazar.protocol import BUY_ROUTE, BUYS_PATH, ORDER_ROUTE, ORDERS_PATH, PURCHASE_ROUTE, fill
from bazar.protocol.messages import Purchase
from bazar.replica import FORWARD_TIMEOUT, ReplicaApp, forward
from bazar.roundrobin import SequencerFirst

log = Logger()


class OrderApp(ReplicaApp):
    app = Klein()
    install_json_errors(app)

    store: OrderStore

    def __init__(
        self,
        replica: Replica,
        store: OrderStore,
        client: ReplicaClient,
        catalogs: tuple[Replica, ...],
        secret: str,
        role: Role,
    ) -> None:
        """Purchases take their stock from the catalog sequencer, through ``catalogs``."""
        super().__init__(replica, store, client, secret, role)
        # Asked first: the catalog sequencer as last heard of (at first, the first listed).
        self.catalogs = SequencerFirst(catalogs)
        self.catalogs.heard(catalogs[0].name)
        self.orphans = Orphans(store, client, self.catalogs.order, client.clock)
        # Takes that queue while one call is under way go in the next, their orders in one batch.
        self.takes = TakeBatcher(
            lambda book, body: self._at_catalog(fill(BUY_ROUTE, book), body),
            lambda body: self._at_catalog(BUYS_PATH, body),
            store.commits.together,
        )

    def services(self, clock: IReactorTime) -> list[IService]:
        """While this replica sequences orders: the scans for takes without orders."""
        scans = TimerService(CHECK_INTERVAL, self._scan)
        scans.clock = clock
        return [scans]

    def _scan(self) -> None:
        self.orphans.tick(self.writer)  # not returned: a scan that fails must not stop the timer

    @inlineCallbacks
    def _at_catalog(self, path: str, body: dict[str, Any]) -> Any:
        """Take stock at the catalog sequencer (one take or a batch, ``path``): every catalog
        answer names it, and any catalog replica would forward there (one hop more). A request
        that failed goes on to the next replica: each take carries its purchase's key, so a
        catalog that took the stock already answers the repeat with the original. A replica
        that failed is asked last next time."""
        error: Unavailable | None = None
        for catalog in self.catalogs.order():
            try:
                response = yield self.client.request("POST", catalog, path, body, timeout=FORWARD_TIMEOUT)
            except Unavailable as e:
                error = e
                self.catalogs.failed(catalog)
                continue
            if response.code == Unavailable.code:
                # A catalog sequencer cut off from its followers, but not from us, refuses every
                # take (no majority) and names itself: asked first each time, it held up every
                # purchase for as long as the cut lasted, though the others had elected another.
                error = Unavailable(response.error_message())
                self.catalogs.failed(catalog)
                continue
            self.catalogs.heard(response.sequencer or catalog.name)
            return response.raise_for_error().json()
        log.warn(
            "no catalog replica could take the stock: {why}", why=error.message if error else "none listed"
        )
        raise Unavailable(
            "no catalog replica can answer right now; try again shortly"
        )  # as the front end says

    @app.route(PURCHASE_ROUTE, methods=["POST"])
    @runs_to_completion
    def purchase(self, request: IRequest, book_id: str) -> Any:
        return respond_reply(request, self.purchase_call(read_body(request), book_id))

    @inlineCallbacks
    def purchase_call(self, raw: bytes, book_id: str) -> Any:
        """Buy (over HTTP or the channel: ``PURCHASE_ROUTE``); the order, or why not."""
        book = validation.parse_id(book_id)
        purchase = Purchase.parse(parse_json(raw, required=False))
        # Every purchase has a key (the front end gives one to each its client sent without):
        # it ties the take at the catalog to the order (see ``bazar.order.orphans``).
        key = purchase.idempotency_key or validation.new_idempotency_key()
        body = Purchase(purchase.quantity, key).body()
        try:
            return (yield self._purchase(book, body, key))
        except BazarError as e:
            if e.code < 500:
                raise  # refused: nothing was bought
            raise ReplicaError(e.code, validation.in_doubt(e.message, key)) from None

    @inlineCallbacks
    def _purchase(self, book: int, body: dict[str, Any], key: str) -> Any:
        writer = self.writer  # kept: if another replica takes over meanwhile, its quorum fails
        if writer is None:
            return (yield forward(self.client, self.sequencer, "POST", fill(PURCHASE_ROUTE, book), body))
        yield self.orphans.ready(writer)  # every take made before this sequencer has its order
        self.orphans.started(key, writer)
        try:
            # The same key goes to the catalog: a retry after a crash between taking the
            # stock and recording the order gets the original stock answer and takes nothing
            # twice; and a take whose order is never recorded here is found by its key.
            bought = yield self.takes.take(book, body)
            if writer.retired:  # replaced while the catalog answered: the new sequencer records it
                raise Unavailable(f"{self.replica.name} no longer sequences orders")
            entry = yield writer.write(
                self.store.record(
                    book, bought["title"], bought["price"], body["quantity"], key, self.orphans.watermark
                )
            )
        finally:
            self.orphans.finished(key, writer)
        order = entry["order"]
        return json_reply({**order, "message": f"bought book {order['title']}", "idempotency_key": key})

    def channel_handlers(self) -> dict[str, Handler]:
        return {**super().channel_handlers(), PURCHASE_ROUTE: self.purchase_call}

    @app.route(ORDERS_PATH, methods=["GET"])
    @inlineCallbacks
    def orders(self, request: IRequest) -> Any:
        orders = yield self.read_committed(self.store.all_orders)
        return respond_json(request, orders)

    @app.route(ORDER_ROUTE, methods=["GET"])
    @inlineCallbacks
    def order(self, request: IRequest, order_id: str) -> Any:
        order_number = validation.parse_id(order_id, "order id")
        order = yield self.read_committed(lambda: self.store.order(order_number))
        return respond_json(request, order)

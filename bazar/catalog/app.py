"""The catalog replica's HTTP API (internal: every call needs the cluster secret).

Reads are served from this replica's own SQLite file. Writes go to the catalog sequencer:
a follower forwards them; the sequencer applies each atomically, replicates it to every
follower and has the front end drop its cached copies, all before it answers.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from bazar import validation
from bazar.batching import MAX_LOOKUP
from bazar.catalog.store import Book, BookPage, CatalogStore, no_such_book
from bazar.channel import Handler
from bazar.completion import runs_to_completion
from bazar.errors import BadRequest, BazarError
from bazar.json_errors import install_json_errors
from bazar.jsonio import Reply, json_reply, parse_json, read_body, respond_json, respond_reply
from bazar.order.orphans import MAX_TAKES_PAGE
from bazar.paging import LINK_HEADER, Page, link_next, parse_page, search_path
from bazar.protocol import (
    BOOK_ROUTE,
    BOOKS_PATH,
    BUY_ROUTE,
    BUYS_PATH,
    LOOKUP_PATH,
    NEXT_AFTER_HEADER,
    PRICE_ROUTE,
    QUANTITY_ROUTE,
    SEARCH_PATH,
    SEARCH_ROUTE,
    TAKES_PATH,
    TOTAL_HEADER,
    fill,
)
from bazar.protocol.messages import Buys, Purchase
from bazar.replica import ReplicaApp, forward
from bazar.storage import Entry

log = Logger()


def buy_result(outcome: Entry | Failure) -> dict[str, Any]:
    """One take's answer in a ``Buys`` call: the book as it now is, or the error its own
    call (``BUY_ROUTE``) would have answered with."""
    if not isinstance(outcome, Failure):
        return {"book": outcome["book"]}
    if isinstance(outcome.value, BazarError):
        return {"error": {"code": outcome.value.code, "message": outcome.value.message}}
    log.failure("a take in a batch failed", outcome)
    return {"error": {"code": 500, "message": "internal error"}}


def respond_page(request: IRequest, path: str, page: Page, result: BookPage) -> bytes:
    """The page's books as a JSON array; the listing's total and, if there is more, where the
    next page starts (for the front end) and a Link to it (for anyone calling this replica)."""
    request.setHeader(TOTAL_HEADER, str(result.total))
    if result.next_after is not None:
        request.setHeader(NEXT_AFTER_HEADER, str(result.next_after))
        request.setHeader(LINK_HEADER, link_next(path, page, result.next_after))
    return respond_json(request, result.books)


def parse_ids(request: IRequest) -> list[int]:
    """The ids of a lookup (``?ids=3,1,4``: one to MAX_LOOKUP, each once), or a 400."""
    values = (request.args or {}).get(b"ids", [])
    if len(values) != 1:
        raise BadRequest("give 'ids' once: book ids separated by commas")
    texts = values[0].decode("ascii", "replace").split(",")
    book_ids = list(dict.fromkeys(validation.parse_id(text) for text in texts))
    if len(book_ids) > MAX_LOOKUP:
        raise BadRequest(f"at most {MAX_LOOKUP} ids in one lookup, not {len(book_ids)}")
    return book_ids


def respond_lookup(request: IRequest, book_ids: list[int], books: list[Book]) -> bytes:
    """``{"books": [...], "errors": [...]}``: each id not found has the error its own read
    (``/catalog/books/<id>``) would answer with."""
    found = {book["id"] for book in books}
    errors = []
    for book_id in book_ids:
        if book_id not in found:
            error = no_such_book(book_id)
            errors.append({"id": book_id, "code": error.code, "message": error.message})
    return respond_json(request, {"books": books, "errors": errors})


class CatalogApp(ReplicaApp):
    app = Klein()
    install_json_errors(app)

    store: CatalogStore

    # -- reads -----------------------------------------------------------------------

    @app.route(BOOKS_PATH, methods=["GET"])
    @inlineCallbacks
    def all_books(self, request: IRequest) -> Any:
        """One page of every book (``limit``, ``offset``, ``after``: see ``bazar.paging``)."""
        page = parse_page(request)
        result = yield self.read_committed(lambda: self.store.books_page(page))
        return respond_page(request, BOOKS_PATH, page, result)

    @app.route(BOOK_ROUTE, methods=["GET"])
    def book(self, request: IRequest, book_id: str) -> Any:
        book = validation.parse_id(book_id)
        return self.respond_committed(
            lambda: self.store.book(book),
            lambda: self.store.book_queued(book),
            lambda found: respond_json(request, found),
        )

    @app.route(LOOKUP_PATH, methods=["GET"])
    def lookup(self, request: IRequest) -> Any:
        """Many books in one read (``?ids=3,1,4``), for a front end with misses for several at
        once (see ``bazar.batching``): the books found, and an error for each id that is not."""
        book_ids = parse_ids(request)
        return self.respond_committed(
            lambda: self.store.lookup(book_ids),
            lambda: self.store.lookup_queued(book_ids),
            lambda books: respond_lookup(request, book_ids, books),
        )

    @app.route(SEARCH_ROUTE, methods=["GET"])
    @inlineCallbacks
    def search(self, request: IRequest, topic: str) -> Any:
        """One page of the topic's books."""
        page = parse_page(request)
        result = yield self.read_committed(lambda: self.store.search_page(topic, page))
        return respond_page(request, search_path(SEARCH_PATH, topic), page, result)

    @app.route(TAKES_PATH, methods=["GET"])
    @inlineCallbacks
    def takes(self, request: IRequest) -> Any:
        """The keyed takes logged after ``after`` (at most ``limit`` log entries looked at, up
        to MAX_TAKES_PAGE), for the order sequencer to check that each has its order (see
        ``bazar.order.orphans``): ``{"takes": [...], "last_seq": the last entry looked at}``.
        Only writes a majority has, like every read: a take that a failover then loses must
        get no order."""
        after = validation.query_id(request, "after", 0)
        limit = min(validation.query_id(request, "limit", MAX_TAKES_PAGE), MAX_TAKES_PAGE)
        if limit < 1:
            raise BadRequest("'limit' must be at least 1")
        takes, last = yield self.read_committed(lambda: self.store.takes_after(after, limit))
        return respond_json(request, {"takes": takes, "last_seq": last})

    # -- writes ----------------------------------------------------------------------

    @app.route(BUY_ROUTE, methods=["POST"])
    @runs_to_completion
    def buy(self, request: IRequest, book_id: str) -> Any:
        return respond_reply(request, self.buy_call(read_body(request), book_id))

    def buy_call(self, raw: bytes, book_id: str) -> Deferred[Reply]:
        """Take stock, if there is enough (over HTTP or the channel: ``BUY_ROUTE``)."""
        book = validation.parse_id(book_id)
        purchase = Purchase.parse(parse_json(raw, required=False))
        return self._write(
            "POST",
            fill(BUY_ROUTE, book),
            purchase.body(),
            lambda: self.store.buy(book, purchase.quantity, purchase.idempotency_key),
        )

    @app.route(BUYS_PATH, methods=["POST"])
    @runs_to_completion
    def buys(self, request: IRequest) -> Any:
        return respond_reply(request, self.buys_call(read_body(request)))

    def buys_call(self, raw: bytes) -> Deferred[Reply]:
        """Take the stock of several purchases (``messages.Buys``, over HTTP or the channel):
        one batch at the sequencer (``bazar.group_commit``), and each take its own answer, as
        if each had come on its own."""
        message = Buys.parse(parse_json(raw))
        writer = self.writer
        if writer is None:
            return forward(self.client, self.sequencer, "POST", BUYS_PATH, message.body())
        with self.store.commits.together():
            takes = [
                writer.write(self.store.buy(book, purchase.quantity, purchase.idempotency_key))
                for book, purchase in message.buys
            ]
        answers = gatherResults([take.addBoth(buy_result) for take in takes])
        return answers.addCallback(lambda results: json_reply({"results": results}))

    def channel_handlers(self) -> dict[str, Handler]:
        return {
            **super().channel_handlers(),
            BUY_ROUTE: self.buy_call,
            BUYS_PATH: self.buys_call,
            PRICE_ROUTE: self.price_call,
            QUANTITY_ROUTE: self.quantity_call,
        }

    @app.route(PRICE_ROUTE, methods=["PUT"])
    @runs_to_completion
    def update_price(self, request: IRequest, book_id: str) -> Any:
        return respond_reply(request, self.price_call(read_body(request), book_id))

    def price_call(self, raw: bytes, book_id: str) -> Deferred[Reply]:
        """Set a book's price (over HTTP or the channel: ``PRICE_ROUTE``)."""
        book = validation.parse_id(book_id)
        body = {"price": validation.new_price(parse_json(raw))}
        return self._write(
            "PUT", fill(PRICE_ROUTE, book), body, lambda: self.store.set_price(book, body["price"])
        )

    @app.route(QUANTITY_ROUTE, methods=["PUT"])
    @runs_to_completion
    def update_quantity(self, request: IRequest, book_id: str) -> Any:
        return respond_reply(request, self.quantity_call(read_body(request), book_id))

    def quantity_call(self, raw: bytes, book_id: str) -> Deferred[Reply]:
        """Set or change a book's stock (over HTTP or the channel: ``QUANTITY_ROUTE``)."""
        book = validation.parse_id(book_id)
        change = validation.quantity_change(parse_json(raw))

        def apply() -> Any:
            if "delta" in change:
                return self.store.add_quantity(book, change["delta"])
            return self.store.set_quantity(book, change["quantity"])

        return self._write("PUT", fill(QUANTITY_ROUTE, book), change, apply)

    @inlineCallbacks
    def _write(self, method: str, path: str, body: dict[str, Any], apply: Any) -> Any:
        """The write's answer: the book as it now is. A follower forwards it to the sequencer."""
        if self.writer is None:
            return (yield forward(self.client, self.sequencer, method, path, body))
        entry = yield self.writer.write(apply())
        return json_reply(entry["book"])

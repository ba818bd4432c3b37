"""``bazar.channel``: HTTP-shaped calls over AMP, answered as HTTP answers them.

Both ends run on one ``MemoryReactorClock``: the server "listens" on it, the channel
"connects" on it, and ``iosim.ConnectionCompleter`` joins the two (or refuses) when a test
says so, so every connection, byte and deadline happens when the test decides.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import ConnectionCompleter, IOPump
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from bazar.channel import (
    MAX_CHANNEL_BODY,
    Channel,
    ChannelServer,
    Handler,
    Stamp,
    carried_route,
)
from bazar.client import ReplicaClient, ReplicaResponse
from bazar.config import Replica
from bazar.errors import BadRequest, Forbidden, NotSent, Unavailable
from bazar.invalidation import info_key
from bazar.jsonio import Reply, json_reply
from bazar.metrics import Metrics
from bazar.protocol import (
    BUY_ROUTE,
    INVALIDATE_PATH,
    PRICE_ROUTE,
    PURCHASE_ROUTE,
    QUANTITY_ROUTE,
    REPLICATE_PATH,
)
from tests.unit.memcluster import SECRET, MemCluster

PORT = 5111
PEER = Replica(
    "catalog-1", "catalog", "tcp:0", "http://catalog-1.invalid", "tcp:0", f"tcp:host=127.0.0.1:port={PORT}"
)
STAMP = Stamp("catalog-1", seq=7, sequencer="catalog-1", epoch=2)


class Link:
    """A ``ChannelServer`` for ``handlers`` and a ``Channel`` that calls it, on one fake reactor."""

    def __init__(self, handlers: dict[str, Handler], stamp: Any = lambda: STAMP, observe: Any = None) -> None:
        self.reactor = MemoryReactorClock()
        self.server = ChannelServer(handlers, SECRET, stamp, *([observe] if observe else []))
        self.reactor.listenTCP(PORT, self.server, interface="127.0.0.1")
        self.channel = Channel(self.reactor)
        self.completer = ConnectionCompleter(self.reactor)
        self.pumps: list[IOPump] = []

    def call(
        self, path: str, body: bytes = b"{}", secret: str = SECRET, timeout: float = 2.0, method: str = "POST"
    ) -> Deferred[Any]:
        return self.channel.request(PEER, secret, method, path, body, timeout)

    def connect(self) -> IOPump:
        """Complete the connection the channel is making."""
        pump = self.completer.succeedOnce()
        assert pump is not None, "the channel is not connecting"
        self.pumps.append(pump)
        pump.flush()
        return pump

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()

    def connecting(self) -> int:
        return len(self.reactor.tcpClients)


def failure_of(d: Deferred[Any]) -> Exception:
    failures: list[Any] = []
    d.addErrback(failures.append)
    if not failures:
        raise AssertionError(f"{d!r} has not failed")
    return failures[0].value


class CallTests(SynchronousTestCase):
    def test_a_call_reaches_its_handler_and_answers_with_the_stamp(self) -> None:
        """The handler gets the raw body and the path's arguments; the caller gets its reply
        and what the process says about itself, as ``ReplicaClient`` gives an HTTP answer."""
        calls: list[tuple[bytes, dict[str, str]]] = []

        def buy(raw: bytes, **arguments: str) -> Reply:
            calls.append((raw, arguments))
            return json_reply({"id": 3}, 200)

        link = Link({BUY_ROUTE: buy})
        d = link.call("/catalog/books/3/buy", b'{"quantity": 1}')
        self.assertNoResult(d)
        link.connect()
        self.assertEqual(calls, [(b'{"quantity": 1}', {"book_id": "3"})])
        self.assertEqual(
            self.successResultOf(d), ReplicaResponse(200, b'{"id":3}', "catalog-1", {}, 7, "catalog-1", 2)
        )

    def test_calls_share_one_connection(self) -> None:
        """Calls made while connecting wait for that one connection; later ones reuse it."""
        link = Link({REPLICATE_PATH: lambda raw: json_reply({"last_seq": 1})})
        first, second = link.call(REPLICATE_PATH), link.call(REPLICATE_PATH)
        self.assertEqual(link.connecting(), 1)
        link.connect()
        self.assertEqual([self.successResultOf(d).code for d in (first, second)], [200, 200])
        third = link.call(REPLICATE_PATH)
        self.assertEqual(link.connecting(), 0)
        link.flush()
        self.assertEqual(self.successResultOf(third).json(), {"last_seq": 1})

    def test_a_refused_connection_is_not_sent_and_the_next_call_connects_again(self) -> None:
        link = Link({REPLICATE_PATH: lambda raw: json_reply({"last_seq": 1})})
        d = link.call(REPLICATE_PATH)
        link.completer.failOnce()
        error = failure_of(d)
        self.assertIsInstance(error, NotSent)  # never left: safe to send elsewhere
        self.assertIn("catalog-1 is unreachable", str(error))
        again = link.call(REPLICATE_PATH)
        link.connect()
        self.assertEqual(self.successResultOf(again).code, 200)

    def test_a_connection_not_made_by_the_deadline_is_not_sent(self) -> None:
        link = Link({REPLICATE_PATH: lambda raw: json_reply({})})
        d = link.call(REPLICATE_PATH, timeout=1.0)
        link.reactor.advance(1.1)  # a peer cut off: no refusal, no answer
        error = failure_of(d)
        self.assertIsInstance(error, NotSent)
        self.assertIn("catalog-1 is unreachable: TimeoutError", str(error))

    def test_a_call_past_its_deadline_fails_and_drops_the_silent_connection(self) -> None:
        """Its answer may never come, and nothing else came: the caller is told, the connection
        is aborted (a late answer goes nowhere), and the next call connects anew. The handler
        runs to its end."""
        pending: list[Deferred[Reply]] = []

        def hang(raw: bytes) -> Deferred[Reply]:
            pending.append(Deferred())
            return pending[-1]

        link = Link({REPLICATE_PATH: hang})
        d = link.call(REPLICATE_PATH, timeout=2.0)
        pump = link.connect()
        link.reactor.advance(1.9)
        self.assertNoResult(d)
        link.reactor.advance(0.2)
        error = failure_of(d)
        self.assertIsInstance(error, Unavailable)
        self.assertNotIsInstance(error, NotSent)  # it was sent: it may have been applied
        self.assertIn("did not answer within 2 s", str(error))
        link.flush()
        self.assertTrue(pump.clientIO.disconnected)
        pending[0].callback(json_reply({"late": True}))  # nobody to answer: quietly dropped
        link.flush()
        again = link.call(REPLICATE_PATH)
        self.assertEqual(link.connecting(), 1)
        link.connect()
        pending[1].callback(json_reply({"last_seq": 4}))
        link.flush()
        self.assertEqual(self.successResultOf(again).json(), {"last_seq": 4})

    def test_a_slow_call_leaves_a_live_connection_alone(self) -> None:
        """A call past its deadline on a connection that answered another call meanwhile: only
        that call fails; its late answer is dropped, and the connection serves the next call."""
        pending: list[Deferred[Reply]] = []

        def slow_or_fast(raw: bytes) -> Any:
            if raw == b"slow":
                pending.append(Deferred())
                return pending[-1]
            return json_reply({"fast": True})

        link = Link({REPLICATE_PATH: slow_or_fast})
        slow = link.call(REPLICATE_PATH, b"slow", timeout=2.0)
        pump = link.connect()
        fast = link.call(REPLICATE_PATH, b"fast")
        link.flush()
        self.assertEqual(self.successResultOf(fast).json(), {"fast": True})
        link.reactor.advance(2.1)
        self.assertIsInstance(failure_of(slow), Unavailable)
        link.flush()
        self.assertFalse(pump.clientIO.disconnecting)
        pending[0].callback(json_reply({"late": True}))
        link.flush()
        again = link.call(REPLICATE_PATH, b"fast")
        self.assertEqual(link.connecting(), 0)
        link.flush()
        self.assertEqual(self.successResultOf(again).json(), {"fast": True})

    def test_a_connection_lost_mid_call_is_unavailable(self) -> None:
        link = Link({REPLICATE_PATH: lambda raw: Deferred()})
        d = link.call(REPLICATE_PATH)
        pump = link.connect()
        pump.serverIO.loseConnection()  # the replica's process died
        link.flush()
        error = failure_of(d)
        self.assertIsInstance(error, Unavailable)
        self.assertNotIsInstance(error, NotSent)
        self.assertIn("catalog-1 is unreachable: ConnectionDone", str(error))
        link.call(REPLICATE_PATH)
        self.assertEqual(link.connecting(), 1)

    def test_calls_are_counted_in_the_metrics(self) -> None:
        """Each call answered, by route pattern and status, beside the HTTP requests' series."""
        metrics = Metrics("catalog", "catalog-1")
        link = Link({BUY_ROUTE: lambda raw, book_id: json_reply({})}, observe=metrics.observe_call)
        for path in ("/catalog/books/3/buy", "/catalog/books/4/buy", "/catalog/books/4"):
            link.call(path)
        link.connect()
        text = metrics.exposition().decode()
        self.assertIn('bazar_channel_calls_total{route="/catalog/books/:id/buy",status="200"} 2.0', text)
        self.assertIn('bazar_channel_calls_total{route="/catalog/books/:id",status="404"} 1.0', text)
        self.assertIn('bazar_channel_call_seconds_count{route="/catalog/books/:id/buy"} 2.0', text)

    def test_close_gives_up_a_connection_being_made(self) -> None:
        link = Link({REPLICATE_PATH: lambda raw: json_reply({})})
        d = link.call(REPLICATE_PATH)
        self.successResultOf(link.channel.close())
        self.assertIsInstance(failure_of(d), NotSent)
        [connector] = link.reactor.connectors
        self.assertTrue(connector.stoppedConnecting)

    def test_close_closes_every_connection(self) -> None:
        link = Link({REPLICATE_PATH: lambda raw: json_reply({})})
        link.call(REPLICATE_PATH)
        pump = link.connect()
        closed = link.channel.close()
        self.assertNoResult(closed)
        link.flush()
        self.successResultOf(closed)
        self.assertTrue(pump.serverIO.disconnected)


class ErrorTests(SynchronousTestCase):
    """Failures come back as the JSON errors HTTP gives, with their status."""

    def answer(self, link: Link, path: str, body: bytes = b"{}", secret: str = SECRET) -> ReplicaResponse:
        d = link.call(path, body, secret)
        if link.connecting():
            link.connect()
        link.flush()
        result: ReplicaResponse = self.successResultOf(d)
        return result

    def test_the_secret_is_required(self) -> None:
        calls: list[bytes] = []
        link = Link({REPLICATE_PATH: lambda raw: calls.append(raw) or json_reply({})})
        wrong = self.answer(link, REPLICATE_PATH, secret="guess")
        self.assertEqual((wrong.code, wrong.body), (403, Forbidden("wrong cluster secret").body()))
        self.assertEqual(calls, [])

    def test_a_route_not_served_here_is_404(self) -> None:
        link = Link({REPLICATE_PATH: lambda raw: json_reply({})})  # an order replica: no buys
        for path in ("/catalog/books/3/buy", "/catalog/books/3", "/nowhere"):
            with self.subTest(path=path):
                answer = self.answer(link, path)
                self.assertEqual(answer.code, 404)
                self.assertIn(f"no such path on the channel: POST {path}", answer.error_message())

    def test_a_bazar_error_keeps_its_status_and_message(self) -> None:
        def refuse(raw: bytes) -> Reply:
            raise BadRequest("'entries' must be a list of [seq, entry] pairs")

        answer = self.answer(Link({REPLICATE_PATH: refuse}), REPLICATE_PATH)
        self.assertEqual((answer.code, answer.body), (400, BadRequest(answer.error_message()).body()))

    def test_an_unexpected_error_is_a_logged_500(self) -> None:
        def broken(raw: bytes) -> Reply:
            raise ValueError("a bug")

        answer = self.answer(Link({REPLICATE_PATH: broken}), REPLICATE_PATH)
        self.assertEqual(answer.code, 500)
        self.assertEqual(answer.error_message(), "internal error; see the server's log")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class Recording(Channel):
    """A channel that records what it is asked to carry instead of carrying it."""

    def __init__(self) -> None:
        super().__init__(MemoryReactorClock())
        self.carried: list[str] = []

    def request(
        self, replica: Replica, secret: str, method: str, path: str, body: bytes, timeout: float
    ) -> Any:
        self.carried.append(path)
        return Deferred()


class OverHTTP(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def render(self, request: Any) -> bytes:
        self.paths.append(request.path.decode())
        return b"{}"


class ClientTests(SynchronousTestCase):
    def test_carried_routes(self) -> None:
        """The write-path routes, each with its one method, with their path arguments: the
        replicas' calls, and the front end's writes (purchases, price and stock updates)."""
        self.assertEqual(carried_route("POST", "/catalog/books/3/buy"), (BUY_ROUTE, (("book_id", "3"),)))
        self.assertEqual(carried_route("POST", REPLICATE_PATH), (REPLICATE_PATH, ()))
        self.assertEqual(carried_route("POST", INVALIDATE_PATH), (INVALIDATE_PATH, ()))
        self.assertEqual(carried_route("POST", "/order/purchase/4"), (PURCHASE_ROUTE, (("book_id", "4"),)))
        self.assertEqual(carried_route("PUT", "/catalog/books/5/price"), (PRICE_ROUTE, (("book_id", "5"),)))
        self.assertEqual(
            carried_route("PUT", "/catalog/books/6/quantity"), (QUANTITY_ROUTE, (("book_id", "6"),))
        )
        for method, path in [
            ("GET", "/catalog/books/3/buy"),
            ("POST", "/internal/elect"),
            ("PUT", REPLICATE_PATH),
            ("POST", "/catalog/books/5/price"),
            ("PUT", "/order/purchase/4"),
            ("GET", "/catalog/books/5"),
        ]:
            self.assertIsNone(carried_route(method, path), (method, path))

    def test_only_carried_calls_to_a_replica_with_a_channel_take_it(self) -> None:
        """Writes take the channel (the replicas' internal calls and the front end's purchases,
        price and stock updates); reads, elections, calls to a replica without a channel, and
        a body too large for AMP go over HTTP."""
        channel, http = Recording(), OverHTTP()
        client = ReplicaClient(StubTreq(http), SECRET, MemoryReactorClock(), channel=channel)
        plain = Replica("catalog-2", "catalog", "tcp:0", "http://catalog-2.invalid")
        client.request("POST", PEER, REPLICATE_PATH, {"entries": []})
        client.request("POST", PEER, "/catalog/books/3/buy", {"quantity": 1})
        client.request("POST", PEER, INVALIDATE_PATH, {"keys": []})
        client.request("GET", PEER, "/internal/status")
        client.request("POST", PEER, "/internal/elect", {"epoch": 2})
        client.request("PUT", PEER, "/catalog/books/3/price", {"price": 1})
        client.request("PUT", PEER, "/catalog/books/3/quantity", {"delta": 1})
        client.request("POST", PEER, "/order/purchase/3", {"quantity": 1})
        client.request("GET", PEER, "/catalog/books/3")
        client.request("POST", plain, REPLICATE_PATH, {"entries": []})
        client.request("PUT", plain, "/catalog/books/3/price", {"price": 1})
        client.request("POST", PEER, REPLICATE_PATH, {"entries": ["x" * MAX_CHANNEL_BODY]})
        self.assertEqual(
            channel.carried,
            [
                REPLICATE_PATH,
                "/catalog/books/3/buy",
                INVALIDATE_PATH,
                "/catalog/books/3/price",
                "/catalog/books/3/quantity",
                "/order/purchase/3",
            ],
        )
        self.assertEqual(
            http.paths,
            [
                "/internal/status",
                "/internal/elect",
                "/catalog/books/3",
                REPLICATE_PATH,
                "/catalog/books/3/price",
                REPLICATE_PATH,
            ],
        )


class SameAnswersTests(SynchronousTestCase):
    """A process's carried routes answer alike over HTTP and over the channel: one handler
    serves both. Here the real apps of an in-memory cluster (``memcluster``)."""

    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def over_channel(self, app: Any, path: str, body: bytes, method: str = "POST") -> ReplicaResponse:
        link = Link(app.channel_handlers(), app.stamp)
        d = link.call(path, body, method=method)
        link.connect()
        for _ in range(10):
            link.flush()
            self.cluster.flush()
        result: ReplicaResponse = self.successResultOf(d)
        return result

    def over_http(self, name: str, path: str, body: bytes, method: str = "POST") -> Any:
        return self.cluster.wait(
            self.cluster.send(method, path, data=body, to=name, headers={"X-Bazar-Secret": SECRET})
        )

    def test_errors_are_the_same_bytes(self) -> None:
        cases = [
            ("/catalog/books/99/buy", b"{}"),  # no such book
            ("/catalog/books/x/buy", b"{}"),  # not an id
            ("/catalog/books/3/buy", b'{"quantity": 0}'),
            ("/catalog/books/3/buy", b"[1]"),
            ("/catalog/books/3/buy", b"{"),
            (REPLICATE_PATH, b'{"entries": 3}'),
            (REPLICATE_PATH, b""),
            ("/catalog/books/99/price", b'{"price": 5}', "PUT"),
            ("/catalog/books/3/price", b'{"price": -1}', "PUT"),
            ("/catalog/books/3/price", b"", "PUT"),
            ("/catalog/books/x/quantity", b'{"delta": 1}', "PUT"),
            ("/catalog/books/3/quantity", b'{"delta": 1, "quantity": 2}', "PUT"),
            ("/catalog/books/3/quantity", b'{"delta": -100000}', "PUT"),
            ("/order/purchase/99", b"{}", "POST", "order-1"),
            ("/order/purchase/3", b'{"quantity": 0}', "POST", "order-1"),
            ("/order/purchase/3", b'{"idempotency_key": 7}', "POST", "order-1"),
            ("/order/purchase/x", b"{", "POST", "order-2"),
        ]
        for path, body, *how in cases:
            method = how[0] if how else "POST"
            name = how[1] if len(how) > 1 else "catalog-1"
            with self.subTest(path=path, body=body):
                channel = self.over_channel(self.cluster.apps[name], path, body, method)
                http = self.over_http(name, path, body, method)
                self.assertGreaterEqual(channel.code, 400)
                self.assertEqual((channel.code, json.loads(channel.body)), (http.code, http.json))

    def test_a_buy_over_the_channel_is_replicated_and_invalidated_before_it_answers(self) -> None:
        cluster = self.cluster
        cluster.get("/bazar/info/3")
        self.assertIn(info_key(3), cluster.cached_keys())
        before = cluster.book("catalog-1", 3)["quantity"]
        answer = self.over_channel(cluster.apps["catalog-2"], "/catalog/books/3/buy", b'{"quantity": 2}')
        # A follower forwards it to the sequencer, whose answer (and stamp) comes back.
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.json(), {**cluster.book("catalog-1", 3), "quantity": before - 2})
        self.assertEqual((answer.replica, answer.sequencer), ("catalog-2", "catalog-1"))
        self.assertEqual([cluster.book(n, 3)["quantity"] for n in cluster.catalog_names], [before - 2] * 3)
        self.assertNotIn(info_key(3), cluster.cached_keys())
        http = self.over_http("catalog-1", "/catalog/books/3/buy", b'{"quantity": 1}')
        self.assertEqual(http.json, {**answer.json(), "quantity": before - 3})

    def test_a_purchase_over_the_channel_answers_as_over_http(self) -> None:
        """A purchase sent to an order follower over the channel is forwarded to the order
        sequencer and recorded on every order replica; the same purchase retried over HTTP
        (same key) buys nothing more and gets the very same bytes."""
        cluster = self.cluster
        before = cluster.book("catalog-1", 4)["quantity"]
        body = b'{"quantity": 1, "idempotency_key": "hop-1"}'
        answer = self.over_channel(cluster.apps["order-2"], "/order/purchase/4", body)
        self.assertEqual(answer.code, 200)
        self.assertEqual((answer.json()["book_id"], answer.json()["idempotency_key"]), (4, "hop-1"))
        self.assertEqual((answer.replica, answer.sequencer), ("order-2", "order-1"))
        for name in cluster.order_names:
            self.assertEqual([o["order_id"] for o in cluster.orders(name)], [answer.json()["order_id"]], name)
        http = self.over_http("order-1", "/order/purchase/4", body)
        self.assertEqual((http.code, http.json), (200, json.loads(answer.body)))
        self.assertEqual(cluster.book("catalog-1", 4)["quantity"], before - 1)

    def test_a_price_update_over_the_channel_answers_as_over_http(self) -> None:
        """A price update at a catalog follower over the channel: forwarded, replicated and
        out of the front end's cache before it answers; HTTP answers the same update alike."""
        cluster = self.cluster
        cluster.get("/bazar/info/2")
        self.assertIn(info_key(2), cluster.cached_keys())
        path, body = "/catalog/books/2/price", b'{"price": 12.5}'
        answer = self.over_channel(cluster.apps["catalog-3"], path, body, "PUT")
        self.assertEqual(answer.code, 200)
        self.assertEqual([cluster.book(n, 2)["price"] for n in cluster.catalog_names], [12.5] * 3)
        self.assertNotIn(info_key(2), cluster.cached_keys())
        http = self.over_http("catalog-3", path, body, "PUT")
        self.assertEqual((http.code, http.json), (200, json.loads(answer.body)))
        stock = self.over_channel(
            cluster.apps["catalog-1"], "/catalog/books/2/quantity", b'{"quantity": 9}', "PUT"
        )
        self.assertEqual(stock.json(), {**answer.json(), "quantity": 9})

    def test_an_invalidation_over_the_channel(self) -> None:
        cluster = self.cluster
        cluster.get("/bazar/info/1")
        self.assertIn(info_key(1), cluster.cached_keys())
        frontend = cluster.frontend
        link = Link({INVALIDATE_PATH: frontend.internal.invalidate_call}, lambda: Stamp("frontend"))
        d = link.call(INVALIDATE_PATH, json.dumps({"keys": [info_key(1)], "seq": 9}).encode())
        link.connect()
        self.assertEqual(self.successResultOf(d).json(), {"invalidated": [info_key(1)]})
        self.assertNotIn(info_key(1), cluster.cached_keys())

"""Hardening that is not about one endpoint: idle connections, request limits, loopback defaults."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from zope.interface import implementer

from bazar.completion import shielded
from bazar.config import parse
from bazar.errors import Conflict
from bazar.http_limits import IDLE_TIMEOUT, LINGER, MAX_HEADERS, MAX_LINE, make_site
from bazar.jsonio import MAX_BODY
from bazar.service import tcp_address
from tests.unit.rawhttp import RawConnection, RawReply, error_shape_problem


class _Echo(Resource):
    isLeaf = True

    def render_POST(self, request: Any) -> bytes:
        # What a handler sees: form fields Twisted parsed (if any) and the body as sent.
        return b"rendered args=%r body=%r" % (request.args, request.content.read())

    def render_GET(self, request: Any) -> bytes:
        return b"rendered"


class SiteTests(SynchronousTestCase):
    def connect(self) -> tuple[Clock, StringTransport, object]:
        clock = Clock()
        site = make_site(_Echo())
        site.reactor = clock
        protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return clock, transport, protocol

    def test_idle_connection_is_closed(self) -> None:
        """A client that connects and sends nothing is disconnected after IDLE_TIMEOUT seconds."""
        clock, transport, _ = self.connect()
        clock.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        clock.advance(2)
        self.assertTrue(transport.disconnecting)

    def test_oversized_body_is_refused_without_rendering(self) -> None:
        """A declared body over MAX_BODY gets a JSON 413 and never reaches the resource."""
        _, transport, protocol = self.connect()
        size = MAX_BODY + 1
        protocol.dataReceived(  # type: ignore[attr-defined]
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size + b"a" * size
        )
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:80])
        self.assertIn(b'{"error": {"code": 413', answer)
        self.assertNotIn(b"rendered", answer)

    def test_chunked_body_over_the_limit_is_refused(self) -> None:
        """A chunked body (no declared length) is counted as it arrives, and refused past MAX_BODY."""
        _, transport, protocol = self.connect()
        chunk = b"a" * 4096
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // len(chunk) + 1))
        protocol.dataReceived(  # type: ignore[attr-defined]
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))

    def test_body_within_the_limit_is_served(self) -> None:
        _, transport, protocol = self.connect()
        protocol.dataReceived(  # type: ignore[attr-defined]
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"
        )
        self.assertIn(b"rendered", transport.value())

    def test_a_form_post_is_not_parsed(self) -> None:
        """Every endpoint reads JSON, so a form-encoded POST reaches it unparsed (Twisted would
        otherwise parse each POST's Content-Type, which costs every write): its fields are not
        taken as arguments and its body is left whole for the JSON reader to refuse."""
        _, transport, protocol = self.connect()
        protocol.dataReceived(  # type: ignore[attr-defined]
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 3\r\n\r\na=b"
        )
        self.assertIn(b"rendered args={} body=b'a=b'", transport.value())


class _Raises(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        raise ZeroDivisionError("a bug outside Klein's error handlers")


@implementer(ITCPTransport)
class _TCPTransport(StringTransport):
    """A transport that, like TCP, can close its writing half only (and, like TCP, lets a
    producer be unregistered twice)."""

    write_closed = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        self.producer = None

    def loseWriteConnection(self) -> None:
        self.write_closed = True


GET = b"GET /x HTTP/1.1\r\nHost: a\r\n"


class LimitTests(SynchronousTestCase):
    """Whatever a request breaks, the answer comes as soon as the breach is seen, as a JSON
    error of its own status, and the connection then closes without reading the rest."""

    def connect(self, transport: StringTransport | None = None) -> RawConnection:
        return RawConnection(self, _Echo(), transport=transport)

    def assertRefused(self, conn: RawConnection, code: int) -> RawReply:
        """``conn`` got exactly one answer, ``code`` in the JSON error shape, and is closing."""
        replies = conn.replies()
        self.assertEqual([r.code for r in replies], [code], conn.transport.value()[:200])
        self.assertIsNone(error_shape_problem(replies[0]))
        self.assertEqual(replies[0].headers.get("connection"), "close")
        self.assertTrue(conn.closed)
        self.assertNotIn(b"rendered", conn.transport.value())
        return replies[0]

    def test_too_many_headers_get_431(self) -> None:
        conn = self.connect()
        conn.send(GET + b"X-A: b\r\n" * 2000 + b"\r\n")
        self.assertRefused(conn, 431)

    def test_one_header_over_the_limit_is_the_breach(self) -> None:
        """MAX_HEADERS headers are served; one more is refused."""
        conn = self.connect()
        conn.send(GET + b"X-A: b\r\n" * (MAX_HEADERS - 1) + b"\r\n")
        self.assertEqual([r.code for r in conn.replies()], [200])
        conn = self.connect()
        conn.send(GET + b"X-A: b\r\n" * MAX_HEADERS + b"\r\n")
        self.assertRefused(conn, 431)

    def test_a_5_mb_header_gets_431(self) -> None:
        conn = self.connect()
        conn.send(GET + b"X-A: " + b"b" * 5_000_000 + b"\r\n\r\n")
        self.assertRefused(conn, 431)

    def test_headers_over_the_head_size_get_431(self) -> None:
        """Each line within MAX_LINE, but 32 KB of them together."""
        conn = self.connect()
        conn.send(GET + b"X-A: %s\r\n" % (b"b" * 1000) * 32 + b"\r\n")
        self.assertRefused(conn, 431)

    def test_a_100_kb_request_line_gets_414(self) -> None:
        conn = self.connect()
        conn.send(b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertRefused(conn, 414)

    def test_a_long_request_line_is_refused_before_it_ends(self) -> None:
        """Sent in pieces, with no end of line yet: refused once it passes MAX_LINE."""
        conn = self.connect()
        conn.send(b"GET /")
        sent = 5
        while not conn.transport.value() and sent < 10 * MAX_LINE:
            conn.send(b"a" * 1000)
            sent += 1000
        self.assertLessEqual(sent, MAX_LINE + 2000)
        self.assertRefused(conn, 414)

    def test_malformed_requests_get_a_json_400(self) -> None:
        for request in [
            b"GET /x\r\n\r\n",  # no version
            b"GET /x HTTP/1.1 extra\r\n\r\n",
            b"GET /x HTTP/2.0\r\n\r\n",
            b"G(T /x HTTP/1.1\r\n\r\n",  # not a method token
            GET + b"no colon\r\n\r\n",
            GET + b"Bad Name: x\r\n\r\n",
            GET + b"X-A: a\x00b\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ]:
            with self.subTest(request=request):
                conn = self.connect()
                conn.send(request)
                self.assertRefused(conn, 400)

    def test_a_declared_length_over_the_limit_is_refused_at_once(self) -> None:
        """Content-Length: 100000000 and 11 bytes of it: 413 now, not when (if) the rest comes."""
        conn = self.connect()
        conn.send(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n")
        self.assertRefused(conn, 413)
        conn.send(b'{"price":1}')
        self.assertEqual(len(conn.replies()), 1)

    def test_an_expected_body_over_the_limit_is_not_asked_for(self) -> None:
        """With ``Expect: 100-continue``, the client hears 413 and never "100 Continue"."""
        conn = self.connect()
        conn.send(GET + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        self.assertRefused(conn, 413)
        self.assertNotIn(b"100 Continue", conn.transport.value())

    def test_a_chunked_body_is_refused_as_it_passes_the_limit(self) -> None:
        """No terminating chunk is needed: the 413 comes once MAX_BODY bytes are passed."""
        conn = self.connect()
        conn.send(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"a" * 4096
        for _ in range(MAX_BODY // len(chunk)):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.assertEqual(conn.transport.value(), b"")  # exactly MAX_BODY so far: fine
        conn.send(b"1\r\na\r\n")
        self.assertRefused(conn, 413)
        conn.send(b"0\r\n\r\n")  # the end of it, read (and dropped) as it comes
        self.assertEqual(len(conn.replies()), 1)

    def test_a_chunked_body_within_the_limit_is_served(self) -> None:
        conn = self.connect()
        conn.send(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.send(b"2\r\n{}\r\n0\r\n\r\n")
        self.assertIn(b"rendered args={} body=b'{}'", conn.transport.value())

    def test_a_refused_connection_reads_and_drops_then_closes(self) -> None:
        """Over TCP, a refusal closes only the writing half, so a client still sending (a 5 MB
        header) reads the answer rather than a reset; what it sends is dropped unparsed, and
        after LINGER seconds the connection is closed whatever the client does."""
        transport = _TCPTransport()
        conn = self.connect(transport)
        conn.send(GET + b"X-A: " + b"b" * (2 * MAX_LINE))
        self.assertTrue(transport.write_closed)
        self.assertFalse(conn.closed)
        answer = transport.value()
        conn.send(b"b" * MAX_LINE + b"\r\n\r\n" + GET + b"\r\n")
        self.assertEqual(transport.value(), answer)  # the next request is not parsed
        conn.clock.advance(LINGER)
        self.assertTrue(conn.closed)

    def test_a_resource_that_raises_gets_a_json_500(self) -> None:
        """Not Twisted's HTML "Processing Failed" page; the failure is logged."""
        conn = RawConnection(self, _Raises())
        conn.send(GET + b"\r\n")
        [reply] = conn.replies()
        self.assertEqual(reply.code, 500)
        self.assertIsNone(error_shape_problem(reply))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_a_keep_alive_connection_serves_the_next_request(self) -> None:
        """The counts of one request's head are not carried into the next one's."""
        conn = self.connect()
        head = GET + b"X-A: b\r\n" * (MAX_HEADERS - 1) + b"\r\n"
        conn.send(head * 3)
        self.assertEqual([r.code for r in conn.replies()], [200, 200, 200])


class LoopbackDefaultTests(SynchronousTestCase):
    def test_every_default_endpoint_is_on_loopback(self) -> None:
        """Unless configured otherwise, the front end and every replica listen on 127.0.0.1 only,
        for HTTP and for the internal channel, and reach each other there."""
        config = parse({"cluster": {"secret": "x"}})
        for replica in (config.frontend, *config.catalog, *config.order):
            for listen in (replica.listen, replica.channel_listen):
                assert listen is not None
                address = tcp_address(listen)
                assert address is not None
                self.assertEqual(address[0], "127.0.0.1", replica.name)
            self.assertIn("host=127.0.0.1:", replica.channel or "")


class ShieldedTests(SynchronousTestCase):
    """``bazar.completion.shielded``: cancelling the answer leaves the work running."""

    def test_cancelling_the_answer_does_not_cancel_the_work(self) -> None:
        cancelled: list[bool] = []
        work: Deferred[str] = Deferred(lambda d: cancelled.append(True))
        answer = shielded(work)
        answer.cancel()
        self.failureResultOf(answer, CancelledError)
        self.assertEqual(cancelled, [])
        work.callback("done")  # no AlreadyCalledError, nothing logged
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_result_and_failure_pass_through(self) -> None:
        work: Deferred[str] = Deferred()
        answer = shielded(work)
        work.callback("done")
        self.assertEqual(self.successResultOf(answer), "done")
        failing: Deferred[str] = Deferred()
        answer = shielded(failing)
        failing.errback(Conflict("no stock"))
        self.failureResultOf(answer, Conflict)

    def test_a_failure_nobody_will_see_is_logged_unless_expected(self) -> None:
        for error, logged in ((Conflict("no stock"), 0), (ZeroDivisionError(), 1)):
            work: Deferred[str] = Deferred()
            answer = shielded(work)
            answer.cancel()
            self.failureResultOf(answer)
            work.errback(error)
            self.assertEqual(len(self.flushLoggedErrors(type(error))), logged)

"""Hardening that is not about one endpoint: idle connections, body limits, loopback defaults."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from bazar.config import parse
from bazar.errors import Conflict
from bazar.service import tcp_address
from bazar.web import IDLE_TIMEOUT, MAX_BODY, make_site, shielded


class _Echo(Resource):
    isLeaf = True

    def render_POST(self, request: Any) -> bytes:
        # What a handler sees: form fields Twisted parsed (if any) and the body as sent.
        return b"rendered args=%r body=%r" % (request.args, request.content.read())


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
    """``bazar.web.shielded``: cancelling the answer leaves the work running."""

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

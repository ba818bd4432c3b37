"""The internal channel's frames (``bazar.wire``): what is written is read back, calls on one
connection get their own answers in any order, and a peer that speaks something else is
dropped with every call waiting on it failed."""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from bazar.wire import Answer, Frames, MalformedFrame, Request, decode, encode_answer, encode_request

CALL = Request("s3cret", "PUT", "/catalog/books/7/price/ünïcode", b'{"price": 3.5}')


class Replier(Frames):
    """Answers each call when the test says so (``pending``), in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[Request, Deferred[Answer]]] = []

    def answer(self, request: Request) -> Deferred[Answer]:
        d: Deferred[Answer] = Deferred()
        self.pending.append((request, d))
        return d


class RecordingTransport(StringTransport):
    no_delay: bool | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


def failure_of(d: Deferred[Any]) -> BaseException:
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures, f"{d!r} has not failed"
    return failures[0].value


class EncodingTests(SynchronousTestCase):
    def test_a_call_reads_back_as_written(self) -> None:
        self.assertEqual(decode(encode_request(41, CALL)), (41, CALL))

    def test_an_answer_reads_back_as_written(self) -> None:
        for answer in (
            Answer(200, b'{"id":3}', "catalog-2", 2**40, "catalog-1", 7),
            Answer(503, b"", "frontend-1"),  # no sequencer known: None, not ""
            Answer(409, b"{}", "order-3", 0, "", 0),  # an empty name stays empty
        ):
            with self.subTest(answer=answer):
                self.assertEqual(decode(encode_answer(2**32 - 1, answer)), (2**32 - 1, answer))

    def test_what_is_not_a_frame_is_refused(self) -> None:
        call = encode_request(1, CALL)
        for frame in (
            b"",
            b"X" + call[1:],  # an unknown kind
            call[:5],  # shorter than its head
            call[:12],  # shorter than its head says its fields are
            encode_answer(1, Answer(200, b"", "catalog-1", sequencer="catalog-1"))[:30],
            struct.pack(">BIHHH", ord("Q"), 1, 2, 0, 0) + b"\xff\xfe",  # not UTF-8
        ):
            with self.subTest(frame=frame):
                self.assertRaises(MalformedFrame, decode, frame)


class ConnectionTests(SynchronousTestCase):
    def connected(self) -> tuple[Frames, Replier, Any]:
        caller, replier, pump = connectedServerAndClient(Replier, Frames)
        return caller, replier, pump

    def test_calls_get_their_own_answers_in_any_order(self) -> None:
        caller, replier, pump = self.connected()
        first, second = caller.call(CALL), caller.call(Request("", "POST", "/replicate", b"[]"))
        pump.flush()
        self.assertEqual([request.path for request, _ in replier.pending], [CALL.path, "/replicate"])
        replier.pending[1][1].callback(Answer(200, b"second", "catalog-2"))
        replier.pending[0][1].callback(Answer(409, b"first", "catalog-2"))
        pump.flush()
        self.assertEqual(self.successResultOf(first).body, b"first")
        self.assertEqual(self.successResultOf(second).body, b"second")
        self.assertEqual(caller.received, 1)  # both answers came in one read

    def test_a_lost_connection_fails_every_waiting_call_and_every_later_one(self) -> None:
        caller, replier, pump = self.connected()
        waiting = caller.call(CALL)
        pump.flush()
        replier.transport.loseConnection()
        pump.flush()
        self.assertIsInstance(failure_of(waiting), ConnectionDone)
        self.assertIsInstance(failure_of(caller.call(CALL)), ConnectionDone)
        replier.pending[0][1].callback(Answer(200, b"late", "catalog-2"))  # goes nowhere, raises nothing

    def test_a_peer_that_sends_garbage_is_dropped(self) -> None:
        caller, replier, pump = self.connected()
        waiting = caller.call(CALL)
        pump.flush()
        replier.sendString(b"HTTP/1.1 200 OK")
        pump.flush()
        self.assertTrue(caller.transport.disconnected)
        self.assertIsInstance(failure_of(waiting), ConnectionDone)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_an_answer_to_no_call_drops_the_connection(self) -> None:
        caller, replier, pump = self.connected()
        replier.sendString(encode_answer(99, Answer(200, b"", "catalog-2")))
        pump.flush()
        self.assertTrue(caller.transport.disconnected)

    def test_an_end_that_takes_no_calls_drops_a_peer_that_calls(self) -> None:
        caller, other, pump = connectedServerAndClient(Frames, Frames)
        waiting = caller.call(CALL)
        pump.flush()
        self.assertTrue(other.transport.disconnected)
        self.assertIsInstance(failure_of(waiting), ConnectionDone)

    def test_calls_and_answers_go_without_waiting_for_acknowledgements(self) -> None:
        """TCP_NODELAY: Nagle's algorithm would hold a second small frame back for an ack."""
        frames, transport = Frames(), RecordingTransport()
        frames.makeConnection(transport)
        self.assertIs(transport.no_delay, True)

    def test_an_answer_that_fails_is_logged_and_the_connection_goes_on(self) -> None:
        caller, replier, pump = self.connected()
        caller.call(CALL)
        pump.flush()
        replier.pending[0][1].errback(RuntimeError("a bug"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        replier.pending.clear()
        again = caller.call(CALL)
        pump.flush()
        replier.pending[0][1].callback(Answer(200, b"ok", "catalog-2"))
        pump.flush()
        self.assertEqual(self.successResultOf(again).body, b"ok")


class MaxLengthTests(SynchronousTestCase):
    def test_a_frame_longer_than_any_legal_one_drops_the_connection(self) -> None:
        frames, transport = Frames(), StringTransport()
        frames.makeConnection(transport)
        waiting = frames.call(CALL)
        frames.dataReceived(struct.pack(">I", Frames.MAX_LENGTH + 1))
        self.assertTrue(transport.disconnecting)
        frames.connectionLost(ConnectionDone())  # what the reactor does next
        self.assertIsInstance(failure_of(waiting), ConnectionDone)

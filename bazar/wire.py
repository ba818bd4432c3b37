"""The internal channel's frames: one call and its answer, each one length-prefixed string.

Why not AMP, which the channel spoke first: AMP spells every call as a box of named keys and
values, each read by a parser of its own, with each key's name translated and each value
converted by its declared type. On a small call (a cache-key push, a follower's ack) that
was more than half of the receiving process's time for it: 0.28 of the 0.49 s its pushes
took a front end, profiled (``docs/benchmark.md``). Here a frame is one string
(``Int32StringReceiver``: 4 bytes of length first) whose fixed head says where each field
ends: one ``struct`` unpack and a few slices to read, one pack and a join to write.

A call (``Request``): ``Q``, its id, the lengths of the secret, method and path, then those
three (UTF-8) and the body, which runs to the end. An answer (``Answer``): ``A``, the id of
the call it answers, the status, the replica's last sequence number and epoch, the lengths
of the replica's and its sequencer's names (that one plus 1, 0 for none), the two names and
the body. Calls on one connection run at once; answers come back in any order.

Either end of a connection may call the other (``Frames``); the channel's callers only call
and its servers only answer. A frame that is not one of these two, or an answer to no call,
means the peer speaks something else: the connection is dropped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

# The largest body a frame carries: a larger one goes over HTTP (``bazar.channel``). No
# carried call comes near it (a replication batch is at most 48 KiB).
MAX_BODY = 0xFFFF
REQUEST = ord("Q")
ANSWER = ord("A")
_REQUEST_HEAD = struct.Struct(">BIHHH")  # kind, call id, lengths of secret, method, path
_ANSWER_HEAD = struct.Struct(
    ">BIHqqHH"
)  # kind, call id, status, seq, epoch, lengths of replica, sequencer + 1
_IDS = 1 << 32

log = Logger()


class MalformedFrame(Exception):
    """What a peer sent is not a frame of this channel."""


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP-shaped call: the cluster secret, method, path and JSON body."""

    secret: str
    method: str
    path: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """A call's status and JSON body, with what the ``X-Bazar-*`` headers would have said."""

    code: int
    body: bytes
    replica: str
    seq: int = 0
    sequencer: str | None = None
    epoch: int = 0


def encode_request(call_id: int, request: Request) -> bytes:
    secret, method, path = (request.secret.encode(), request.method.encode(), request.path.encode())
    head = _REQUEST_HEAD.pack(REQUEST, call_id, len(secret), len(method), len(path))
    return b"".join((head, secret, method, path, request.body))


def encode_answer(call_id: int, answer: Answer) -> bytes:
    replica = answer.replica.encode()
    sequencer = answer.sequencer.encode() if answer.sequencer is not None else b""
    head = _ANSWER_HEAD.pack(
        ANSWER,
        call_id,
        answer.code,
        answer.seq,
        answer.epoch,
        len(replica),
        0 if answer.sequencer is None else len(sequencer) + 1,
    )
    return b"".join((head, replica, sequencer, answer.body))


def decode(frame: bytes) -> tuple[int, Request | Answer]:
    """A frame's call id, and the call or answer it holds."""
    kind = frame[0] if frame else None
    try:
        if kind == REQUEST:
            _, call_id, secret, method, path = _REQUEST_HEAD.unpack_from(frame)
            start = _REQUEST_HEAD.size
            ends = (start + secret, start + secret + method, start + secret + method + path)
            if ends[2] > len(frame):
                raise MalformedFrame("a call shorter than its head says")
            return call_id, Request(
                frame[start : ends[0]].decode(),
                frame[ends[0] : ends[1]].decode(),
                frame[ends[1] : ends[2]].decode(),
                frame[ends[2] :],
            )
        if kind == ANSWER:
            _, call_id, code, seq, epoch, replica, sequencer = _ANSWER_HEAD.unpack_from(frame)
            start = _ANSWER_HEAD.size
            names_end = start + replica + max(sequencer - 1, 0)
            if names_end > len(frame):
                raise MalformedFrame("an answer shorter than its head says")
            return call_id, Answer(
                code,
                frame[names_end:],
                frame[start : start + replica].decode(),
                seq,
                frame[start + replica : names_end].decode() if sequencer else None,
                epoch,
            )
    except (struct.error, UnicodeDecodeError) as e:
        raise MalformedFrame(f"{type(e).__name__}: {e}") from None
    raise MalformedFrame(f"unknown frame kind {frame[:1]!r}")


class Frames(Int32StringReceiver):
    """One connection of the channel: ``call`` sends a request and gives its answer; a request
    that arrives goes to ``answer`` (a subclass's), and what that gives is sent back."""

    MAX_LENGTH = 1 << 20  # a frame longer than any legal one drops the connection

    def __init__(self) -> None:
        self._waiting: dict[int, Deferred[Answer]] = {}
        self._next_id = 0
        self._lost: Failure | None = None
        self.received = 0  # how many times the peer sent anything: whether it is alive

    def connectionMade(self) -> None:
        # Calls and answers are small and go at once: Nagle's algorithm would hold a second
        # one back until the first is acknowledged.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)  # TCP transports have it
        if set_no_delay is not None:
            set_no_delay(True)

    def call(self, request: Request) -> Deferred[Answer]:
        if self._lost is not None:
            return fail(self._lost)
        call_id = self._next_id
        self._next_id = (call_id + 1) % _IDS
        waiting: Deferred[Answer] = Deferred()
        self._waiting[call_id] = waiting
        self.sendString(encode_request(call_id, request))
        return waiting

    def answer(self, request: Request) -> Deferred[Answer]:
        """What this end answers a call with; by default it takes none."""
        raise MalformedFrame("this end takes no calls")

    def dataReceived(self, data: bytes) -> None:
        self.received += 1
        super().dataReceived(data)

    def stringReceived(self, string: bytes) -> None:
        try:
            call_id, frame = decode(string)
            if isinstance(frame, Request):
                self.answer(frame).addCallback(self._reply, call_id).addErrback(self._unanswered, frame)
                return
            waiting = self._waiting.pop(call_id, None)
            if waiting is None:
                raise MalformedFrame(f"an answer to no call ({call_id})")
        except MalformedFrame as e:
            log.warn("dropping a channel connection: {why}", why=str(e))
            if self.transport is not None:
                self.transport.loseConnection()
            return
        waiting.callback(frame)

    def _reply(self, answer: Answer, call_id: int) -> None:
        self.sendString(encode_answer(call_id, answer))  # nothing, if the caller went away

    @staticmethod
    def _unanswered(failure: Failure, request: Request) -> None:
        log.failure(
            "no answer for channel call {method} {path}", failure, method=request.method, path=request.path
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = reason  # later calls fail with it too
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(self._lost)

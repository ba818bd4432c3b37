"""The internal messages' bodies, checked once, where they arrive, as public bodies are.

Each ``parse`` takes a decoded JSON object and gives the message, or raises ``BadRequest``
(400) saying which field was wrong: the integer fields with the checks of the public API
(``bazar.validation``), so ``true`` is no sequence number here either. The senders build
the same shapes (``bazar.replication``, ``bazar.failover``, ``bazar.invalidation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bazar.errors import BadRequest
from bazar.validation import idempotency_key, integer_field, is_integer, optional_integer, purchase_quantity

ROLES = ("catalog", "order")  # the roles whose sequencers report their epoch
# Takes in one ``Buys`` call: a few kilobytes, well within what the channel carries in one value.
MAX_BUYS = 64


def name_field(body: dict[str, Any], name: str) -> str:
    """A replica's name (its text is checked by whoever looks it up)."""
    value = body.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"field {name!r} must be a replica name, not {value!r}")
    return value


def names_field(body: dict[str, Any], name: str) -> list[str]:
    """A list of strings (cache keys, replica names); an empty list when absent."""
    values = body.get(name, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadRequest(f"'{name}' must be a list of strings")
    return values


@dataclass(frozen=True)
class Purchase:
    """``PURCHASE_ROUTE`` (front end to order replica) and ``BUY_ROUTE`` (order replica to
    catalog): the quantity, and the purchase's idempotency key (the front end gives every
    purchase one; one sent to a replica directly may have none)."""

    quantity: int = 1
    idempotency_key: str | None = None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Purchase:
        quantity = purchase_quantity(body)
        key = body.get("idempotency_key")
        if key is not None and not isinstance(key, str):
            raise BadRequest("'idempotency_key' must be a string")
        return cls(quantity, idempotency_key(key))

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"quantity": self.quantity}
        if self.idempotency_key is not None:
            out["idempotency_key"] = self.idempotency_key
        return out


@dataclass(frozen=True)
class Buys:
    """``BUYS_PATH`` (order sequencer to catalog): the takes of several purchases, each a
    book id and its ``Purchase``; the catalog answers each on its own (``{"results": [...]}``,
    each ``{"book": ...}`` or ``{"error": ...}``)."""

    buys: list[tuple[int, Purchase]]

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Buys:
        buys = body.get("buys")
        if not isinstance(buys, list) or not 1 <= len(buys) <= MAX_BUYS:
            raise BadRequest(f"'buys' must be a list of 1 to {MAX_BUYS} purchases")
        parsed = []
        for buy in buys:
            if not isinstance(buy, dict):
                raise BadRequest("each of 'buys' must be an object")
            parsed.append((integer_field(buy, "book_id", minimum=0), Purchase.parse(buy)))
        return cls(parsed)

    def body(self) -> dict[str, Any]:
        return {"buys": [{"book_id": book, **purchase.body()} for book, purchase in self.buys]}


@dataclass(frozen=True)
class Replicate:
    """``REPLICATE_PATH``: a gap-free run of the sequencer's log entries, and its last sequence
    number; and the epoch and the sequencer that sent it."""

    entries: list[tuple[int, dict[str, Any]]]
    last_seq: int = 0
    # None: no epoch in the body. A Role's sequencer always sends one (``Role._lead`` gives
    # every link its epoch); only a FollowerLink built without a Role (unit tests) sends none,
    # and a follower applies such a message without checking an epoch.
    epoch: int | None = None
    sequencer: str | None = None
    # A follower's read lease (``bazar.leases.FollowerLease``: a ``Grant.body`` and the
    # sequencer); only with ``epoch``.
    lease: dict[str, Any] | None = None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Replicate:
        entries = body.get("entries")
        last_seq = optional_integer(body, "last_seq", 0)
        if not isinstance(entries, list) or not all(
            isinstance(e, list) and len(e) == 2 and isinstance(e[0], int) and isinstance(e[1], dict)
            for e in entries
        ):
            raise BadRequest("'entries' must be a list of [seq, entry] pairs")
        if "epoch" not in body:
            return cls([(seq, entry) for seq, entry in entries], last_seq)
        epoch = integer_field(body, "epoch")
        lease = _lease(body["lease"]) if "lease" in body else None
        sequencer = name_field(body, "sequencer")
        return cls([(seq, entry) for seq, entry in entries], last_seq, epoch, sequencer, lease)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entries": self.entries, "last_seq": self.last_seq}
        if self.epoch is not None:
            out["epoch"], out["sequencer"] = self.epoch, self.sequencer
        if self.lease is not None:
            out["lease"] = self.lease
        return out


@dataclass(frozen=True)
class Elect:
    """``ELECT_PATH``: a candidate asks to sequence writes in ``epoch``, holding writes up to ``last_seq``."""

    epoch: int
    sequencer: str
    last_seq: int = 0

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Elect:
        epoch = integer_field(body, "epoch")
        return cls(epoch, name_field(body, "sequencer"), optional_integer(body, "last_seq", 0))

    def body(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "sequencer": self.sequencer, "last_seq": self.last_seq}


@dataclass(frozen=True)
class Invalidate:
    """``INVALIDATE_PATH``, from a sequencer to the front end, as of its write ``seq``: the cache
    keys to drop, the followers not to read from (``lagging``) or to read from again
    (``caught_up``); and the role and epoch it sequences in, and its name when it was just
    elected (``sequencer``: see ``FrontendNotifier.announce``)."""

    keys: list[str]
    seq: int = 0
    lagging: list[str] | None = None  # None: not in the body (as good as empty)
    caught_up: list[str] | None = None
    role: str | None = None  # with ``epoch``, or neither
    epoch: int | None = None
    sequencer: str | None = None
    # A cache lease (``bazar.leases.Grant.body``); only with ``role`` and ``epoch``.
    lease: dict[str, Any] | None = None
    # Drop the whole cache first, and store no answer older than ``seq``: the sequencer
    # revoked this front end's lease (it may have missed an earlier push: ``bazar.leases``).
    flush: bool = False

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Invalidate:
        keys = names_field(body, "keys")
        seq = optional_integer(body, "seq", 0)
        lagging = names_field(body, "lagging") if "lagging" in body else None
        caught_up = names_field(body, "caught_up") if "caught_up" in body else None
        flush = body.get("flush", False)
        if not isinstance(flush, bool):
            raise BadRequest("'flush' must be true or false")
        if "epoch" not in body:
            return cls(keys, seq, lagging, caught_up, flush=flush)
        epoch, role = body["epoch"], body.get("role")
        if not is_integer(epoch) or role not in ROLES:
            raise BadRequest("'epoch' must be an integer and 'role' catalog or order")
        sequencer = body.get("sequencer")  # only in an announcement; anything else is no name
        named = sequencer if isinstance(sequencer, str) else None
        lease = _lease(body["lease"]) if "lease" in body else None
        return cls(keys, seq, lagging, caught_up, role, epoch, named, lease, flush)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"keys": self.keys, "seq": self.seq}
        if self.lagging is not None:
            out["lagging"] = self.lagging
        if self.caught_up is not None:
            out["caught_up"] = self.caught_up
        if self.epoch is not None:
            out["role"], out["epoch"] = self.role, self.epoch
        if self.sequencer is not None:
            out["sequencer"] = self.sequencer
        if self.lease is not None:
            out["lease"] = self.lease
        if self.flush:
            out["flush"] = True
        return out


def _lease(lease: Any) -> dict[str, Any]:
    """A grant: ``lessor`` (a token), ``grant`` and ``based_on`` (numbers), ``flush``, and the
    ``sequencer`` that sent it."""
    if (
        not isinstance(lease, dict)
        or not isinstance(lease.get("lessor"), str)
        or not is_integer(lease.get("grant"))
        or not is_integer(lease.get("based_on"))
        or not isinstance(lease.get("flush"), bool)
        or not isinstance(lease.get("sequencer"), str)
    ):
        raise BadRequest(
            "'lease' must have a 'lessor' token, 'grant' and 'based_on' integers, 'flush' and 'sequencer'"
        )
    return {k: lease[k] for k in ("lessor", "grant", "based_on", "flush", "sequencer")}

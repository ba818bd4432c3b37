"""What a valid request looks like (ids in paths and queries, write bodies), checked the same
way by the front end and the replicas."""

from __future__ import annotations

import math
import uuid
from typing import TYPE_CHECKING, Any, TypeGuard

from bazar.errors import BadRequest
from bazar.protocol import IDEMPOTENCY_HEADER

if TYPE_CHECKING:
    from twisted.web.iweb import IRequest

MAX_INTEGER = 2**53  # what a JSON number holds exactly in any client


def is_integer(value: Any) -> TypeGuard[int]:
    """A JSON integer: an ``int`` that is not a ``bool`` (``True`` is an ``int`` in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_id(text: str, what: str = "book id") -> int:
    """A non-negative integer from a path segment, or a 400 that says what was wrong."""
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise BadRequest(f"{what} must be a non-negative integer, not {text!r}")
    return int(text)


def query_id(request: IRequest, name: str, default: int) -> int:
    """A non-negative integer query parameter (its first value), ``default`` if absent."""
    values = (request.args or {}).get(name.encode())
    if not values:
        return default
    return parse_id(values[0].decode("ascii", "replace"), name)


def integer_field(body: dict[str, Any], name: str, *, minimum: int | None = None) -> int:
    value = body.get(name)
    if value is None:
        raise BadRequest(f"field {name!r} is required")
    if not is_integer(value):
        raise BadRequest(f"field {name!r} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise BadRequest(f"field {name!r} must be at least {minimum}, not {value}")
    if abs(value) > MAX_INTEGER:
        raise BadRequest(f"field {name!r} is too large")
    return value


def number_field(body: dict[str, Any], name: str, *, minimum: float) -> float:
    value = body.get(name)
    if value is None:
        raise BadRequest(f"field {name!r} is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"field {name!r} must be a number, not {value!r}")
    if value < minimum:
        raise BadRequest(f"field {name!r} must be at least {minimum}, not {value}")
    if value > 1e12:
        raise BadRequest(f"field {name!r} is too large")
    return float(value)


def optional_integer(body: dict[str, Any], name: str, default: int) -> int:
    """Like ``integer_field``, but ``default`` for a body without ``name``."""
    return integer_field(body, name) if name in body else default


def purchase_quantity(body: dict[str, Any]) -> int:
    """``{"quantity": n}`` with n >= 1; an empty body buys one copy."""
    if "quantity" not in body:
        return 1
    return integer_field(body, "quantity", minimum=1)


MAX_KEY_LENGTH = 200


def idempotency_key(value: str | bytes | None) -> str | None:
    """A client's key for a retry-safe purchase: 1 to 200 printable ASCII characters, or none."""
    if value is None:
        return None
    if isinstance(value, bytes):  # a raw header: its bytes need not even be text
        value = value.decode("latin-1")
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not value.isascii() or not value.isprintable():
        raise BadRequest(f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return value


def new_idempotency_key() -> str:
    """The key of a purchase whose client gave none: every purchase has one, so that its take
    at the catalog and its order are tied (see ``bazar.order.orphans``)."""
    return f"bazar-{uuid.uuid4().hex}"


def in_doubt(message: str, key: str) -> str:
    """An error for a purchase that may have happened after all, saying how to find out
    (once: the order replica and the front end both pass such errors on)."""
    advice = f"the purchase may have gone through: ask again with {IDEMPOTENCY_HEADER} {key} to find out"
    return message if message.endswith(advice) else f"{message}; {advice}"


def new_price(body: dict[str, Any]) -> float:
    return number_field(body, "price", minimum=0)


def quantity_change(body: dict[str, Any]) -> dict[str, int]:
    """Exactly one of ``{"quantity": n >= 0}`` (set) or ``{"delta": n}`` (add or remove)."""
    if ("quantity" in body) == ("delta" in body):
        raise BadRequest("give exactly one of 'quantity' (the new stock) or 'delta' (a change to it)")
    if "quantity" in body:
        return {"quantity": integer_field(body, "quantity", minimum=0)}
    return {"delta": integer_field(body, "delta")}

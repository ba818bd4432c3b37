"""What a valid write request looks like, checked the same way by the front end and the replicas."""

from __future__ import annotations

import uuid
from typing import Any

from bazar.errors import BadRequest
from bazar.web import integer_field, number_field


def purchase_quantity(body: dict[str, Any]) -> int:
    """``{"quantity": n}`` with n >= 1; an empty body buys one copy."""
    if "quantity" not in body:
        return 1
    return integer_field(body, "quantity", minimum=1)


IDEMPOTENCY_HEADER = "Idempotency-Key"
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


def keyed_purchase(body: dict[str, Any]) -> dict[str, Any]:
    """A purchase between replicas: the quantity, and the client's idempotency key if any."""
    out: dict[str, Any] = {"quantity": purchase_quantity(body)}
    key = body.get("idempotency_key")
    if key is not None:
        if not isinstance(key, str):
            raise BadRequest("'idempotency_key' must be a string")
        out["idempotency_key"] = idempotency_key(key)
    return out


def new_price(body: dict[str, Any]) -> float:
    return number_field(body, "price", minimum=0)


def quantity_change(body: dict[str, Any]) -> dict[str, int]:
    """Exactly one of ``{"quantity": n >= 0}`` (set) or ``{"delta": n}`` (add or remove)."""
    if ("quantity" in body) == ("delta" in body):
        raise BadRequest("give exactly one of 'quantity' (the new stock) or 'delta' (a change to it)")
    if "quantity" in body:
        return {"quantity": integer_field(body, "quantity", minimum=0)}
    return {"delta": integer_field(body, "delta")}

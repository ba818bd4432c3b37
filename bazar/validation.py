"""What a valid write request looks like, checked the same way by the front end and the replicas."""

from __future__ import annotations

from typing import Any

from bazar.errors import BadRequest
from bazar.web import integer_field, number_field


def purchase_quantity(body: dict[str, Any]) -> int:
    """``{"quantity": n}`` with n >= 1; an empty body buys one copy."""
    if "quantity" not in body:
        return 1
    return integer_field(body, "quantity", minimum=1)


def new_price(body: dict[str, Any]) -> float:
    return number_field(body, "price", minimum=0)


def quantity_change(body: dict[str, Any]) -> dict[str, int]:
    """Exactly one of ``{"quantity": n >= 0}`` (set) or ``{"delta": n}`` (add or remove)."""
    if ("quantity" in body) == ("delta" in body):
        raise BadRequest("give exactly one of 'quantity' (the new stock) or 'delta' (a change to it)")
    if "quantity" in body:
        return {"quantity": integer_field(body, "quantity", minimum=0)}
    return {"delta": integer_field(body, "delta")}

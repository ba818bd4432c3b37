"""Bad requests get the right 4xx as ``{"error": {"code", "message"}}`` JSON, never a 500.

Each row of the tables below becomes its own test method, so a failure names its row
under both pytest and trial.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bazar.protocol import SECRET_HEADER
from tests.unit.memcluster import SECRET, MemCluster, Reply

_ = object()  # "no body"

# (test name, method, path, body: JSON-encoded unless bytes, expected status, Allow header)
FRONTEND_CASES: list[tuple[str, str, str, Any, int, str | None]] = [
    ("info_id_letters", "GET", "/bazar/info/abc", _, 400, None),
    ("info_id_negative", "GET", "/bazar/info/-1", _, 400, None),
    ("info_id_fraction", "GET", "/bazar/info/1.5", _, 400, None),
    ("info_id_non_ascii_digit", "GET", "/bazar/info/%D9%A1", _, 400, None),
    ("info_id_huge", "GET", "/bazar/info/99999999999999999999", _, 400, None),
    ("order_id_letters", "GET", "/bazar/orders/abc", _, 400, None),
    ("purchase_id_negative", "POST", "/bazar/purchase/-1", {"quantity": 1}, 400, None),
    ("update_price_id_fraction", "PUT", "/bazar/update_price/1.5", {"price": 1}, 400, None),
    ("update_quantity_id_letters", "PUT", "/bazar/update_quantity/abc", {"quantity": 1}, 400, None),
    ("search_blank_topic", "GET", "/bazar/search/%20", _, 400, None),
    ("info_path_not_utf8", "GET", "/bazar/info/%ff", _, 400, None),
    ("search_path_not_utf8", "GET", "/bazar/search/caf%e9", _, 400, None),
    ("price_bad_json", "PUT", "/bazar/update_price/1", b'{"price": ', 400, None),
    ("price_not_utf8", "PUT", "/bazar/update_price/1", b"\xff\xfe", 400, None),
    ("price_json_list", "PUT", "/bazar/update_price/1", [1], 400, None),
    ("price_json_string", "PUT", "/bazar/update_price/1", "12", 400, None),
    ("price_json_null", "PUT", "/bazar/update_price/1", None, 400, None),
    ("price_empty_body", "PUT", "/bazar/update_price/1", b"", 400, None),
    ("price_missing", "PUT", "/bazar/update_price/1", {"cost": 3}, 400, None),
    ("price_negative", "PUT", "/bazar/update_price/1", {"price": -0.01}, 400, None),
    ("price_string", "PUT", "/bazar/update_price/1", {"price": "10"}, 400, None),
    ("price_boolean", "PUT", "/bazar/update_price/1", {"price": True}, 400, None),
    ("price_nan", "PUT", "/bazar/update_price/1", b'{"price": NaN}', 400, None),
    ("price_infinite", "PUT", "/bazar/update_price/1", b'{"price": 1e400}', 400, None),
    ("price_body_too_large", "PUT", "/bazar/update_price/1", b'{"price": 1}' + b" " * 70_000, 413, None),
    ("purchase_json_nested_deep", "POST", "/bazar/purchase/6", b"[" * 50_000, 400, None),
    ("price_json_nested_deep", "PUT", "/bazar/update_price/6", b'{"price": 1, "x": ' * 3_000, 400, None),
    ("quantity_below_zero", "PUT", "/bazar/update_quantity/1", {"quantity": -1}, 400, None),
    ("quantity_string", "PUT", "/bazar/update_quantity/1", {"quantity": "5"}, 400, None),
    ("quantity_and_delta", "PUT", "/bazar/update_quantity/1", {"quantity": 5, "delta": 1}, 400, None),
    ("neither_quantity_nor_delta", "PUT", "/bazar/update_quantity/1", {}, 400, None),
    ("delta_fraction", "PUT", "/bazar/update_quantity/1", {"delta": 1.5}, 400, None),
    ("delta_boolean", "PUT", "/bazar/update_quantity/1", {"delta": False}, 400, None),
    ("purchase_quantity_zero", "POST", "/bazar/purchase/1", {"quantity": 0}, 400, None),
    ("purchase_quantity_string", "POST", "/bazar/purchase/1", {"quantity": "2"}, 400, None),
    ("purchase_quantity_boolean", "POST", "/bazar/purchase/1", {"quantity": True}, 400, None),
    ("purchase_json_list", "POST", "/bazar/purchase/1", [], 400, None),
    ("info_unknown_book", "GET", "/bazar/info/99", _, 404, None),
    ("purchase_unknown_book", "POST", "/bazar/purchase/99", _, 404, None),
    ("price_unknown_book", "PUT", "/bazar/update_price/99", {"price": 1}, 404, None),
    ("set_quantity_unknown_book", "PUT", "/bazar/update_quantity/99", {"quantity": 1}, 404, None),
    ("delta_unknown_book", "PUT", "/bazar/update_quantity/99", {"delta": 1}, 404, None),
    ("order_unknown", "GET", "/bazar/orders/99", _, 404, None),
    ("purchase_more_than_stock", "POST", "/bazar/purchase/2", {"quantity": 9}, 409, None),
    ("delta_below_zero", "PUT", "/bazar/update_quantity/2", {"delta": -9}, 409, None),
    ("unknown_path", "GET", "/nope", _, 404, None),
    ("unknown_bazar_path", "GET", "/bazar", _, 404, None),
    ("info_without_id", "GET", "/bazar/info/", _, 404, None),
    ("info_extra_segment", "GET", "/bazar/info/1/extra", _, 404, None),
    ("catalog_path_on_frontend", "GET", "/catalog/books", _, 404, None),
    ("static_null_byte", "GET", "/static/%00", _, 404, None),
    ("static_null_byte_in_name", "GET", "/static/app.js%00.css", _, 404, None),
    ("post_to_info", "POST", "/bazar/info/1", _, 405, "GET"),
    ("get_purchase", "GET", "/bazar/purchase/1", _, 405, "POST"),
    ("post_update_price", "POST", "/bazar/update_price/1", {"price": 1}, 405, "PUT"),
    ("get_update_quantity", "GET", "/bazar/update_quantity/1", _, 405, "PUT"),
    ("delete_orders", "DELETE", "/bazar/orders", _, 405, "GET"),
    ("put_cluster", "PUT", "/bazar/cluster", {}, 405, "GET"),
    ("get_invalidate", "GET", "/internal/invalidate", _, 405, "POST"),
]

_CATALOG_ENTRY = [
    [1, {"book": {"id": 1, "title": "t", "topic": "x", "price": 0.0, "quantity": 0}}],
]
_ORDER_ENTRY = [
    [1, {"order": {"order_id": 1, "book_id": 1, "title": "t", "price": 0.0, "quantity": 1}}],
]

# (test name, target, method, path, body, status with the right secret)
INTERNAL_CASES: list[tuple[str, str, str, str, Any, int]] = [
    ("frontend_invalidate", "frontend", "POST", "/internal/invalidate", {"keys": ["info/1"]}, 200),
    ("catalog_replicate", "catalog-2", "POST", "/internal/replicate", {"entries": _CATALOG_ENTRY}, 200),
    ("catalog_status", "catalog-1", "GET", "/internal/status", _, 200),
    ("catalog_books", "catalog-3", "GET", "/catalog/books", _, 200),
    ("catalog_price", "catalog-1", "PUT", "/catalog/books/1/price", {"price": 0}, 200),
    ("catalog_buy", "catalog-2", "POST", "/catalog/books/1/buy", {"quantity": 1}, 200),
    ("catalog_takes", "catalog-3", "GET", "/catalog/takes?after=0", _, 200),
    ("order_replicate", "order-3", "POST", "/internal/replicate", {"entries": _ORDER_ENTRY}, 200),
    ("order_status", "order-2", "GET", "/internal/status", _, 200),
    ("order_purchase", "order-1", "POST", "/order/purchase/1", {}, 200),
    ("order_orders", "order-2", "GET", "/order/orders", _, 200),
    ("catalog_unknown_path", "catalog-1", "GET", "/nope", _, 404),
]


class ErrorTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def send(self, method: str, path: str, body: Any, to: str = "frontend", **kwargs: Any) -> Reply:
        data = None if body is _ else body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.cluster.request(method, path, data=data, to=to, **kwargs)

    def assertError(self, reply: Reply, code: int, keyed: bool = False) -> None:
        """``reply`` is exactly the JSON error shape with status ``code``; ``keyed`` (a
        purchase's): with the purchase's idempotency key beside it, as in the header."""
        self.assertEqual(reply.code, code, reply.json)
        self.assertEqual(reply.headers.get("content-type"), "application/json")
        if keyed:
            self.assertEqual(set(reply.json), {"error", "idempotency_key"})
            self.assertEqual(reply.json["idempotency_key"], reply.headers["idempotency-key"])
        else:
            self.assertEqual(set(reply.json), {"error"})
        self.assertEqual(set(reply.json["error"]), {"code", "message"})
        self.assertEqual(reply.json["error"]["code"], code)
        message = reply.json["error"]["message"]
        self.assertIsInstance(message, str)
        self.assertTrue(message.strip())

    def assertNothingWritten(self) -> None:
        """No replica has applied a single write."""
        for name, store in self.cluster.stores.items():
            self.assertEqual(self.successResultOf(store.last_seq()), 0, name)


def _frontend_case(method: str, path: str, body: Any, code: int, allow: str | None) -> Callable[..., None]:
    def test(self: ErrorTestCase) -> None:
        reply = self.send(method, path, body)
        self.assertError(reply, code, keyed=method == "POST" and path.startswith("/bazar/purchase/"))
        if allow is not None:
            self.assertIn(allow, [m.strip() for m in reply.headers["allow"].split(",")])
            self.assertNotIn(method, reply.headers["allow"])
        self.assertNothingWritten()

    test.__doc__ = f"{method} {path} -> {code}"
    return test


class FrontendErrorTests(ErrorTestCase):
    """Validation, lookups and routing through the public API."""


for _name, *_row in FRONTEND_CASES:
    setattr(FrontendErrorTests, f"test_{_name}", _frontend_case(*_row))


def _internal_case(to: str, method: str, path: str, body: Any, ok: int) -> Callable[..., None]:
    def test(self: ErrorTestCase) -> None:
        reply = self.send(method, path, body, to=to)
        self.assertError(reply, 401)
        self.assertIn(SECRET_HEADER, reply.json["error"]["message"])
        reply = self.send(method, path, body, to=to, headers={SECRET_HEADER: "not-the-secret"})
        self.assertError(reply, 403)
        reply = self.send(method, path, body, to=to, headers={SECRET_HEADER: b"\xff\xfe"})  # not UTF-8
        self.assertError(reply, 403)
        self.assertNothingWritten()
        # The same request with the secret gets through: the refusal was about the secret.
        reply = self.send(method, path, body, to=to, headers={SECRET_HEADER: self.cluster.config.secret})
        self.assertEqual(reply.code, ok, reply.json)

    test.__doc__ = f"{method} {path} on {to}: 401 without the secret, 403 with a wrong one (even not UTF-8)"
    return test


class InternalAuthTests(ErrorTestCase):
    """Every internal endpoint refuses a caller that does not know the cluster secret."""

    def test_replica_errors_have_the_same_shape(self) -> None:
        """A replica's own validation errors are JSON errors too."""
        secret = {SECRET_HEADER: self.cluster.config.secret}
        for to, path, body, code in [
            ("catalog-2", "/internal/replicate", {"entries": [[1, "x"]]}, 400),
            ("catalog-2", "/internal/replicate", {"entries": [[2, _CATALOG_ENTRY[0][1]]]}, 409),
            ("order-2", "/internal/replicate", b"[]", 400),
            ("order-2", "/internal/replicate", b"[" * 50_000, 400),
            ("order-2", "/internal/st%ffatus", {}, 400),
        ]:
            reply = self.send("POST", path, body, to=to, headers=secret)
            self.assertEqual(reply.code, code, (to, body))
            self.assertEqual(reply.json["error"]["code"], code)
        gap = self.send("POST", "/internal/replicate", {"entries": [[3, {}]]}, to="order-3", headers=secret)
        self.assertEqual((gap.code, gap.json["last_seq"]), (409, 0))


for _name, *_row in INTERNAL_CASES:
    setattr(InternalAuthTests, f"test_{_name}", _internal_case(*_row))

del _name, _row


class RedirectTests(ErrorTestCase):
    def test_a_branch_without_its_slash_says_where(self) -> None:
        """The front end's "/static" redirects to "/static/" with a Location, in JSON."""
        reply = self.send("GET", "/static", _)
        self.assertEqual(reply.code, 308)
        self.assertEqual(reply.headers["location"], "http://127.0.0.1:5000/static/")
        self.assertEqual(reply.json["error"]["code"], 308)

    def test_internal_without_slash_is_no_path(self) -> None:
        """A replica's "/internal" (no endpoint there) is a JSON 404, like any unknown path."""
        reply = self.send("GET", "/internal", _, to="catalog-2", headers={SECRET_HEADER: SECRET})
        self.assertEqual((reply.code, reply.json["error"]["code"]), (404, 404))

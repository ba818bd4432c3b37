"""Property-based tests of the live front end against its OpenAPI document, with Schemathesis.

For every documented operation, Schemathesis sends the document's examples, its coverage
cases (edge values, invalid values, methods a path does not support) and a bounded number
of generated requests, valid and invalid, to the front end of a real cluster on loopback,
and checks every answer: no 5xx, a documented status, the documented content type, headers
and body, invalid input refused and valid input accepted. The document is read from the
package's file, so it is what is tested even before anything serves it.

Writes change the module's cluster (prices, stock, orders): that is expected, and why a
purchase may find too little stock (409, documented).

Last, requests no HTTP library sends as they are (a 5 MB header, a body that never ends, a
secret that is not UTF-8) go raw over a socket, to the front end and to replicas.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from bazar.frontend import openapi
from bazar.launch import Cluster
from tests.unit.rawhttp import error_shape_problem, parse_replies

schemathesis = pytest.importorskip("schemathesis")  # in the test extra
requests = pytest.importorskip("requests")  # one of its dependencies

pytestmark = pytest.mark.integration

# The same requests on every run (Schemathesis mixes each operation's label into the seed),
# and a bounded number of generated requests per operation, beyond the examples and coverage
# cases. For a longer hunt: BAZAR_FUZZ_SEED=<n> BAZAR_FUZZ_EXAMPLES=500 pytest <this file>.
SEED = int(os.environ.get("BAZAR_FUZZ_SEED", "20240517"))
MAX_EXAMPLES = int(os.environ.get("BAZAR_FUZZ_EXAMPLES", "25"))

CONFIG: dict[str, Any] = {
    "seed": SEED,
    "request-timeout": 20,
    "max-redirects": 0,  # a redirect is an answer under test, not something to follow
    "generation": {
        "mode": "all",  # valid and invalid requests
        "max-examples": MAX_EXAMPLES,
        "database": "none",  # no .hypothesis directory, nothing replayed from earlier runs
    },
    # Stateful sequences need links between operations, which the document does not declare.
    "phases": {"stateful": {"enabled": False}},
}


@pytest.fixture(scope="module")
def http_session() -> Iterator[requests.Session]:
    """One keep-alive session for the whole run; never through a proxy (loopback only)."""
    with requests.Session() as s:
        s.trust_env = False
        yield s


# Loaded at import, from the package's file: one test per documented operation. (Not
# ``schemathesis.pytest.from_fixture``: its lazy loading breaks on pytest 9.2, which removed
# ``Node._nodeid``.) The base URL, the live cluster's, is given to each call instead.
schema = schemathesis.openapi.from_dict(
    openapi.document(), config=schemathesis.config.SchemathesisConfig.from_dict(CONFIG)
)


@schema.parametrize()
def test_frontend_conforms(case: Any, cluster: Cluster, http_session: requests.Session) -> None:
    case.call_and_validate(base_url=cluster.frontend, session=http_session)


# Requests the generator seldom or never draws, each checked the same way. A hand-made case's
# path parameters are sent as given, so topics are percent-encoded here (a "/" as %2F).
def _topic(text: str) -> dict[str, Any]:
    return {"path_parameters": {"topic": quote(text, safe="")}}


def _book(book_id: Any, body: Any) -> dict[str, Any]:
    return {"path_parameters": {"book_id": book_id}, "body": body}


SEARCH, INFO, ORDER = "/bazar/search/{topic}", "/bazar/info/{book_id}", "/bazar/orders/{order_id}"
PURCHASE, PRICE, STOCK = (
    "/bazar/purchase/{book_id}",
    "/bazar/update_price/{book_id}",
    "/bazar/update_quantity/{book_id}",
)
EDGE_CASES = [
    pytest.param(SEARCH, "GET", _topic("/starts with a slash"), id="topic-leading-slash"),
    pytest.param(SEARCH, "GET", _topic("ends with a slash/"), id="topic-trailing-slash"),
    pytest.param(SEARCH, "GET", _topic("two//slashes"), id="topic-double-slash"),
    pytest.param(SEARCH, "GET", _topic("\u3000\t"), id="topic-only-whitespace-400"),
    pytest.param(INFO, "GET", {"path_parameters": {"book_id": "0" * 18 + "1"}}, id="id-19-digits-400"),
    pytest.param(ORDER, "GET", {"path_parameters": {"order_id": 10**18 - 1}}, id="order-unknown-404"),
    pytest.param(PURCHASE, "POST", _book(2, {"quantity": 2**53}), id="purchase-2**53-copies"),
    pytest.param(PURCHASE, "POST", _book(2, {"quantity": 1.0}), id="purchase-float-400"),
    pytest.param(STOCK, "PUT", _book(3, {"delta": -(2**53)}), id="stock-delta-minus-2**53"),
    pytest.param(PRICE, "PUT", _book(3, "x" * 70_000), id="body-too-large-413"),
]


@pytest.mark.parametrize(("path", "method", "data"), EDGE_CASES)
def test_edge_cases_conform(
    path: str, method: str, data: dict[str, Any], cluster: Cluster, http_session: requests.Session
) -> None:
    case = schema[path][method].Case(media_type="application/json" if "body" in data else None, **data)
    case.call_and_validate(base_url=cluster.frontend, session=http_session)


# Hostile requests that no HTTP library would send as they are, so sent raw over a socket:
# each gets its JSON error at once (never a 5xx, a bare status or a silent close), and the
# server then closes the connection ("Connection: close" where the request is whole).
def _request(head: str, *headers: bytes, body: bytes = b"") -> bytes:
    lines = [head.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


NOT_UTF8 = b"X-Bazar-Secret: \xff\xfe"
DEEP = b"[" * 50_000
CHUNK = b"1000\r\n" + b"a" * 4096 + b"\r\n"
DECLARED = b"Content-Length: 100000000"
HOSTILE = [
    pytest.param(*case[1:], id=case[0])
    for case in [
        ("json-50000-deep", "frontend", _request("POST /bazar/purchase/6", body=DEEP), 400),
        ("price-50000-deep", "frontend", _request("PUT /bazar/update_price/6", body=DEEP), 400),
        ("static-null-byte", "frontend", _request("GET /static/%00"), 404),
        ("secret-not-utf8-status", "catalog-1", _request("GET /internal/status", NOT_UTF8), 403),
        ("secret-not-utf8-orders", "order-2", _request("GET /order/orders", NOT_UTF8), 403),
        (
            "secret-not-utf8-invalidate",
            "frontend",
            _request("POST /internal/invalidate", NOT_UTF8, body=b"{}"),
            403,
        ),
        # (A read the front end has routed before is answered before werkzeug sees the Host.)
        ("host-label-too-long", "frontend", _request("GET /bazar/orders", b"Host: " + b"a" * 64), 400),
        ("2000-headers", "frontend", _request("GET /bazar/info/1", *[b"X-A: b"] * 2000), 431),
        ("5-MB-header", "frontend", _request("GET /bazar/info/1", b"X-A: " + b"b" * 5_000_000), 431),
        ("100-KB-request-line", "frontend", _request("GET /bazar/info/" + "1" * 100_000), 414),
        (
            "declares-100-MB-sends-11",
            "frontend",
            _request("PUT /bazar/update_price/1", DECLARED) + b'{"price":1}',
            413,
        ),
        # 68 KiB of chunks, with no last chunk: refused as it passes 64 KiB.
        (
            "chunked-past-64-KiB",
            "frontend",
            _request("POST /bazar/purchase/1", b"Transfer-Encoding: chunked") + CHUNK * 17,
            413,
        ),
    ]
]


@pytest.mark.parametrize(("to", "data", "code"), HOSTILE)
def test_hostile_requests_get_json_errors_at_once(to: str, data: bytes, code: int, cluster: Cluster) -> None:
    address = urlsplit(cluster.url(to))
    assert address.hostname is not None and address.port is not None
    received = []
    with socket.create_connection((address.hostname, address.port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(data)
        while chunk := s.recv(65536):  # until the server closes
            received.append(chunk)
    elapsed = time.monotonic() - started
    replies = parse_replies(b"".join(received))
    assert [r.code for r in replies] == [code], b"".join(received)[:300]
    assert error_shape_problem(replies[0]) is None
    assert elapsed < 5, f"answered and closed after {elapsed:.1f} s"

"""Property-based tests of the live front end against its OpenAPI document, with Schemathesis.

For every documented operation, Schemathesis sends the document's examples, its coverage
cases (edge values, invalid values, methods a path does not support) and a bounded number
of generated requests, valid and invalid, to the front end of a real cluster on loopback,
and checks every answer: no 5xx, a documented status, the documented content type, headers
and body, invalid input refused and valid input accepted. The document is read from the
package's file, so it is what is tested even before anything serves it.

Writes change the module's cluster (prices, stock, orders): that is expected, and why a
purchase may find too little stock (409, documented).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from bazar.frontend import openapi
from tests.integration.cluster import Cluster

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

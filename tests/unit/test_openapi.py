"""The OpenAPI document is valid, and true to the code: same routes, same methods, same shapes.

``bazar/frontend/openapi.json`` is written by hand; these tests fail when a route is added,
removed or changed without the document following, and check the shapes the front end
builds itself (the cluster document, this document) against the document's schemas.
The live answers of a real cluster are checked by ``tests/integration/test_schemathesis.py``.
"""

from __future__ import annotations

import json
import re
from typing import Any
from unittest import SkipTest

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bazar.catalog.store import SEED_BOOKS
from bazar.client import ReplicaResponse
from bazar.config import Replica, parse
from bazar.errors import Unavailable
from bazar.frontend import openapi
from bazar.frontend.app import FrontendApp
from bazar.health import HealthProbe

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Werkzeug adds HEAD to every GET rule (twisted.web answers it without the body): not documented.
IMPLICIT_METHODS = {"head"}
PUBLIC_PREFIX = "/bazar/"
DOCUMENT_PATH = "/openapi.json"
_KLEIN_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")  # <book_id>, <path:topic>, <int(min=1):n>


def klein_to_openapi(rule: str) -> str:
    """``/bazar/search/<path:topic>`` -> ``/bazar/search/{topic}``."""
    return _KLEIN_ARGUMENT.sub(r"{\1}", rule)


def public_routes() -> dict[str, set[str]]:
    """The front end's public routes (everything under /bazar/, and this document): path -> methods."""
    routes: dict[str, set[str]] = {}
    for rule in FrontendApp.app.url_map.iter_rules():
        if rule.rule.startswith(PUBLIC_PREFIX) or rule.rule == DOCUMENT_PATH:
            methods = {m.lower() for m in rule.methods or ()} - IMPLICIT_METHODS
            routes.setdefault(klein_to_openapi(rule.rule), set()).update(methods)
    return routes


def documented_operations() -> dict[str, set[str]]:
    return {path: set(item) & HTTP_METHODS for path, item in openapi.document()["paths"].items()}


def schema_validator(name: str) -> Any:
    """A validator for ``#/components/schemas/<name>`` of the document, its $refs resolved."""
    try:
        from openapi_schema_validator import OAS30Validator, oas30_format_checker
    except ImportError:  # pragma: no cover - part of the test extra
        raise SkipTest("openapi-schema-validator is not installed") from None
    document = openapi.document()
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return OAS30Validator(schema, format_checker=oas30_format_checker)


def assert_valid(case: SynchronousTestCase, name: str, instance: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in schema_validator(name).iter_errors(instance)]
    case.assertEqual(errors, [], f"{instance!r} is not a valid {name}")


class DocumentTests(SynchronousTestCase):
    def test_is_json_bytes(self) -> None:
        """The served bytes are the file's, read once, and parse as JSON."""
        self.assertIs(openapi.document_bytes(), openapi.document_bytes())
        self.assertEqual(json.loads(openapi.document_bytes()), openapi.document())

    def test_valid_openapi(self) -> None:
        try:
            from openapi_spec_validator import validate
        except ImportError:  # pragma: no cover - part of the test extra
            raise SkipTest("openapi-spec-validator is not installed") from None
        validate(openapi.document())  # raises with the first problem it finds

    def test_every_route_is_documented(self) -> None:
        documented = documented_operations()
        for path, methods in public_routes().items():
            self.assertIn(path, documented, f"route {path} is not in openapi.json")
            self.assertEqual(documented[path], methods, f"methods of {path}")

    def test_every_documented_path_is_a_route(self) -> None:
        routes = public_routes()
        for path, methods in documented_operations().items():
            self.assertIn(path, routes, f"openapi.json documents {path}, which FrontendApp does not route")
            self.assertEqual(routes[path], methods, f"methods of {path}")

    def test_internal_routes_are_not_documented(self) -> None:
        self.assertEqual([p for p in openapi.document()["paths"] if p.startswith("/internal")], [])

    def test_path_parameters_declared(self) -> None:
        """Each {name} in a documented path is declared as a required path parameter, and vice versa."""
        for path, item in openapi.document()["paths"].items():
            in_path = set(re.findall(r"{([^{}]+)}", path))
            for method in set(item) & HTTP_METHODS:
                parameters = [*item.get("parameters", []), *item[method].get("parameters", [])]
                declared = {p["name"] for p in parameters if p["in"] == "path"}
                self.assertEqual(declared, in_path, f"{method.upper()} {path}")
                self.assertTrue(all(p["required"] for p in parameters if p["in"] == "path"))

    def test_error_statuses_documented(self) -> None:
        """What every operation of a kind can answer: a bad or unknown id (400, 404), a bad or
        too large body (400, 413), unreachable replicas (503)."""
        for path, item in openapi.document()["paths"].items():
            for method in set(item) & HTTP_METHODS:
                operation = item[method]
                statuses = set(operation["responses"])
                where = f"{method.upper()} {path}"
                self.assertIn("200", statuses, where)
                if "{" in path:
                    self.assertLessEqual({"400", "404"}, statuses, where)
                if "requestBody" in operation:
                    self.assertLessEqual({"400", "413"}, statuses, where)
                if path.startswith(PUBLIC_PREFIX) and path != "/bazar/cluster":
                    self.assertIn("503", statuses, where)

    def test_examples_are_valid(self) -> None:
        for name, schema in openapi.document()["components"]["schemas"].items():
            if "example" in schema:
                assert_valid(self, name, schema["example"])

    def test_replica_status_has_one_shape(self) -> None:
        """Every field is always there: one that answered has its data and no error; one that
        could not be asked has an error, a reason, and nulls."""
        answered = {
            "name": "catalog-1",
            "role": "catalog",
            "url": "http://127.0.0.1:5101",
            "healthy": True,
            "why_unhealthy": None,
            "error": None,
            "last_seq": 3,
            "digest": "0" * 64,
            "sequencer": "catalog-1",
            "epoch": 1,
        }
        unreachable = {
            **answered,
            "healthy": False,
            "why_unhealthy": "unreachable: no connection could be made",
            "error": "catalog-1 is unreachable: ConnectionRefusedError",
            **dict.fromkeys(("last_seq", "digest", "sequencer", "epoch")),
        }
        validator = schema_validator("ReplicaStatus")
        for body, valid in (
            (answered, True),
            ({**answered, "healthy": False, "why_unhealthy": "lagging: behind"}, True),
            (unreachable, True),
            ({k: v for k, v in answered.items() if k != "why_unhealthy"}, False),
            ({**answered, "last_seq": None}, False),
            ({**answered, "error": "x"}, False),
            ({**unreachable, "healthy": True}, False),
            ({**unreachable, "digest": "0" * 64}, False),
            ({**unreachable, "why_unhealthy": None}, False),
        ):
            self.assertEqual(validator.is_valid(body), valid, body)

    def test_seed_books_are_books(self) -> None:
        for book in SEED_BOOKS:
            assert_valid(
                self, "Book", dict(zip(("id", "title", "topic", "price", "quantity"), book, strict=True))
            )

    def test_request_schemas_agree_with_validation(self) -> None:
        """Bodies the document accepts, bazar.validation accepts, and the reverse, at the edges."""
        from bazar import validation
        from bazar.errors import BadRequest

        cases: list[tuple[str, Any, Any]] = [
            ("PurchaseRequest", validation.purchase_quantity, {}),
            ("PurchaseRequest", validation.purchase_quantity, {"quantity": 1}),
            ("PurchaseRequest", validation.purchase_quantity, {"quantity": 2**53}),
            ("PurchaseRequest", validation.purchase_quantity, {"quantity": 2**53 + 1}),
            ("PurchaseRequest", validation.purchase_quantity, {"quantity": 0}),
            ("PurchaseRequest", validation.purchase_quantity, {"quantity": None}),
            ("PurchaseRequest", validation.purchase_quantity, {"quantity": True}),
            ("PurchaseRequest", validation.purchase_quantity, {"quantity": "1"}),
            ("PurchaseRequest", validation.purchase_quantity, {"other": 1}),
            ("PriceUpdate", validation.new_price, {"price": 0}),
            ("PriceUpdate", validation.new_price, {"price": 1e12}),
            ("PriceUpdate", validation.new_price, {"price": 1e12 + 1}),
            ("PriceUpdate", validation.new_price, {"price": -0.01}),
            ("PriceUpdate", validation.new_price, {"price": "1"}),
            ("PriceUpdate", validation.new_price, {}),
            ("QuantityUpdate", validation.quantity_change, {"quantity": 0}),
            ("QuantityUpdate", validation.quantity_change, {"quantity": -1}),
            ("QuantityUpdate", validation.quantity_change, {"delta": -(2**53)}),
            ("QuantityUpdate", validation.quantity_change, {"delta": 2**53 + 1}),
            ("QuantityUpdate", validation.quantity_change, {"quantity": 1, "delta": 1}),
            ("QuantityUpdate", validation.quantity_change, {"quantity": None}),
            ("QuantityUpdate", validation.quantity_change, {}),
            ("QuantityUpdate", validation.quantity_change, {"delta": 3, "other": "x"}),
        ]
        for name, check, body in cases:
            try:
                check(body)
            except BadRequest:
                accepted = False
            else:
                accepted = True
            self.assertEqual(schema_validator(name).is_valid(body), accepted, f"{name} {body!r}")


# -- the front end's own answers, in memory ---------------------------------------------


class FakeReplicaClient:
    """Answers ``/internal/status`` for every replica but ``down``, which is unreachable."""

    def __init__(self, down: str) -> None:
        self.down = down
        self.clock = Clock()  # the front end's lookups run on it (none here)

    def call(self, method: str, replica: Replica, path: str, body: Any = None) -> Deferred[Any]:
        return self.request(method, replica, path, body).addCallback(lambda r: r.raise_for_error().json())

    def request(
        self, method: str, replica: Replica, path: str, body: Any = None, timeout: float | None = None
    ) -> Deferred[ReplicaResponse]:
        assert (method, path) == ("GET", "/internal/status"), (method, path)
        if replica.name == self.down:
            return fail(Unavailable(f"{replica.name} is unreachable: ConnectionRefusedError"))
        status = {
            "name": replica.name,
            "role": replica.role,
            "ready": True,
            "sequencer": f"{replica.role}-1",
            "last_seq": 3,
            "digest": "0" * 64,
        }
        return succeed(ReplicaResponse(200, json.dumps(status).encode(), replica.name))


class ServedTests(SynchronousTestCase):
    def setUp(self) -> None:
        config = parse({"cluster": {"secret": "unit-test"}})
        client = FakeReplicaClient(down="order-2")
        app = FrontendApp(config, client)  # type: ignore[arg-type]
        replicas = [*config.catalog, *config.order]
        # What /bazar/cluster calls healthy, a probe has found so.
        self.successResultOf(HealthProbe(app.health, replicas, client, Clock(), 1.0).probe_all())  # type: ignore[arg-type]
        self.http = StubTreq(app.app.resource())

    def get(self, path: str) -> tuple[int, str | None, bytes]:
        response = self.successResultOf(self.http.get("http://127.0.0.1" + path))
        body = self.successResultOf(self.http.content(response))
        content_type = response.headers.getRawHeaders("Content-Type", [None])[0]
        return response.code, content_type, body

    def test_serves_document(self) -> None:
        code, content_type, body = self.get(DOCUMENT_PATH)
        self.assertEqual((code, content_type), (200, "application/json"))
        self.assertEqual(body, openapi.document_bytes())

    def test_cluster_document(self) -> None:
        code, content_type, body = self.get("/bazar/cluster")
        self.assertEqual((code, content_type), (200, "application/json"))
        cluster = json.loads(body)
        assert_valid(self, "Cluster", cluster)
        self.assertEqual([r["healthy"] for r in cluster["replicas"]], [True] * 4 + [False, True])


class PurchaseAnswerTests(SynchronousTestCase):
    """A purchase's answers, as the in-memory cluster gives them, are what the document says."""

    def setUp(self) -> None:
        from tests.unit.memcluster import MemCluster

        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def test_an_order(self) -> None:
        reply = self.cluster.post("/bazar/purchase/2")
        self.assertEqual(reply.code, 200)
        assert_valid(self, "PurchaseResult", reply.json)
        self.assertEqual(reply.json["idempotency_key"], reply.headers["idempotency-key"])

    def test_errors(self) -> None:
        for book, code in (("99", 404), ("x", 400), ("2", 503)):
            path = f"/bazar/purchase/{book}"
            with self.subTest(path=path):
                self.cluster.unreachable("order-1", down=code == 503)
                reply = self.cluster.post(path, headers={"Idempotency-Key": "k"})
                self.assertEqual(reply.code, code, reply.json)
                assert_valid(self, "Error", reply.json)
                self.assertEqual(reply.json["idempotency_key"], "k")

"""The wire protocol: its messages read back what their senders wrote, bad bodies are refused,
and nothing outside ``bazar.protocol`` names an internal path or a header, or imports in a circle."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import bazar
from bazar.errors import BadRequest
from bazar.protocol import (
    BUY_ROUTE,
    ELECT_PATH,
    ORDER_ROUTE,
    REPLICATE_PATH,
    STATUS_PATH,
    fill,
    internal_route,
    log_path,
)
from bazar.protocol.messages import Elect, Invalidate, Purchase, Replicate

PACKAGE = Path(bazar.__file__).parent


class MessageTests(SynchronousTestCase):
    def test_each_message_reads_back_what_its_sender_wrote(self) -> None:
        """``parse(message.body())`` is the message, with and without its optional fields."""
        messages: list[Any] = [
            Replicate([(1, {"op": "buy"}), (2, {"op": "price"})], 2),
            Replicate([], 7, epoch=3, sequencer="catalog-2"),
            Elect(4, "order-3", 17),
            Invalidate(["info/1", "info/all"], 9, lagging=["catalog-3"], role="catalog", epoch=2),
            Invalidate([], 9, caught_up=["catalog-3"]),
            Invalidate([], 12, role="order", epoch=5, sequencer="order-1"),
            Invalidate(["info/2"], 13, role="catalog", epoch=5, flush=True),
            Purchase(2, "bazar-0123"),
            Purchase(1),
        ]
        for message in messages:
            self.assertEqual(type(message).parse(json.loads(json.dumps(message.body()))), message)

    def test_defaults_of_fields_a_sender_may_leave_out(self) -> None:
        """``last_seq`` and ``seq`` are 0 when absent; lists of names are empty."""
        self.assertEqual(Replicate.parse({"entries": []}), Replicate([], 0))
        self.assertEqual(Elect.parse({"epoch": 2, "sequencer": "catalog-1"}).last_seq, 0)
        self.assertEqual(Invalidate.parse({}), Invalidate([], 0))
        self.assertEqual(Purchase.parse({}), Purchase(1, None))

    def test_bad_bodies_are_refused_with_a_400(self) -> None:
        """Booleans are no integers, names are strings, roles are known: each a BadRequest."""
        bad: list[tuple[Any, dict[str, Any]]] = [
            (Replicate, {"entries": [], "last_seq": True}),
            (Replicate, {"entries": [], "last_seq": "5"}),
            (Replicate, {"entries": [[1]], "last_seq": 1}),
            (Replicate, {"entries": "none"}),
            (Replicate, {"entries": [], "epoch": False, "sequencer": "catalog-1"}),
            (Replicate, {"entries": [], "epoch": 2, "sequencer": 7}),
            (Elect, {"sequencer": "catalog-1"}),
            (Elect, {"epoch": 2.0, "sequencer": "catalog-1"}),
            (Elect, {"epoch": 2, "sequencer": None}),
            (Elect, {"epoch": 2, "sequencer": "catalog-1", "last_seq": False}),
            (Invalidate, {"keys": "info/1"}),
            (Invalidate, {"keys": [], "seq": True}),
            (Invalidate, {"keys": [], "lagging": [1]}),
            (Invalidate, {"keys": [], "epoch": True, "role": "catalog"}),
            (Invalidate, {"keys": [], "epoch": 2, "role": "frontend"}),
            (Invalidate, {"keys": [], "flush": 1}),
            (Purchase, {"quantity": 0}),
            (Purchase, {"quantity": True}),
            (Purchase, {"idempotency_key": 5}),
            (Purchase, {"idempotency_key": ""}),
        ]
        for message, body in bad:
            with self.assertRaises(BadRequest, msg=f"{message.__name__} {body}"):
                message.parse(body)

    def test_a_name_that_is_not_a_string_in_an_invalidation_is_no_name(self) -> None:
        """As before the protocol module: only an announcement names a sequencer, and only by a string."""
        message = Invalidate.parse({"keys": [], "epoch": 2, "role": "order", "sequencer": 5})
        self.assertIsNone(message.sequencer)
        self.assertEqual(message.epoch, 2)

    def test_paths(self) -> None:
        """Replicas route internal paths below ``/internal``; the builders fill in their parts."""
        self.assertEqual(
            [internal_route(p) for p in (STATUS_PATH, ELECT_PATH, REPLICATE_PATH)],
            ["/status", "/elect", "/replicate"],
        )
        self.assertEqual(log_path(after=4, limit=1), "/internal/log?after=4&limit=1")
        self.assertEqual(fill(BUY_ROUTE, 12), "/catalog/books/12/buy")
        self.assertEqual(fill(ORDER_ROUTE, 3), "/order/orders/3")


# -- the protocol's home, checked over the source -----------------------------------------------


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package below ``package``, by dotted name."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def import_cycles(package: Path) -> list[list[str]]:
    """The package's modules that import each other in a circle (any import, at any level,
    ``TYPE_CHECKING`` ones included): each strongly connected part of the import graph."""
    found = modules(package)
    edges: dict[str, set[str]] = {name: set() for name in found}
    for name, path in found.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            edges[name].update(t for t in targets if t in found and t != name)

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in edges[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        return seen

    reachable = {name: reach(name) for name in found}
    cycles = {
        frozenset({name} | {o for o in reachable[name] if name in reachable[o]})
        for name in found
        if name in reachable[name]
    }
    return sorted(sorted(cycle) for cycle in cycles)


REPLICA_PATHS = ("/internal", "/catalog", "/order")  # what processes call on each other


def protocol_literals(package: Path) -> list[str]:
    """String constants outside ``<package>/protocol`` that spell a path one process calls on
    another, or a Bazar header (docstrings and comments may name them)."""
    out = []
    for name, path in modules(package).items():
        if name.split(".")[1:2] == ["protocol"]:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                text = node.value
                if text.startswith(REPLICA_PATHS) or "X-Bazar-" in text or text == "Idempotency-Key":
                    out.append(f"{name}:{node.lineno}: {text!r}")
    return out


class HomeTests(SynchronousTestCase):
    def test_no_import_cycle(self) -> None:
        """No module of bazar imports, through others, a module that imports it."""
        self.assertEqual(import_cycles(PACKAGE), [])

    def test_paths_and_headers_are_spelled_only_in_the_protocol_module(self) -> None:
        self.assertEqual(protocol_literals(PACKAGE), [])

    def test_the_checks_find_what_they_look_for(self) -> None:
        """A circle and a literal path, in a package made for the purpose, are both found."""
        root = Path(self.mktemp()) / "pkg"
        root.mkdir(parents=True)
        (root / "__init__.py").write_text("")
        (root / "a.py").write_text("from pkg.b import B\nA = 1\n")
        (root / "b.py").write_text('"""Serves /internal/x."""\nimport pkg.a\nB = "/internal/x"\n')
        self.assertEqual(import_cycles(root), [["pkg.a", "pkg.b"]])
        self.assertEqual(protocol_literals(root), ["pkg.b:3: '/internal/x'"])

"""Hostile input, sent raw to the production server in front of each app of an in-memory cluster:
whatever the bytes, never a 5xx, and every refusal in the ``{"error": {"code", "message"}}`` shape.

The property tests generate requests (method, target, headers, body and its framing) with
Hypothesis, derandomized so that every run sends the same ones; BAZAR_FUZZ_EXAMPLES=2000
hunts longer. The explicit tests pin what the property tests once found.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass
from urllib.parse import quote, quote_from_bytes

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from bazar.http_limits import MAX_HEADERS
from bazar.jsonio import JSON, MAX_BODY
from bazar.protocol import SECRET_HEADER
from tests.unit.memcluster import SECRET, MemCluster
from tests.unit.rawhttp import RawConnection, RawReply, error_shape_problem

EXAMPLES = int(os.environ.get("BAZAR_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same requests on every run: a failure is one to reproduce, not a flake
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Raw:
    """A request as bytes on the wire, and whether it is a HEAD (answered with no body)."""

    data: bytes
    head: bool

    def __repr__(self) -> str:  # what Hypothesis shows of a failing example
        return f"Raw({self.data[:400]!r}{'...' if len(self.data) > 400 else ''})"


TCHARS = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
token = st.text(alphabet=TCHARS, min_size=1, max_size=12)

SEGMENTS = [
    *("bazar", "info", "all", "search", "purchase", "update_price", "update_quantity", "orders"),
    *("cluster", "openapi.json", "static", "app.js", "style.css", "index.html", "metrics"),
    *("internal", "invalidate", "status", "replicate", "log", "catalog", "books", "price"),
    *("quantity", "buy", "order", "0", "1", "6", "99", "-1", "1.5", "", ".", ".."),
]
segment = st.one_of(
    st.sampled_from(SEGMENTS),
    st.binary(max_size=12).map(lambda b: quote_from_bytes(b, safe="")),  # %00, %ff, %2f...
    st.text(max_size=8).map(lambda t: quote(t, safe="")),
    st.sampled_from(["%", "%zz", "%2e%2e", "%c0%af", ";", "~", "%20"]),  # broken or tricky escapes
)
# Every route of every app, with a hostile parameter where it takes one ("{}").
ROUTES = [
    *("/bazar/info/{}", "/bazar/info/all", "/bazar/search/{}", "/bazar/purchase/{}", "/bazar/orders"),
    *("/bazar/update_price/{}", "/bazar/update_quantity/{}", "/bazar/orders/{}", "/bazar/cluster"),
    *("/", "/openapi.json", "/static/{}", "/metrics", "/internal/invalidate", "/internal/{}"),
    *("/internal/status", "/internal/log", "/internal/replicate", "/catalog/books", "/catalog/books/{}"),
    *("/catalog/books/{}/buy", "/catalog/books/{}/price", "/catalog/books/{}/quantity", "/catalog/lookup"),
    *("/catalog/search/{}", "/order/orders", "/order/orders/{}", "/order/purchase/{}"),
]
query = st.one_of(
    st.just(""),
    st.binary(max_size=24).map(lambda b: "?" + quote_from_bytes(b, safe="=&")),
    st.lists(st.tuples(st.sampled_from(["after", "limit", "offset", "ids"]), segment), max_size=3).map(
        lambda pairs: "?" + "&".join(f"{k}={v}" for k, v in pairs)
    ),
)
target = st.one_of(
    st.builds(lambda route, arg, q: route.format(arg) + q, st.sampled_from(ROUTES), segment, query),
    st.builds(lambda segs, q: "/" + "/".join(segs) + q, st.lists(segment, max_size=5), query),
    st.sampled_from(["*", "http://a/bazar/info/1", "//", "/bazar//info/1", "/?"]),
).map(str.encode)

HEADER_NAMES = [
    *("Host", SECRET_HEADER, "Idempotency-Key", "Content-Type", "Accept", "Authorization"),
    *("Expect", "Connection", "Cookie", "Range", "If-Modified-Since", "If-Range", "Origin"),
]
header_value = st.one_of(
    st.sampled_from(
        [
            *(SECRET, "Bearer " + SECRET, "100-continue", "close", "keep-alive", "application/json"),
            *("bytes=0-10", "bytes=99999999-", "bytes=5-1", "bytes=0-1,3-4", "bytes=-0", "x=1"),
            *("Thu, 01 Jan 1970 00:00:00 GMT", "127.0.0.1:5000", "[::1]:x", "a" * 201),
        ]
    ).map(str.encode),
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),  # NUL stays
)
header = st.tuples(
    st.one_of(st.sampled_from(HEADER_NAMES), token).filter(
        lambda n: n.lower() not in ("content-length", "transfer-encoding")  # the framing is below
    ),
    header_value,
)

json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
FIELDS = ["quantity", "price", "delta", "keys", "entries", "idempotency_key", "epoch", "after"]
body = st.one_of(
    st.just(b""),
    st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=3).map(lambda d: json.dumps(d).encode()),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.integers(900, 60_000).map(lambda n: b"[" * n),  # nested past the interpreter's stack
    st.sampled_from([MAX_BODY, MAX_BODY + 1]).map(lambda n: b"{}" + b" " * (n - 2)),
)


@st.composite
def requests(draw: st.DrawFn, secret: bool = False) -> Raw:
    method = draw(st.one_of(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]), token))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    lines = [b"%s %s %s" % (method.encode(), draw(target), version)]
    if draw(st.booleans()):
        lines.append(b"Host: 127.0.0.1:5000")
    if secret:
        given = draw(st.one_of(st.none(), st.just(SECRET.encode()), header_value))
        if given is not None:
            lines.append(SECRET_HEADER.encode() + b": " + given)
    lines += [name.encode() + b": " + value for name, value in draw(st.lists(header, max_size=6))]
    padding = draw(st.sampled_from([0] * 8 + [MAX_HEADERS, 2000]))  # to the limit, and far past it
    lines += [b"X-Pad: %d" % i for i in range(padding)]
    content = draw(body)
    framing = draw(st.sampled_from(["length", "chunked"])) if content else "none"
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(content))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        size = draw(st.integers(1, 8192))
        pieces = [content[i : i + size] for i in range(0, len(content), size)]
        content = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return Raw(b"\r\n".join(lines) + b"\r\n\r\n" + content, head=method == "HEAD")


class HostileTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = MemCluster(self)
        self.addCleanup(self.cluster.close)

    def raw(self, to: str, data: bytes, head: bool = False) -> list[RawReply]:
        """The answers of app ``to`` to ``data``, sent on a connection of its own."""
        conn = RawConnection(
            self, self.cluster.dispatch.resources[to], clock=self.cluster.clock, flush=self.cluster.flush
        )
        conn.send(data)
        conn.settle()
        return conn.replies(head)

    def assertAnsweredInJSON(self, to: str, request: Raw) -> None:
        """An answer came; not a 5xx; an error in the JSON error shape (for HEAD, in JSON)."""
        replies = self.raw(to, request.data, request.head)
        self.assertTrue(replies, f"no answer from {to} to {request}")
        for reply in replies:
            self.assertLess(reply.code, 500, (to, request, reply))
            if reply.code >= 400:
                if request.head:
                    self.assertEqual(reply.headers.get("content-type"), JSON, (to, request, reply))
                else:
                    self.assertIsNone(error_shape_problem(reply), (to, request, reply))


class PropertyTests(HostileTestCase):
    @FUZZ
    @given(request=requests())
    def test_the_front_end_answers_anything_in_json(self, request: Raw) -> None:
        self.assertAnsweredInJSON("frontend", request)

    @FUZZ
    @given(
        to=st.sampled_from(["catalog-1", "catalog-3", "order-1", "order-2"]), request=requests(secret=True)
    )
    def test_a_replica_answers_anything_in_json(self, to: str, request: Raw) -> None:
        self.assertAnsweredInJSON(to, request)


class ExplicitTests(HostileTestCase):
    def assertRefused(self, to: str, data: bytes, code: int) -> None:
        replies = self.raw(to, data)
        self.assertEqual([r.code for r in replies], [code], replies)
        self.assertIsNone(error_shape_problem(replies[0]))

    def test_a_host_that_is_not_utf8_is_a_json_400(self) -> None:
        """Klein would decode it, fail, and answer in plain text."""
        for to in ("frontend", "catalog-2"):
            self.assertRefused(to, b"GET /bazar/info/1 HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n", 400)

    def test_a_host_that_cannot_be_encoded_is_a_json_400(self) -> None:
        """A label over 63 characters: werkzeug refuses it while Klein routes, outside Klein's
        error handlers (found by the property tests)."""
        host = b"Host: " + b"a" * 64 + b"\r\n"
        self.assertRefused("frontend", b"GET /bazar/orders HTTP/1.1\r\n" + host + b"\r\n", 400)
        secret = b"X-Bazar-Secret: " + SECRET.encode() + b"\r\n"
        self.assertRefused("catalog-2", b"GET /catalog/books HTTP/1.1\r\n" + host + secret + b"\r\n", 400)

    def test_a_secret_that_is_not_utf8_is_a_json_403(self) -> None:
        head = b"HTTP/1.1\r\nHost: a\r\nX-Bazar-Secret: \xff\xfe\r\n"
        self.assertRefused("catalog-1", b"GET /internal/status " + head + b"\r\n", 403)
        self.assertRefused("order-1", b"GET /order/orders " + head + b"\r\n", 403)
        self.assertRefused(
            "frontend", b"POST /internal/invalidate " + head + b"Content-Length: 2\r\n\r\n{}", 403
        )

    def test_a_null_byte_under_static_is_a_json_404(self) -> None:
        self.assertRefused("frontend", b"GET /static/%00 HTTP/1.1\r\nHost: a\r\n\r\n", 404)

    def test_json_nested_50000_deep_is_a_json_400(self) -> None:
        data = b"[" * 50_000
        for path in (b"POST /bazar/purchase/6", b"PUT /bazar/update_price/6"):
            request = path + b" HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(data) + data
            self.assertRefused("frontend", request, 400)

    def test_a_range_past_the_end_of_a_static_file_is_ignored(self) -> None:
        """Twisted would answer 416 with an empty body typed as JavaScript; the whole file comes,
        and says that no range will be served."""
        for head in (b"Range: bytes=99999999-\r\n", b"Range: bytes=-0\r\n", b"Range: bytes=0-1,3-4\r\n"):
            [reply] = self.raw("frontend", b"GET /static/app.js HTTP/1.1\r\nHost: a\r\n" + head + b"\r\n")
            self.assertEqual((reply.code, reply.headers["accept-ranges"]), (200, "none"), head)
            self.assertEqual(int(reply.headers["content-length"]), len(reply.body))

    def test_a_static_file_is_served(self) -> None:
        """The property tests' driver gets whole files too (so their answers are checked)."""
        [reply] = self.raw("frontend", b"GET /static/app.js HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(reply.code, 200)
        self.assertEqual(int(reply.headers["content-length"]), len(reply.body))
        self.assertGreater(len(reply.body), 0)

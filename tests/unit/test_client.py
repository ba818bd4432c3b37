"""``bazar.client``: how a process builds its one HTTP client."""

from __future__ import annotations

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import URI

from bazar.client import MAX_KNOWN_ENDPOINTS, KnownEndpoints, NoCookies, make_http, make_pool


class KnownEndpointsTests(SynchronousTestCase):
    def test_one_endpoint_per_address(self) -> None:
        endpoints = KnownEndpoints(MemoryReactorClock())
        first = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:5101/catalog/books/1"))
        again = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:5101/internal/status"))
        other = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:5102/catalog/books/1"))
        self.assertIs(first, again)
        self.assertIsNot(first, other)
        self.assertIsInstance(first, HostnameEndpoint)

    def test_https_is_wrapped_in_tls(self) -> None:
        endpoint = KnownEndpoints(MemoryReactorClock()).endpointForURI(URI.fromBytes(b"https://replica:443/"))
        self.assertNotIsInstance(endpoint, HostnameEndpoint)
        self.assertIsInstance(endpoint._wrappedEndpoint, HostnameEndpoint)  # type: ignore[attr-defined]

    def test_remembers_a_bounded_number(self) -> None:
        endpoints = KnownEndpoints(MemoryReactorClock())
        for port in range(MAX_KNOWN_ENDPOINTS + 10):
            endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:%d/" % (1000 + port)))
        self.assertEqual(len(endpoints._endpoints), MAX_KNOWN_ENDPOINTS)


class HTTPClientTests(SynchronousTestCase):
    def test_no_cookie_jar_keeps_nothing(self) -> None:
        reactor = MemoryReactorClock()
        pool = make_pool(reactor)
        http = make_http(reactor, pool)
        self.assertIsInstance(http._cookiejar, NoCookies)
        self.assertEqual(list(http._cookiejar), [])

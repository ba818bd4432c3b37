"""``bazar.shared_port``: several processes' listening sockets on one public port."""

from __future__ import annotations

import socket

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from bazar.shared_port import SharedPortService, shared_address, shared_socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SharedPortTests(SynchronousTestCase):
    def test_two_sockets_share_a_port_and_a_plain_one_cannot(self) -> None:
        endpoint = f"tcp:port={free_port()}:interface=127.0.0.1"
        first = shared_socket(endpoint)
        self.addCleanup(first.close)
        second = shared_socket(endpoint)  # as the next front end's would
        self.addCleanup(second.close)
        self.assertEqual(first.getsockname(), second.getsockname())
        plain = socket.socket()
        self.addCleanup(plain.close)
        self.assertRaises(OSError, plain.bind, first.getsockname())

    def test_the_service_hands_the_socket_to_the_reactor(self) -> None:
        reactor = MemoryReactor()
        port = free_port()
        service = SharedPortService(f"tcp:port={port}:interface=127.0.0.1", Site(Resource()), reactor)
        service.startService()
        [(_, family, factory)] = reactor.adoptedPorts
        self.assertEqual((family, factory), (socket.AF_INET, service.factory))
        self.successResultOf(service.stopService())

    def test_addresses(self) -> None:
        self.assertEqual(
            shared_address("tcp:port=5000:interface=127.0.0.1"), (socket.AF_INET, "127.0.0.1", 5000, 50)
        )
        six = shared_address("tcp:port=5000:interface=\\:\\:1")
        self.assertEqual(six[:3], (socket.AF_INET6, "::1", 5000))
        self.assertRaises(ValueError, shared_address, "unix:/tmp/x")

"""One public port served by several front-end processes on one host.

Each front end opens its own listening socket on the port with ``SO_REUSEPORT`` and hands it
to the reactor (``adoptStreamPort``); the kernel spreads new connections over every socket
bound there. So a client needs no change (``127.0.0.1:5000``), N processes use N cores, and a
front end that stops or restarts takes only its own socket with it: the port stays open.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import _parseServer
from twisted.internet.interfaces import IListeningPort, IProtocolFactory


def shared_address(endpoint: str) -> tuple[socket.AddressFamily, str, int, int]:
    """(family, interface, port, backlog) of a ``tcp:`` server endpoint string (an IPv6
    interface, escaped, makes it IPv6)."""
    kind, args, kwargs = _parseServer(endpoint, None)
    if kind != "TCP" or not args[0]:
        raise ValueError(f"{endpoint!r} is not a TCP endpoint with a port")
    interface = str(kwargs.get("interface", ""))
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    return family, interface, int(args[0]), int(kwargs.get("backlog", 50))


def shared_socket(endpoint: str) -> socket.socket:
    """A listening, non-blocking socket on ``endpoint`` that others may bind too (SO_REUSEPORT)."""
    family, interface, port, backlog = shared_address(endpoint)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((interface, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class SharedPortService(Service):
    """Serves ``factory`` on the shared port ``endpoint`` while running."""

    def __init__(self, endpoint: str, factory: IProtocolFactory, reactor: Any) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.reactor = reactor
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        sock = shared_socket(self.endpoint)
        try:
            self.port = self.reactor.adoptStreamPort(sock.fileno(), sock.family, self.factory)
        finally:
            sock.close()  # the reactor holds its own duplicate

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        port, self.port = self.port, None
        return maybeDeferred(port.stopListening) if port is not None else maybeDeferred(lambda: None)

"""The calling side of the simulation: a process's ``ReplicaClient`` and an outside client's
request, each call a message on the simulated ``Network`` to the callee's ``Endpoint``."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred

from bazar.channel import Channel
from bazar.client import ReplicaClient
from bazar.config import Replica
from bazar.sim.network import Host, Network, Serve
from bazar.sim.serving import Endpoint, PublicAnswer


class SimClient(ReplicaClient):
    """A process's ``ReplicaClient``: every call a message on the simulated ``Network``, over
    the channel where production's client would use it (``Channel.carries``), else HTTP."""

    def __init__(self, network: Network, host: Host, secret: str, channel: bool) -> None:
        super().__init__(None, secret, host.clock)  # type: ignore[arg-type]
        self.network = network
        self.host = host
        self._carrier = Channel(None, host.clock) if channel else None  # type: ignore[arg-type]  # never connects

    def request(
        self, method: str, replica: Replica, path: str, body: Any = None, timeout: float | None = None
    ) -> Deferred[Any]:
        data = json.dumps(body).encode() if body is not None else None
        deadline = self.timeout if timeout is None else timeout
        carrier = self._carrier
        serve: Serve
        if carrier is not None and carrier.carries(replica, method, path, data or b""):
            kind = "channel"

            def serve(endpoint: Endpoint) -> Deferred[Any]:
                return endpoint.serve_channel(method, path, data or b"")

        else:
            kind = "http"
            headers = self.http_headers(data).items()

            def serve(endpoint: Endpoint) -> Deferred[Any]:
                return endpoint.serve_http(method, path, headers, data)

        return self.network.call(self.host, replica.name, kind, serve, deadline)


def public_call(
    network: Network,
    caller: Host,
    target: str,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    timeout: float,
) -> Deferred[PublicAnswer]:
    """An outside client's HTTP request to ``target`` (the front end)."""
    data = json.dumps(body).encode() if body is not None else None

    def serve(endpoint: Endpoint) -> Deferred[Any]:
        return endpoint.serve_public(method, path, data, headers)

    return network.call(caller, target, "http", serve, timeout)

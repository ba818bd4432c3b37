"""``/bazar/cluster``: the cluster at a glance, as the front end sees it.

Every replica's name, role, URL, health and data digest (equal digests mean equal data),
asked of each replica at once, with the front end's cache figures; and every front end's
cache figures and leases, this one's and those it asks of the others at the same time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.python.failure import Failure

from bazar.client import ReplicaResponse
from bazar.config import Replica
from bazar.frontend.replicas import Replicas
from bazar.health import STATUS_FAILED
from bazar.lru import LRUCache
from bazar.protocol import FRONTEND_STATUS_PATH, STATUS_PATH

STATUS_TIMEOUT = 2.0  # seconds: /bazar/cluster does not wait longer for a replica that hangs


@inlineCallbacks
def cluster_view(
    replicas: Replicas,
    cache: LRUCache[str, ReplicaResponse],
    me: dict[str, Any] | None = None,
    peers: Sequence[Replica] = (),
) -> Any:
    """The page's JSON object: ``{"replicas": [...], "cache": {...}, "frontends": [...]}``
    (``me``: this front end's own entry; ``peers``: the other front ends, asked)."""
    others = DeferredList([_frontend(replicas, peer) for peer in peers])
    results = yield DeferredList(
        [
            replicas.call("GET", r, STATUS_PATH, timeout=STATUS_TIMEOUT).addCallback(
                lambda r: r.raise_for_error().json()
            )
            for r in replicas.all
        ],
        consumeErrors=True,
    )
    out = []
    for replica, (ok, result) in zip(replicas.all, results, strict=True):
        why = replicas.health.why_unhealthy(replica)
        if not ok and why is None:  # it answered its status with an error
            why = STATUS_FAILED
        # The same fields for every replica: null where it could not be asked.
        entry: dict[str, Any] = {
            "name": replica.name,
            "role": replica.role,
            "url": replica.url,
            "healthy": why is None,
            "why_unhealthy": why,
            "error": None if ok else result.getErrorMessage(),
            "last_seq": result["last_seq"] if ok else None,
            "digest": result["digest"] if ok else None,
            "sequencer": result["sequencer"] if ok else None,
            "epoch": result.get("epoch", 1) if ok else None,
        }
        out.append(entry)
    frontends = [me] if me is not None else []
    frontends += [result for _, result in (yield others)]
    return {"replicas": out, "cache": cache_figures(cache), "frontends": frontends}


def _frontend(replicas: Replicas, frontend: Replica) -> Deferred[dict[str, Any]]:
    """Another front end's entry: what it says of itself, or why it could not say."""
    d = replicas.client.call("GET", frontend, FRONTEND_STATUS_PATH, timeout=STATUS_TIMEOUT)

    def failed(failure: Failure) -> dict[str, Any]:
        return {"name": frontend.name, "healthy": False, "error": failure.getErrorMessage()}

    return d.addErrback(failed)


def cache_figures(cache: LRUCache[str, ReplicaResponse]) -> dict[str, Any]:
    stats = cache.stats
    return {
        "capacity": cache.capacity,
        "size": len(cache),
        "keys": cache.keys(),
        "hits": stats.hits,
        "misses": stats.misses,
        "evictions": stats.evictions,
        "invalidations": stats.invalidations,
    }

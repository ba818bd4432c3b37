"""The front end's internal side: the sequencers' invalidation pushes and its metrics.

``/internal/invalidate`` (over HTTP or the channel) is how a sequencer, before it
acknowledges a write, has this front end drop the cache keys the write changed and stop
reading from followers that lag; the metrics are the cache's figures and which replicas
it reads from.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.core import Metric
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from bazar.channel import Handler
from bazar.client import ReplicaResponse
from bazar.frontend.replicas import Replicas
from bazar.jsonio import Reply, json_reply, parse_json, read_body, respond_reply
from bazar.leases import Grant, Leases
from bazar.metrics import Metrics, counter, gauge
from bazar.protocol import INVALIDATE_PATH
from bazar.protocol.messages import Invalidate
from bazar.readthrough import ReadThroughCache
from bazar.secret import check_secret

log = Logger()


class Internal:
    """The internal endpoints, over the replicas' health and the cache they change."""

    def __init__(
        self,
        secret: str,
        replicas: Replicas,
        cache: ReadThroughCache[str, ReplicaResponse],
        metrics: Metrics,
        leases: Leases | None = None,
    ) -> None:
        self.secret = secret
        self.replicas = replicas
        self.cache = cache
        self.leases = leases if leases is not None else Leases(replicas.client.clock.seconds)
        metrics.collect_with(self._collect)
        # A new epoch: the lease from the replaced sequencer no longer counts.
        previous = replicas.health.on_new_epoch

        def new_epoch(role: str, before: int, epoch: int) -> None:
            self.leases.holders[role].lapse()
            previous(role, before, epoch)

        replicas.health.on_new_epoch = new_epoch

    def invalidate(self, request: IRequest) -> bytes | Deferred[bytes]:
        """``INVALIDATE_PATH`` over HTTP: for callers with the cluster secret."""
        check_secret(request, self.secret)
        return respond_reply(request, self.invalidate_call(read_body(request)))

    def channel_handlers(self) -> dict[str, Handler]:
        """The carried routes the front end serves over the channel (the same handlers as HTTP)."""
        return {INVALIDATE_PATH: self.invalidate_call}

    def invalidate_call(self, raw: bytes) -> Reply:
        """Called by a sequencer before it acknowledges a write: drop these cache keys, stop
        reading from these ``lagging`` followers; or, later, read from ``caught_up`` ones again.
        (Over HTTP or the channel: ``INVALIDATE_PATH``.)"""
        message = Invalidate.parse(parse_json(raw))  # all checked first
        health = self.replicas.health
        seq = message.seq
        if message.role is not None and message.epoch is not None:
            current = health.current_epoch(message.role, message.epoch)
            if message.sequencer is not None:
                health.report_sequencer(message.role, message.epoch, message.sequencer)
                if current:  # a sequencer just elected has every write (``Health.current_epoch``)
                    health.report_lagging(message.sequencer, False, seq, pushed=True)
            if message.lease is not None:
                if not current:  # a replaced sequencer's grant: neither flush nor trust
                    return json_reply({"invalidated": [], "lease": False})
                self._granted(message.role, message.epoch, message.lease, seq)
        if message.flush and message.role == "catalog":
            self._flush(seq, "a push (lease revoked)")  # before ``keys``: they raise the floor
        for name in message.lagging or ():
            health.report_lagging(name, True, seq, pushed=True)
        for name in message.caught_up or ():
            health.report_lagging(name, False, seq, pushed=True)
        for key in message.keys:
            self.cache.invalidate(key, seq)
        return json_reply({"invalidated": message.keys})

    def _granted(self, role: str, epoch: int, lease: dict[str, Any], seq: int) -> None:
        """A grant: a flush drops every cached answer (it may show a write this front end was
        not told of) and stores none older than ``seq``; then the lease counts."""
        grant = Grant(lease["lessor"], lease["grant"], lease["based_on"], lease["flush"])
        if grant.flush and role == "catalog":
            self._flush(seq, "a grant")
        self.leases.holders[role].received(grant, epoch, lease["sequencer"])

    def _flush(self, seq: int, why: str) -> None:
        """Drop every cached answer (it may show a write this front end was not told of) and
        store none older than write ``seq``."""
        dropped = self.cache.invalidate_all()
        self.cache.floor = max(self.cache.floor, seq)
        log.info("{why} flushed at write {seq}: dropped {n} cached answers", why=why, seq=seq, n=dropped)

    def status(self, name: str) -> dict[str, Any]:
        """This front end at a glance: its cache figures and leases (``/bazar/cluster``)."""
        lru = self.cache.lru
        stats = lru.stats
        return {
            "name": name,
            "healthy": True,
            "cache": {"entries": len(lru), "hits": stats.hits, "misses": stats.misses},
            "leases": self.leases.state(),
        }

    def _collect(self) -> list[Metric]:
        stats = self.cache.lru.stats
        health = self.replicas.health
        return [
            counter("bazar_cache_hits", "Reads answered from the cache", stats.hits),
            counter("bazar_cache_misses", "Reads the cache could not answer", stats.misses),
            counter("bazar_cache_evictions", "Entries dropped to make room", stats.evictions),
            counter(
                "bazar_cache_invalidations",
                "Entries dropped because a write changed them",
                stats.invalidations,
            ),
            gauge("bazar_cache_entries", "Entries in the cache", [], [([], len(self.cache.lru))]),
            gauge(
                "bazar_cache_lease_valid",
                "1 while this front end holds a cache lease from the role's sequencer (bazar.leases)",
                ["role"],
                [([role], float(holder.valid())) for role, holder in self.leases.holders.items()],
            ),
            gauge(
                "bazar_replica_up",
                "1 if the front end reads from the replica (it answers, is ready and not lagging)",
                ["replica", "role"],
                [([r.name, r.role], float(health.readable(r))) for r in self.replicas.all],
            ),
        ]

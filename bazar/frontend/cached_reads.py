"""The front end's reads through its cache: info, a page of a listing, a search.

A read is answered from the LRU cache, or fetched from the next catalog replica in turn
(``bazar.frontend.replicas``) and cached; misses for several books in one turn of the
reactor are fetched in one lookup (``bazar.batching``). Each route's read is remembered by
request URI (``UriKeys``), so the lean path before Klein (``bazar.frontend.fastpath``)
answers the next GET of that URI from the cache, or through the same read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from bazar.batching import Batcher
from bazar.client import ReplicaResponse
from bazar.config import Config
from bazar.errors import error_body
from bazar.frontend.answers import relay, send_hit
from bazar.frontend.fastpath import ReadShortcut, UriKeys
from bazar.frontend.replicas import Replicas
from bazar.invalidation import PageKey
from bazar.jsonio import json_bytes
from bazar.lru import LRUCache
from bazar.paging import Page, public_page_headers
from bazar.protocol import CACHE_HEADER, LOOKUP_PATH
from bazar.readthrough import ReadThroughCache

log = Logger()


def _cacheable(response: ReplicaResponse) -> bool:
    return response.code == 200


def split_lookup(response: ReplicaResponse, book_ids: list[int]) -> dict[int, ReplicaResponse]:
    """A lookup's answer as the answers each book's own read would have had: same body, same
    replica, sequence number and epoch. An error for the whole lookup is every book's."""
    if response.code != 200:
        return {book_id: response for book_id in book_ids}
    answer = response.json()

    def one(code: int, body: bytes) -> ReplicaResponse:
        return ReplicaResponse(
            code, body, response.replica, {}, response.seq, response.sequencer, response.epoch
        )

    each = {book["id"]: one(200, json_bytes(book)) for book in answer["books"]}
    for error in answer["errors"]:
        each[error["id"]] = one(error["code"], error_body(error["code"], error["message"]))
    return each


class CachedReads:
    """The cache, the URIs it answers, and the reads that fill it."""

    def __init__(
        self,
        config: Config,
        replicas: Replicas,
        trusted: Callable[[], bool] = lambda: True,
        frontend: str | None = None,
    ) -> None:
        """``trusted()``: whether the cache may answer now (``bazar.leases``)."""
        self.replicas = replicas
        self.trusted = trusted
        self.frontend = frontend
        self.cache: ReadThroughCache[str, ReplicaResponse] = ReadThroughCache(
            LRUCache(config.cache_size),
            cacheable=_cacheable,
            version=lambda response: response.seq,
            trusted=trusted,
        )
        self.uri_keys = UriKeys(max(64, 4 * config.cache_size))
        # Misses for different books in one turn of the reactor share one read.
        self.lookups: Batcher[int, ReplicaResponse] = Batcher(self._look_up, replicas.client.clock)
        replicas.health.on_new_epoch = self._new_epoch

    def _new_epoch(self, role: str, previous: int, epoch: int) -> None:
        """Another catalog replica took over sequencing: forget every cached answer, which
        may show a write the new sequencer never had (see ``bazar.readthrough``)."""
        if role != "catalog" or not previous:
            return  # the first epoch heard of: every cached answer came from a replica in it
        dropped = self.cache.invalidate_all()
        log.info(
            "catalog epoch {epoch} (was {previous}): dropped {dropped} cached answers",
            epoch=epoch,
            previous=previous,
            dropped=dropped,
        )

    def shortcut(self, inner: IResource) -> IResource:
        """``inner`` behind the lean path for reads of known URIs."""
        stamp = self.frontend.encode() if self.frontend is not None else None
        return ReadShortcut(inner, self.cache.hit, self.uri_keys, stamp)

    def book(self, request: IRequest, key: str, book: int) -> Any:
        """One book, read with the other misses of this turn of the reactor."""
        return self.read(request, key, lambda: self.lookups.load(book))

    def page(self, request: IRequest, key: PageKey, page: Page, path: str, public_path: str) -> Any:
        """``read`` for one page of a listing: the answer carries its paging headers (total,
        Link to the next page), cached with it and sent on hits and misses alike."""

        def public(response: ReplicaResponse) -> ReplicaResponse:
            if response.code != 200:
                return replace(response, headers={})
            return replace(response, headers=public_page_headers(response.headers, public_path, page))

        path = f"{path}?{page.query()}"
        catalogs = self.replicas.catalogs
        return self.read(
            request, key, lambda: self.replicas.read(catalogs, path, self._shown).addCallback(public)
        )

    def read(self, request: IRequest, key: str, fetch: Callable[[], Deferred[ReplicaResponse]]) -> Any:
        """Answer from the cache, or through ``fetch`` (then cached): a read at the next
        catalog replica, with only the headers the client should see."""
        # The lean path answers this URI next time, from the cache or through the same read.
        self.uri_keys.learn(request.uri, key, lambda again: self._read_through(again, key, fetch))
        return self._read_through(request, key, fetch)

    def _read_through(
        self, request: IRequest, key: str, fetch: Callable[[], Deferred[ReplicaResponse]]
    ) -> Any:
        cached, pending = self.cache.get(key, fetch)
        if pending is None:
            assert cached is not None
            return send_hit(request, cached)
        request.setHeader(CACHE_HEADER, "miss")
        return pending.addCallback(relay, request)

    def _look_up(self, book_ids: list[int]) -> Deferred[dict[int, ReplicaResponse]]:
        """Every book a batch of misses wants, in one read (see ``bazar.batching``)."""
        path = f"{LOOKUP_PATH}?ids={','.join(map(str, book_ids))}"
        return self.replicas.read(self.replicas.catalogs, path, self._shown).addCallback(
            split_lookup, book_ids
        )

    def _shown(self) -> int:
        """The newest catalog write any answer has shown: no read may go behind it."""
        return self.cache.observed

"""Which front-end cache entries hold a book, and how a catalog write tells the front end to drop them.

The key scheme lives here alone: the front end caches under these keys, and the catalog
sequencer names the same keys when it pushes an invalidation.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from bazar.client import ReplicaClient
from bazar.config import Replica

ALL_BOOKS_KEY = "info/all"
INVALIDATE_PATH = "/internal/invalidate"


def info_key(book_id: int) -> str:
    return f"info/{book_id}"


def search_key(topic: str) -> str:
    return f"search/{topic}"


def keys_for_book(book: dict[str, Any]) -> list[str]:
    """Every cache key whose response includes ``book``."""
    return [info_key(book["id"]), search_key(book["topic"]), ALL_BOOKS_KEY]


class FrontendInvalidator:
    """Pushes invalidations to the front end; the write is acknowledged only after this returns."""

    def __init__(self, client: ReplicaClient, frontend: Replica) -> None:
        self.client = client
        self.frontend = frontend

    def invalidate(self, book: dict[str, Any]) -> Deferred[Any]:
        return self.client.call("POST", self.frontend, INVALIDATE_PATH, {"keys": keys_for_book(book)})

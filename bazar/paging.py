"""Pages of a listing (every book, a topic's books): what a client asks for and what it is told.

A listing of a million books cannot be one answer, so ``/bazar/info/all`` and
``/bazar/search/<topic>`` (and the catalog endpoints behind them) answer one page, in id
order, and stay a plain JSON array. Two ways to say where a page starts, combinable:

* ``offset=n`` skips n books. Simple, but the database steps over every skipped row, so
  a deep offset costs O(offset).
* ``after=<id>`` (a cursor) starts after the book with that id. It is a seek on the
  primary key or on the (topic, id) index, so every page costs the same however deep.

The answer says what is left in headers: ``X-Bazar-Total`` (how many books the whole
listing has, kept as counters, not counted per request) and, when there is more,
``Link: <...?limit=n&after=<last id>>; rel="next"`` -- the next page always by cursor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from twisted.web.iweb import IRequest

from bazar.errors import BadRequest
from bazar.protocol import NEXT_AFTER_HEADER, TOTAL_HEADER

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_DIGITS = 18  # like ids: anything longer is refused rather than handed to SQLite's int64

LINK_HEADER = "Link"


@dataclass(frozen=True)
class Page:
    """Which slice of a listing: up to ``limit`` books with id > ``after``, skipping ``offset``."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0
    after: int | None = None

    def query(self) -> str:
        """The canonical query string: equal pages, equal strings (and so equal cache keys)."""
        text = f"limit={self.limit}&offset={self.offset}"
        if self.after is not None:
            text += f"&after={self.after}"
        return text

    def next_query(self, last_id: int) -> str:
        """The page after this one, by cursor: the same size, after its last book."""
        return f"limit={self.limit}&after={last_id}"


def _integer(args: dict[bytes, list[bytes]], name: str, minimum: int, maximum: int | None) -> int | None:
    values = args.get(name.encode())
    if values is None:
        return None
    if len(values) != 1:
        raise BadRequest(f"give {name!r} at most once")
    text = values[0]
    if not text.isdigit() or len(text) > MAX_DIGITS:
        raise BadRequest(f"{name!r} must be a non-negative integer, not {text.decode(errors='replace')!r}")
    value = int(text)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise BadRequest(f"{name!r} must be {bound}, not {value}")
    return value


def parse_page(request: IRequest) -> Page:
    """The page a request asks for (``limit``, ``offset``, ``after``), or a 400 that says what is wrong."""
    args: dict[bytes, list[bytes]] = request.args or {}
    limit = _integer(args, "limit", 1, MAX_LIMIT)
    offset = _integer(args, "offset", 0, None)
    after = _integer(args, "after", 0, None)
    return Page(
        limit=DEFAULT_LIMIT if limit is None else limit,
        offset=0 if offset is None else offset,
        after=after,
    )


def link_next(path: str, page: Page, last_id: int) -> str:
    """A ``Link`` header value for the page after ``page`` of the listing at ``path`` (already quoted)."""
    return f'<{path}?{page.next_query(last_id)}>; rel="next"'


def public_page_headers(kept: Mapping[str, str], path: str, page: Page) -> dict[str, str]:
    """What the front end sends with a page a catalog replica answered: the total as is, and
    instead of the replica's next-page hint a Link to the next page of the front end's own
    listing at ``path``."""
    headers = {}
    if TOTAL_HEADER in kept:
        headers[TOTAL_HEADER] = kept[TOTAL_HEADER]
    if NEXT_AFTER_HEADER in kept:
        headers[LINK_HEADER] = link_next(path, page, int(kept[NEXT_AFTER_HEADER]))
    return headers


def search_path(prefix: str, topic: str) -> str:
    """``prefix`` followed by the topic as one path segment (a ``/`` in it as %2F)."""
    return f"{prefix}/{quote(topic, safe='')}"

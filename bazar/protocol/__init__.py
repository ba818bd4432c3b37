"""The wire protocol between Bazar's processes: every internal path and every header name.

Why one place: the front end, the replicas and the internal channel (``bazar.channel``)
must agree on these names, and when each module defined the ones it served, the modules
that called them had to import each other (an import circle through ``bazar.client``).
This module imports nothing, so anything may import it. The shapes of the internal
messages, checked the way public request bodies are, are in ``bazar.protocol.messages``.
"""

from __future__ import annotations

# -- internal paths: served by every replica (under INTERNAL_PREFIX) and by the front end --

INTERNAL_PREFIX = "/internal"
# A replica's state: its sequence number, sequencer, epoch, readiness, followers, digest.
STATUS_PATH = "/internal/status"
# A candidate asks a replica to join its epoch (``messages.Elect``).
ELECT_PATH = "/internal/elect"
# A replica's log after a sequence number (``?after=&limit=``).
LOG_PATH = "/internal/log"
# The sequencer ships its log to a follower (``messages.Replicate``).
REPLICATE_PATH = "/internal/replicate"
# Served by the front end: a sequencer's cache keys, lagging and caught-up followers, and
# its epoch (``messages.Invalidate``).
INVALIDATE_PATH = "/internal/invalidate"

# -- what the front end and the order replicas call on the replicas -------------------------
# (A ``_ROUTE`` is in Klein's syntax; ``fill(route, value)`` fills in its one part.)

# One page of every book, or of a topic's books (``/<topic>``); see ``bazar.paging``.
BOOKS_PATH = "/catalog/books"
SEARCH_PATH = "/catalog/search"
SEARCH_ROUTE = "/catalog/search/<path:topic>"
BOOK_ROUTE = "/catalog/books/<book_id>"
# Several books in one read, from one snapshot (``?ids=3,1,4``; see ``bazar.batching``).
LOOKUP_PATH = "/catalog/lookup"
# The catalog's keyed takes after a sequence number (see ``bazar.order.orphans``).
TAKES_PATH = "/catalog/takes"
# The order replica takes a purchase's stock at the catalog.
BUY_ROUTE = "/catalog/books/<book_id>/buy"
# The order sequencer takes the stock of several purchases in one call (``messages.Buys``).
BUYS_PATH = "/catalog/buys"
PRICE_ROUTE = "/catalog/books/<book_id>/price"
QUANTITY_ROUTE = "/catalog/books/<book_id>/quantity"
PURCHASE_ROUTE = "/order/purchase/<book_id>"
ORDERS_PATH = "/order/orders"
ORDER_ROUTE = "/order/orders/<order_id>"

# -- headers ----------------------------------------------------------------------------------

# On every internal call: the cluster secret (or as a bearer token, at ``/metrics``).
SECRET_HEADER = "X-Bazar-Secret"
# On every replica answer: which replica answered (the front end passes it on to clients).
REPLICA_HEADER = "X-Bazar-Replica"
# On every replica answer: the last sequence number the replica had applied when the request
# arrived, so what it read holds at least every write up to that one (see bazar.readthrough).
SEQ_HEADER = "X-Bazar-Seq"
# On every replica answer: the replica that sequences its role's writes, as far as it knows,
# so a caller can send the next write straight there rather than through a forwarder.
SEQUENCER_HEADER = "X-Bazar-Sequencer"
# On every replica answer: the epoch the replica is in, so a caller that knows of a newer one
# uses nothing a replaced sequencer (or a follower that has not heard of the takeover) read.
EPOCH_HEADER = "X-Bazar-Epoch"
# A catalog replica names the last id of a page that has a successor; the front end turns it
# into its own Link header.
NEXT_AFTER_HEADER = "X-Bazar-Next-After"
# Public: how many books a whole listing has (a replica's, passed on by the front end).
TOTAL_HEADER = "X-Bazar-Total"
# Public: which front end answered (its name in the config), on every answer.
FRONTEND_HEADER = "X-Bazar-Frontend"
# Served by every front end: its cache figures and leases, for another front end's
# ``/bazar/cluster``.
FRONTEND_STATUS_PATH = "/internal/frontend"
# Public: whether the front end answered a read from its cache (``hit``) or not (``miss``).
CACHE_HEADER = "X-Bazar-Cache"
# Public, and passed on to the order replicas in the body: a purchase's retry-safe key.
IDEMPOTENCY_HEADER = "Idempotency-Key"


def internal_route(path: str) -> str:
    """An internal path as a replica routes it, below the ``/internal`` branch."""
    return path.removeprefix(INTERNAL_PREFIX)


def log_path(after: int, limit: int) -> str:
    return f"{LOG_PATH}?after={after}&limit={limit}"


def fill(route: str, value: int) -> str:
    """``route`` with its one ``<...>`` part filled in: ``fill(BUY_ROUTE, 3)`` is ``/catalog/books/3/buy``."""
    start, end = route.index("<"), route.index(">")
    return f"{route[:start]}{value}{route[end + 1 :]}"

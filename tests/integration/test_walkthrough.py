"""The report's walkthrough, on a real cluster: 1 front end, 3 catalog and 3 order replicas.

The tests share this module's cluster, so each one first puts the front end's cache in the
state it needs: reading five search keys of topics no book has fills the whole cache (size
5) with them, so every other key is a miss afterwards.
"""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted

from bazar.launch import CATALOGS, ORDERS
from tests.integration.api import Api, Reply, assert_replicas_agree, recorded

pytestmark = pytest.mark.integration

CACHE = "X-Bazar-Cache"
REPLICA = "X-Bazar-Replica"
CACHE_SIZE = 5

# The seven books of the report: (id, title, topic).
BOOKS = (
    (0, "How to get a good grade in DOS in 40 minutes a day.", "distributed systems"),
    (1, "RPCs for Noobs.", "distributed systems"),
    (2, "Xen and the Art of Surviving Undergraduate School.", "undergraduate school"),
    (3, "Cooking for the Impatient Undergrad.", "undergraduate school"),
    (4, "How to finish Project 3 on time", "new"),
    (5, "Why theory classes are so hard", "new"),
    (6, "Living in the Pioneer Valley", "new"),
)

_flushes = itertools.count()


async def fill_cache_with_misses(api: Api) -> tuple[list[str], list[Reply]]:
    """Read CACHE_SIZE never-seen search keys: afterwards the cache holds exactly those, in order."""
    n = next(_flushes)
    topics = [f"no-such-topic-{n}-{i}" for i in range(CACHE_SIZE)]
    replies = []
    for topic in topics:
        reply = await api.get(f"/bazar/search/{topic}")
        assert reply.code == 200, reply
        assert reply.body == []
        assert reply.header(CACHE) == "miss", reply
        replies.append(reply)
    keys = [f"search/{t}?limit=100&offset=0" for t in topics]  # the first page of each search
    assert (await api.status())["cache"]["keys"] == keys
    return keys, replies


def replica_of(reply: Reply) -> str:
    """The catalog replica that served a miss."""
    name = reply.header(REPLICA)
    assert name in CATALOGS, reply
    return name


def assert_round_robin(served_by: list[str]) -> None:
    """Each consecutive miss went to the catalog replica after the previous one, cyclically."""
    assert all(name in CATALOGS for name in served_by), served_by
    for previous, current in itertools.pairwise(served_by):
        expected = CATALOGS[(CATALOGS.index(previous) + 1) % len(CATALOGS)]
        assert current == expected, f"misses were served by {served_by}: {current} after {previous}"


def book_of(books: list[dict[str, Any]], book_id: int) -> dict[str, Any]:
    (book,) = [b for b in books if b["id"] == book_id]
    return book


@pytest_twisted.ensureDeferred
async def test_the_seven_books(api: Api) -> None:
    reply = await api.get("/bazar/info/all")
    assert reply.code == 200, reply
    assert [(b["id"], b["title"], b["topic"]) for b in reply.body] == list(BOOKS)
    for book in reply.body:
        assert isinstance(book["price"], float) and book["price"] >= 0
        assert isinstance(book["quantity"], int) and book["quantity"] >= 0

    reply = await api.get(f"/bazar/search/{quote('distributed systems')}")
    assert reply.code == 200, reply
    assert [b["id"] for b in reply.body] == [0, 1]

    missing = await api.get("/bazar/info/7")
    assert missing.code == 404, missing
    assert missing.body["error"]["code"] == 404


@pytest_twisted.ensureDeferred
async def test_info_is_a_miss_then_a_hit(api: Api) -> None:
    await fill_cache_with_misses(api)

    first = await api.info(0)
    assert first.header(CACHE) == "miss"
    assert first.header(REPLICA) in CATALOGS
    assert (first.body["id"], first.body["title"]) == BOOKS[0][:2]

    second = await api.info(0)
    assert second.header(CACHE) == "hit"
    assert second.body == first.body
    assert (await api.status())["cache"]["keys"][-1] == "info/0"


@pytest_twisted.ensureDeferred
async def test_misses_go_round_robin_over_the_catalog_replicas(api: Api) -> None:
    _, flush = await fill_cache_with_misses(api)
    served_by = [replica_of(r) for r in flush]

    books = []
    for book in (0, 1, 2):
        reply = await api.info(book)
        assert reply.header(CACHE) == "miss", reply
        books.append(replica_of(reply))
    served_by += books

    assert sorted(books) == list(CATALOGS), books  # three misses in a row: each replica once
    assert_round_robin(served_by)  # ... and in turn, continuing where the previous misses left off


@pytest_twisted.ensureDeferred
async def test_update_price_reaches_every_reader_and_replica(api: Api) -> None:
    old = (await api.info(1)).body["price"]
    new = round(old + 7.25, 2)
    topic_path = f"/bazar/search/{quote('distributed systems')}"
    # Have every cache entry that holds book 1 cached before the write.
    for path in ("/bazar/info/1", "/bazar/info/all", topic_path):
        await api.get(path)
        assert (await api.get(path)).header(CACHE) == "hit"

    updated = await api.set_price(1, new)
    assert updated["id"] == 1 and updated["price"] == new

    for attempt in range(4):  # the first read refills the cache, the others hit it
        reply = await api.info(1)
        assert reply.body["price"] == new, (attempt, reply)
        assert reply.header(CACHE) == ("miss" if attempt == 0 else "hit"), (attempt, reply)
    assert book_of((await api.get("/bazar/info/all")).body, 1)["price"] == new
    assert book_of((await api.get(topic_path)).body, 1)["price"] == new

    direct = await api.on_each(CATALOGS, "/catalog/books/1")
    assert {name: book["price"] for name, book in direct.items()} == dict.fromkeys(CATALOGS, new)
    assert_replicas_agree(await api.status())


@pytest_twisted.ensureDeferred
async def test_purchase_reaches_every_replica(api: Api) -> None:
    book = 2
    stock_before = await api.on_each(CATALOGS, f"/catalog/books/{book}")
    quantities = {b["quantity"] for b in stock_before.values()}
    assert len(quantities) == 1, stock_before
    (quantity,) = quantities
    assert quantity >= 1
    orders_before = await api.on_each(ORDERS, "/order/orders")
    await api.info(book)  # cached: the purchase must drop it

    reply = await api.post(f"/bazar/purchase/{book}")
    assert reply.code == 200, reply
    order = reply.body
    assert order["book_id"] == book and order["quantity"] == 1
    assert order["title"] == BOOKS[book][1]
    assert order["title"] in order["message"]

    stock_after = await api.on_each(CATALOGS, f"/catalog/books/{book}")
    assert {name: b["quantity"] for name, b in stock_after.items()} == dict.fromkeys(CATALOGS, quantity - 1)
    assert (await api.info(book)).body["quantity"] == quantity - 1

    recorded_order = recorded(order)
    orders_after = await api.on_each(ORDERS, "/order/orders")
    for name in ORDERS:
        assert orders_after[name] == [*orders_before[name], recorded_order], name
    looked_up = await api.get(f"/bazar/orders/{order['order_id']}")
    assert looked_up.code == 200 and looked_up.body == recorded_order, looked_up

    assert_replicas_agree(await api.status())


@pytest_twisted.ensureDeferred
async def test_lru_evicts_the_least_recently_used_key(api: Api) -> None:
    keys, _ = await fill_cache_with_misses(api)
    a, b, c, d, e = keys
    before = (await api.status())["cache"]
    assert before["capacity"] == CACHE_SIZE and before["size"] == CACHE_SIZE

    assert (await api.get("/bazar/" + a)).header(CACHE) == "hit"  # a becomes the most recent
    assert (await api.status())["cache"]["keys"] == [b, c, d, e, a]

    assert (await api.info(3)).header(CACHE) == "miss"  # evicts b, the least recently used
    assert (await api.status())["cache"]["keys"] == [c, d, e, a, "info/3"]
    assert (await api.info(4)).header(CACHE) == "miss"  # evicts c
    cache = (await api.status())["cache"]
    assert cache["keys"] == [d, e, a, "info/3", "info/4"]
    assert cache["evictions"] == before["evictions"] + 2

    assert (await api.get("/bazar/" + b)).header(CACHE) == "miss"  # b was evicted: fetched again
    assert (await api.status())["cache"]["keys"] == [e, a, "info/3", "info/4", b]

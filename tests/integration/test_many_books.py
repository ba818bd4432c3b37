"""A real cluster seeded with 100,000 books (``books = 100000``): lookups, pages and digests.

A million would show the same with a longer start; this size keeps the suite fast while
every listing spans hundreds of pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_twisted
from treq.client import HTTPClient

from bazar.catalog.store import GENERATED_TOPICS, generated_book
from bazar.launch import Cluster
from tests.integration.api import Api, assert_replicas_agree
from tests.integration.cluster import start_cluster

pytestmark = pytest.mark.integration

N = 100_000
FIELDS = ("id", "title", "topic", "price", "quantity")
TOPIC = "art/design"  # a generated topic with a slash in it
TOPIC_IDS = [i for i in range(7, N) if GENERATED_TOPICS[i % len(GENERATED_TOPICS)] == TOPIC]


def book(book_id: int) -> dict[str, object]:
    return dict(zip(FIELDS, generated_book(book_id), strict=True))


def next_path(link: str | None) -> str | None:
    return link[1 : link.index(">")] if link else None


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("many-books"), books=N)
    yield running
    running.stop()


@pytest.fixture
def big_api(http: HTTPClient, big: Cluster) -> Api:
    return Api(http, big)


@pytest_twisted.ensureDeferred
async def test_every_replica_seeded_the_same(big_api: Api, big: Cluster) -> None:
    """Three catalog databases seeded on their own: one digest, and each has the last book."""
    status = await big_api.status()
    assert_replicas_agree(status)
    on_each = await big_api.on_each(("catalog-1", "catalog-2", "catalog-3"), f"/catalog/books/{N - 1}")
    assert all(found == book(N - 1) for found in on_each.values()), on_each
    assert Path(big.layout.data_dir, "catalog-1.sqlite").stat().st_size > N * 50  # really that many rows


@pytest_twisted.ensureDeferred
async def test_lookup_of_a_high_id(big_api: Api) -> None:
    first = await big_api.info(N - 2)
    assert first.body == book(N - 2)
    assert first.header("X-Bazar-Cache") == "miss"
    assert (await big_api.info(N - 2)).header("X-Bazar-Cache") == "hit"
    missing = await big_api.get(f"/bazar/info/{N}")
    assert missing.code == 404, missing


@pytest_twisted.ensureDeferred
async def test_search_pages(big_api: Api) -> None:
    """A topic of 2,000 books: its first page, the next one by its Link, and the last one by cursor."""
    path = f"/bazar/search/{quote(TOPIC, safe='')}"
    first = await big_api.get(f"{path}?limit=50")
    assert first.code == 200, first
    assert [b["id"] for b in first.body] == TOPIC_IDS[:50]
    assert first.body[0] == book(TOPIC_IDS[0])
    assert first.header("X-Bazar-Total") == str(len(TOPIC_IDS)) == "2000"
    second_path = next_path(first.header("Link"))
    assert second_path == f"{path}?limit=50&after={TOPIC_IDS[49]}", first.headers
    second = await big_api.get(second_path)
    assert [b["id"] for b in second.body] == TOPIC_IDS[50:100]

    last = await big_api.get(f"{path}?limit=50&after={TOPIC_IDS[-11]}")
    assert [b["id"] for b in last.body] == TOPIC_IDS[-10:]
    assert last.header("Link") is None


@pytest_twisted.ensureDeferred
async def test_info_all_pages(big_api: Api) -> None:
    first = await big_api.get("/bazar/info/all")
    assert first.code == 200, first
    assert [b["id"] for b in first.body] == list(range(100))
    assert first.header("X-Bazar-Total") == str(N)
    assert next_path(first.header("Link")) == "/bazar/info/all?limit=100&after=99"
    deep = await big_api.get(f"/bazar/info/all?limit=1000&offset={N - 10}")
    assert [b["id"] for b in deep.body] == list(range(N - 10, N))
    assert deep.header("Link") is None
    bad = await big_api.get("/bazar/info/all?limit=1001")
    assert bad.code == 400 and bad.body["error"]["code"] == 400, bad


@pytest_twisted.ensureDeferred
async def test_a_write_is_everywhere_and_digests_still_agree(big_api: Api) -> None:
    target = TOPIC_IDS[60]
    page = f"/bazar/search/{quote(TOPIC, safe='')}?limit=50&after={TOPIC_IDS[49]}"
    assert (await big_api.get(page)).code == 200  # cached now
    await big_api.set_price(target, 0.25)
    reply = await big_api.get(page)
    assert reply.header("X-Bazar-Cache") == "miss", reply
    assert [b["price"] for b in reply.body if b["id"] == target] == [0.25]
    status = await big_api.status()
    assert_replicas_agree(status)
    assert {r["last_seq"] for r in status["replicas"] if r["role"] == "catalog"} == {1}

"""The storefront page in real headless Chromium against a real cluster on loopback.

Why a browser: the page is JavaScript over the JSON API, and only a browser shows that the
two agree (paths, the X-Bazar-* headers read through fetch, the error shape) and that the
assets are served in a way a browser accepts: a wrong Content-Type or a CSP violation stops
the script without any error on the server side.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import start_cluster

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

selenium_webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
)
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} not found (Debian: apt-get install chromium chromium-driver)", allow_module_level=True
    )

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROLES = {"catalog": 3, "order": 3}
STARTUP_DEADLINE = 45.0  # seconds for every replica to answer as healthy
UI_TIMEOUT = 15.0  # seconds for the page to show what the test waits for
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1700",
)


# -- the cluster ------------------------------------------------------------------------


def api_error(url: str, body: Any) -> Any:
    """The ``{"code", "message"}`` of a POST that the API refuses."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    try:
        urllib.request.urlopen(request, timeout=5).close()
    except urllib.error.HTTPError as e:
        with e:
            return json.load(e)["error"]
    pytest.fail(f"POST {url} {body} was accepted")


@pytest.fixture
def storefront_cluster(tmp_path: Path) -> Iterator[str]:
    """A whole cluster (``twistd -n bazar-cluster``) on free loopback ports; yields the front end's URL."""
    cluster = start_cluster(tmp_path, secret="storefront-test-secret", timeout=STARTUP_DEADLINE)
    try:
        yield cluster.frontend
    finally:
        cluster.stop()


# -- the browser ------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile, talking to nothing but loopback."""
    if not CHROMEDRIVER.exists():
        pytest.fail(f"{CHROMIUM} is installed but {CHROMEDRIVER} is not: apt-get install chromium-driver")
    options = selenium_webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Both paths given, so Selenium does not run selenium-manager (which would go online).
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = selenium_webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def by_testid(driver: WebDriver | WebElement, name: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def all_by_testid(driver: WebDriver | WebElement, name: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """Poll ``condition`` until it is true; an element redrawn under it just means "try again"."""
    return WebDriverWait(
        driver, UI_TIMEOUT, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    ).until(condition, message=what)


def attr(driver: WebDriver, name: str, attribute: str) -> str:
    return by_testid(driver, name).get_attribute(attribute) or ""


def meta(driver: WebDriver, name: str) -> dict[str, str]:
    """What a ".meta" line says about its answer: status, cache (hit|miss|none), replica."""
    element = by_testid(driver, name)
    return {key: element.get_attribute(f"data-{key}") or "" for key in ("status", "cache", "replica")}


def book_rows(driver: WebDriver) -> list[WebElement]:
    return all_by_testid(driver, "book-row")


def counter(driver: WebDriver, name: str) -> int:
    text = by_testid(driver, name).text
    return int(text) if text.isdigit() else -1


def cluster_panel(driver: WebDriver) -> dict[str, Any]:
    """What the cluster panel shows (it is redrawn every 2 s: a stale element means read again)."""
    rows = all_by_testid(driver, "replica-row")
    return {
        "summary": attr(driver, "cluster-summary", "data-state"),
        "healthy": sorted(
            r.get_attribute("data-replica") for r in rows if r.get_attribute("data-healthy") == "true"
        ),
        "sequencers": sorted(
            r.get_attribute("data-replica") for r in rows if r.get_attribute("data-sequencer") == "true"
        ),
        "digests": {role: attr(driver, f"digest-status-{role}", "data-state") for role in ROLES},
        "capacity": counter(driver, "cache-capacity"),
        "hits": counter(driver, "cache-hits"),
        "invalidations": counter(driver, "cache-invalidations"),
    }


def set_value(element: WebElement, value: str) -> None:
    element.clear()
    element.send_keys(value)


# -- the test -----------------------------------------------------------------------------


def test_browse_search_buy_and_watch_the_cluster(
    storefront_cluster: str, browser: WebDriver, tmp_path: Path
) -> None:
    try:
        _storefront_session(storefront_cluster, browser)
    except BaseException:
        with suppress(Exception):  # the browser may be what failed
            browser.save_screenshot(str(tmp_path / "failure.png"))
            (tmp_path / "failure.html").write_text(browser.page_source)
            print(f"screenshot and page source saved in {tmp_path}")
        raise


def _storefront_session(url: str, driver: WebDriver) -> None:
    driver.get(f"{url}/")
    assert driver.title.startswith("Bazar"), "GET / did not serve the storefront (is storefront mounted?)"

    # Every book, from a catalog replica (the cache is empty, so a miss).
    wait_for(driver, lambda d: len(book_rows(d)) == 7, "7 books listed")
    assert attr(driver, "books-caption", "data-count") == "7"
    listed = meta(driver, "books-meta")
    assert listed["status"] == "200"
    assert listed["cache"] == "miss"
    assert listed["replica"].startswith("catalog-")

    # Search by a topic with a space in it (so the path must be URL-encoded).
    set_value(by_testid(driver, "search-input"), "distributed systems")
    by_testid(driver, "search-submit").click()
    wait_for(driver, lambda d: "distributed systems" in by_testid(d, "books-caption").text, "search results")
    rows = book_rows(driver)
    assert len(rows) == 2
    assert all(row.find_elements(By.XPATH, "./td[text()='distributed systems']") for row in rows)
    assert meta(driver, "books-meta")["status"] == "200"

    # One book: a miss served by a catalog replica, then (reloaded) a hit from the cache.
    book_id = rows[0].get_attribute("data-book-id")
    title = by_testid(rows[0], "book-title").text
    by_testid(driver, f"view-book-{book_id}").click()
    wait_for(driver, lambda d: by_testid(d, "detail-title").text == title, "the book's details")
    shown = meta(driver, "detail-meta")
    assert (shown["status"], shown["cache"]) == ("200", "miss")
    assert shown["replica"].startswith("catalog-")
    stock = int(attr(driver, "detail-quantity", "data-quantity"))
    assert stock >= 2

    by_testid(driver, "detail-reload").click()
    wait_for(driver, lambda d: meta(d, "detail-meta")["cache"] == "hit", "a cache hit on reload")
    assert "cache hit" in by_testid(driver, "detail-meta").text

    # Buy two: the order replica answers, the stock drops, and the re-read is a miss
    # (the write invalidated the cached entry before it was acknowledged).
    set_value(by_testid(driver, "purchase-quantity"), "2")
    by_testid(driver, "purchase-submit").click()
    wait_for(driver, lambda d: attr(d, "action-result", "data-state") == "ok", "the purchase's answer")
    assert "Bought 2" in by_testid(driver, "result-message").text
    bought = meta(driver, "result-meta")
    assert bought["status"] == "200"
    assert bought["replica"].startswith("order-")
    wait_for(
        driver,
        lambda d: attr(d, "detail-quantity", "data-quantity") == str(stock - 2),
        f"the stock to drop from {stock} to {stock - 2}",
    )
    assert meta(driver, "detail-meta")["cache"] == "miss"
    wait_for(
        driver,
        lambda d: any(
            row.get_attribute("data-book-id") == book_id
            and by_testid(row, "book-quantity").text == str(stock - 2)
            for row in book_rows(d)
        ),
        "the list to show the new stock",
    )

    # An error answer is shown with its message from {"error": {"code", "message"}}.
    set_value(by_testid(driver, "purchase-quantity"), str(stock + 1000))
    by_testid(driver, "purchase-submit").click()
    wait_for(driver, lambda d: attr(d, "action-result", "data-state") == "error", "the refused purchase")
    assert meta(driver, "result-meta")["status"] == "409"
    refused = api_error(f"{url}/bazar/purchase/{book_id}", {"quantity": stock + 1000})
    assert refused["code"] == 409
    assert by_testid(driver, "result-error").text == refused["message"]
    assert attr(driver, "detail-quantity", "data-quantity") == str(stock - 2)

    # The cluster panel: six healthy replicas, one sequencer per role, equal digests per role,
    # and the cache counters that the steps above moved (the reload's hit, the purchase's invalidation).
    expected: dict[str, Any] = {
        "summary": "ok",
        "healthy": sorted(f"{role}-{n}" for role, count in ROLES.items() for n in range(1, count + 1)),
        "sequencers": ["catalog-1", "order-1"],
        "digests": {role: "equal" for role in ROLES},
        "capacity": 5,
    }
    panel: dict[str, Any] = {}

    def panel_as_expected(d: WebDriver) -> bool:
        panel.clear()
        panel.update(cluster_panel(d))
        return (
            panel["hits"] >= 1
            and panel["invalidations"] >= 1
            and all(panel[k] == v for k, v in expected.items())
        )

    try:
        wait_for(driver, panel_as_expected, "the cluster panel")
    except TimeoutException:
        pytest.fail(f"the cluster panel shows {panel}, expected {expected} and hits, invalidations >= 1")
    assert "6 of 6 replicas healthy" in by_testid(driver, "cluster-summary").text
    for role in ROLES:
        assert "all equal" in by_testid(driver, f"digest-status-{role}").text

    # The page ran without script errors or blocked resources (answers with 4xx are expected).
    problems = [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]
    assert problems == []

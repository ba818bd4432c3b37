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

from bazar.launch import CATALOGS, ORDERS, Processes, twistd  # noqa: E402
from bazar.launch import wait_for as poll  # noqa: E402
from tests.integration.cluster import write_config as cluster_config  # noqa: E402

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


def get_status(url: str) -> int:
    """The status of a GET, or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


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


def wait_for(
    driver: WebDriver, condition: Callable[[WebDriver], Any], what: str, timeout: float = UI_TIMEOUT
) -> Any:
    """Poll ``condition`` until it is true; an element redrawn under it just means "try again"."""
    return WebDriverWait(
        driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    ).until(condition, message=what)


def attr(driver: WebDriver, name: str, attribute: str) -> str:
    return by_testid(driver, name).get_attribute(attribute) or ""


def meta(driver: WebDriver, name: str) -> dict[str, str]:
    """What a ".meta" line says about its answer: status, cache (hit|miss|none), replica."""
    element = by_testid(driver, name)
    return {key: element.get_attribute(f"data-{key}") or "" for key in ("status", "cache", "replica")}


def book_cards(driver: WebDriver) -> list[WebElement]:
    return all_by_testid(driver, "book-card")


def card_of(driver: WebDriver, book_id: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="book-card"][data-book-id="{book_id}"]')


def text_of(element: WebElement) -> str:
    """The element's text as written, not as styled (CSS may upper-case it on screen)."""
    return (element.get_attribute("textContent") or "").strip()


def card_quantity(driver: WebDriver, book_id: str) -> str:
    return by_testid(card_of(driver, book_id), "book-quantity").get_attribute("data-quantity") or ""


# -- the layout, at a phone's width and a desktop's -------------------------------------

PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
DESKTOP = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
SIDE_GAP = 21  # px: the side column's cards are 1.25rem (20 px) apart, whatever the shop's height

LAYOUT_PROBLEMS = """
const problems = [];
const doc = document.documentElement;
if (doc.scrollWidth > window.innerWidth) problems.push(`the page scrolls sideways: ${doc.scrollWidth} px`);
for (const wrap of document.querySelectorAll(".table-wrap")) {
  if (wrap.offsetParent && wrap.scrollWidth > wrap.clientWidth + 1) {
    const where = wrap.closest("section").id;
    problems.push(`a table in #${where} is clipped: ${wrap.scrollWidth} px in ${wrap.clientWidth}`);
  }
}
for (const card of document.querySelectorAll('[data-testid="book-card"]')) {
  const box = card.getBoundingClientRect();
  for (const part of ["book-title", "book-price", "book-quantity", `buy-book-${card.dataset.bookId}`]) {
    const node = card.querySelector(`[data-testid="${part}"]`);
    const r = node && node.getBoundingClientRect();
    const right = Math.min(box.right, window.innerWidth) + 1;
    const inside = r && r.width > 0 && r.left >= box.left - 1 && r.right <= right;
    if (!inside) {
      problems.push(`book ${card.dataset.bookId}: its ${part} is missing or outside its card`);
    }
  }
}
const side = [...document.querySelector("aside.side").children].filter((c) => c.offsetParent);
for (let i = 1; i < side.length; i++) {
  const gap = side[i].getBoundingClientRect().top - side[i - 1].getBoundingClientRect().bottom;
  if (gap > arguments[0]) problems.push(`${gap} px between #${side[i - 1].id} and #${side[i].id}`);
}
return problems;
"""


def layout_problems(driver: WebDriver) -> dict[str, list[str]]:
    """At a phone's width and a desktop's: nothing wider than the screen, no clipped table, every
    card showing its title, price, stock and Buy button, no gap in the side column."""
    found = {}
    try:
        for name, metrics in (("phone", PHONE), ("desktop", DESKTOP)):
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            found[name] = driver.execute_script(LAYOUT_PROBLEMS, SIDE_GAP)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return found


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

    # Every book, from a catalog replica (the cache is empty, so a miss), on a card with its
    # price, its stock and a Buy button; at a phone's width and a desktop's, nothing clipped.
    wait_for(driver, lambda d: len(book_cards(d)) == 7, "7 books listed")
    assert attr(driver, "books-caption", "data-count") == "7"
    listed = meta(driver, "books-meta")
    assert listed["status"] == "200"
    assert listed["cache"] == "miss"
    assert listed["replica"].startswith("catalog-")
    for card in book_cards(driver):
        assert text_of(by_testid(card, "book-price")).startswith("$")
        quantity = int(by_testid(card, "book-quantity").get_attribute("data-quantity") or "-1")
        assert quantity > 0 and str(quantity) in by_testid(card, "book-quantity").text
        assert by_testid(card, f"buy-book-{card.get_attribute('data-book-id')}").is_enabled()
    assert not by_testid(driver, "book-detail").is_displayed()  # until a book is chosen
    assert layout_problems(driver) == {"phone": [], "desktop": []}

    # A topic (its chip), then a search by a topic with a space in it (URL-encoded in the path).
    chips = {text_of(c): c for c in all_by_testid(driver, "topic-chip")}
    assert sorted(chips) == ["distributed systems", "new", "undergraduate school"]
    chips["new"].click()
    wait_for(driver, lambda d: attr(d, "books-caption", "data-count") == "3", "the topic's 3 books")
    assert chips["new"].get_attribute("aria-pressed") == "true"
    assert attr(driver, "show-all", "aria-pressed") == "false"
    set_value(by_testid(driver, "search-input"), "distributed systems")
    by_testid(driver, "search-submit").click()
    wait_for(driver, lambda d: "distributed systems" in by_testid(d, "books-caption").text, "search results")
    cards = book_cards(driver)
    assert len(cards) == 2
    assert all(text_of(by_testid(card, "book-topic")) == "distributed systems" for card in cards)
    assert meta(driver, "books-meta")["status"] == "200"

    # One book: a miss served by a catalog replica, then (reloaded) a hit from the cache.
    book_id = cards[0].get_attribute("data-book-id") or ""
    title = by_testid(cards[0], "book-title").text
    by_testid(driver, f"view-book-{book_id}").click()
    wait_for(driver, lambda d: by_testid(d, "detail-title").text == title, "the book's details")
    shown = meta(driver, "detail-meta")
    assert (shown["status"], shown["cache"]) == ("200", "miss")
    assert shown["replica"].startswith("catalog-")
    assert card_of(driver, book_id).get_attribute("aria-current") == "true"
    stock = int(attr(driver, "detail-quantity", "data-quantity"))
    assert stock >= 3
    assert layout_problems(driver) == {"phone": [], "desktop": []}

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
    wait_for(driver, lambda d: card_quantity(d, book_id) == str(stock - 2), "the card to show the new stock")

    # Buy one from the book's card: its note names the order, and its stock drops by one more.
    by_testid(card_of(driver, book_id), f"buy-book-{book_id}").click()
    wait_for(driver, lambda d: card_quantity(d, book_id) == str(stock - 3), "the card's stock after its Buy")
    note = by_testid(card_of(driver, book_id), "card-note").text
    assert note.startswith("Bought: order #"), note
    assert f"order #{note.removeprefix('Bought: order #')}" in by_testid(driver, "result-message").text
    assert meta(driver, "result-meta")["replica"].startswith("order-")
    wait_for(
        driver,
        lambda d: attr(d, "detail-quantity", "data-quantity") == str(stock - 3),
        "the book shown to follow",
    )

    # An error answer is shown with its message from {"error": {"code", "message"}}.
    set_value(by_testid(driver, "purchase-quantity"), str(stock + 1000))
    by_testid(driver, "purchase-submit").click()
    wait_for(driver, lambda d: attr(d, "action-result", "data-state") == "error", "the refused purchase")
    assert meta(driver, "result-meta")["status"] == "409"
    refused = api_error(f"{url}/bazar/purchase/{book_id}", {"quantity": stock + 1000})
    assert refused["code"] == 409
    assert by_testid(driver, "result-error").text == refused["message"]
    assert attr(driver, "detail-quantity", "data-quantity") == str(stock - 3)

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


# -- replicas that come back ----------------------------------------------------------------


def test_the_book_list_loads_once_catalog_replicas_come_back(
    processes: Processes, browser: WebDriver, tmp_path: Path
) -> None:
    """Opened while no catalog replica runs, the page says the books could not be loaded; once
    the replicas are up, it lists them by itself (its cluster panel sees them come back)."""
    layout = cluster_config(tmp_path)

    def start(name: str) -> None:
        role = name.split("-")[0]
        replica = () if role == "frontend" else ("--replica", name)
        command = twistd(f"bazar-{role}", "--config", str(layout.config), *replica)
        processes.start(name, command, ports=layout.ports_of(name))

    for name in ("frontend", *ORDERS):
        start(name)
    poll(lambda: get_status(f"{layout.frontend}/") == 200, 30, "the front end to answer")

    browser.get(f"{layout.frontend}/")
    wait_for(browser, lambda d: "Could not load" in by_testid(d, "books-caption").text, "the failed list")
    assert book_cards(browser) == []

    for name in CATALOGS:
        start(name)
    wait_for(browser, lambda d: len(book_cards(d)) == 7, "7 books listed, without a reload", timeout=45)
    assert attr(browser, "books-caption", "data-count") == "7"


# -- which front end served ----------------------------------------------------------------


def test_the_page_names_the_frontend_that_served_it(tmp_path: Path, browser: WebDriver) -> None:
    """With two front ends, the page opened at each names that one (from X-Bazar-Frontend)."""
    cluster = start_cluster(tmp_path, frontends=2, timeout=STARTUP_DEADLINE)
    try:
        for name in cluster.layout.frontends[::-1]:
            browser.get(f"{cluster.url(name)}/")
            wait_for(browser, lambda d: len(book_cards(d)) == 7, f"7 books listed at {name}")
            wait_for(browser, lambda d, n=name: attr(d, "frontend-name", "data-frontend") == n, name)
            assert text_of(by_testid(browser, "frontend-name")) == name
            assert layout_problems(browser) == {"phone": [], "desktop": []}
    finally:
        cluster.stop()

/* Bazar storefront: plain JavaScript over the public JSON API (no framework, no build step).
 *
 * Every request goes through api(), which records the status, the X-Bazar-Cache,
 * X-Bazar-Replica and X-Bazar-Frontend headers and the {"error": {"code", "message"}} shape, so
 * each view can say where its data came from (and the header, which front end served it). Data is only ever put into the page with textContent, never as HTML.
 */
"use strict";

(function () {
  const CLUSTER_INTERVAL_MS = 2000; // between the end of one update and the start of the next
  const CLUSTER_TIMEOUT_MS = 15000;
  const REQUEST_TIMEOUT_MS = 15000;
  const LOG_LIMIT = 25;
  const LOW_STOCK = 5;
  const DIGEST_PREFIX = 12;

  const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });

  const state = {
    view: { kind: "all" }, // or { kind: "search", topic }
    bookId: null, // the book shown in the detail panel, which the forms act on
    wantedBookId: null, // the book last asked for (the newest request wins)
    book: null,
    booksFailed: false, // the last load of the list failed: retried when a catalog replica is back
    catalogsHealthy: null, // healthy catalog replicas at the last cluster update (null: unknown)
    notes: new Map(), // book id -> what its card's last Buy did
    clusterPaused: false,
    clusterTimer: null,
  };

  // -- small DOM helpers ------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  /** Build an element; attributes by name, children as nodes or text (always as text). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function timeOfDay(date) {
    return date.toLocaleTimeString([], { hour12: false });
  }

  // -- the API ----------------------------------------------------------------------

  /**
   * One request to the front end. Never throws: the answer always has
   * {ok, status, statusText, cache, replica, frontend, data, error, ms, method, path}.
   */
  async function api(method, path, body, { log = true, timeout = REQUEST_TIMEOUT_MS } = {}) {
    const started = performance.now();
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeout);
    const init = { method, headers: { Accept: "application/json" }, signal: controller.signal, cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const answer = {
      method, path, ok: false, status: 0, statusText: "", cache: null, replica: null, frontend: null, data: null,
      error: null, ms: 0,
    };
    try {
      const response = await fetch(path, init);
      answer.status = response.status;
      answer.statusText = response.statusText;
      answer.cache = response.headers.get("X-Bazar-Cache");
      answer.replica = response.headers.get("X-Bazar-Replica");
      answer.frontend = response.headers.get("X-Bazar-Frontend");
      if (answer.frontend) showFrontend(answer.frontend);
      const text = await response.text();
      try {
        answer.data = text ? JSON.parse(text) : null;
      } catch (_) {
        answer.error = `the answer is not JSON (${response.headers.get("Content-Type") || "no content type"})`;
      }
      if (answer.data && typeof answer.data === "object" && answer.data.error) {
        const e = answer.data.error;
        answer.error = typeof e === "object" && e.message ? e.message : String(e);
      }
      answer.ok = response.ok && answer.error === null;
      if (!response.ok && answer.error === null) answer.error = `${response.status} ${response.statusText}`.trim();
    } catch (e) {
      answer.error = e && e.name === "AbortError"
        ? `no answer within ${Math.round(timeout / 1000)} s`
        : "the front end could not be reached";
    } finally {
      clearTimeout(timer);
      answer.ms = Math.round(performance.now() - started);
    }
    if (log) logRequest(answer);
    return answer;
  }

  // -- how an answer is described ---------------------------------------------------

  /** The header's label: which front end served the last answer (several may share one
   * address, behind a load balancer or one port; each names itself in X-Bazar-Frontend). */
  function showFrontend(name) {
    const node = $("frontend-name");
    if (!node || node.dataset.frontend === name) return;
    node.dataset.frontend = name;
    node.textContent = name;
  }

  function statusBadge(answer) {
    const kind = answer.status === 0 ? "down" : answer.ok ? "ok" : "error";
    const label = answer.status === 0 ? "no answer" : `${answer.status} ${answer.statusText}`.trim();
    return el("span", { className: `badge badge-${kind}`, "data-testid": "status", title: "HTTP status" }, label);
  }

  function cacheBadge(answer) {
    if (answer.cache === "hit") {
      return el("span", { className: "badge badge-hit", "data-testid": "cache", title: "X-Bazar-Cache: hit" },
        "cache hit");
    }
    if (answer.cache === "miss") {
      return el("span", { className: "badge badge-miss", "data-testid": "cache", title: "X-Bazar-Cache: miss" },
        "cache miss");
    }
    return el("span", { className: "badge badge-none", "data-testid": "cache", title: "no X-Bazar-Cache header" },
      "not cached");
  }

  function replicaBadge(answer) {
    if (answer.replica) {
      return el("span", { className: "badge badge-replica", "data-testid": "replica", title: "X-Bazar-Replica" },
        `served by ${answer.replica}`);
    }
    const why = answer.cache === "hit" ? "from the front end's cache" : "no replica named";
    return el("span", { className: "badge badge-none", "data-testid": "replica", title: "no X-Bazar-Replica header" },
      why);
  }

  /** Fill a ".meta" line: method and path, status, cache, replica, time; as data-* for tests. */
  function renderMeta(node, answer, { withError = true } = {}) {
    node.dataset.status = String(answer.status);
    node.dataset.cache = answer.cache || "none";
    node.dataset.replica = answer.replica || "";
    const parts = [
      el("code", { className: "request" }, `${answer.method} ${decodeURIComponent(answer.path)}`),
      " ", statusBadge(answer), " ", cacheBadge(answer), " ", replicaBadge(answer),
      " ", el("span", { className: "ms" }, `${answer.ms} ms`),
    ];
    if (withError && answer.error) {
      parts.push(el("span", { className: "meta-error", "data-testid": "meta-error" }, answer.error));
    }
    node.replaceChildren(...parts);
  }

  /** The "Last answer" panel: what the user's last action did, or why it failed. */
  function showResult(answer, summary) {
    const node = $("action-result");
    node.dataset.state = answer.ok ? "ok" : "error";
    const meta = el("p", { className: "meta", "data-testid": "result-meta" });
    renderMeta(meta, answer, { withError: false }); // the message above already says it
    const message = answer.ok
      ? el("p", { className: "message message-ok", "data-testid": "result-message" }, summary)
      : el("p", { className: "message message-error", role: "alert", "data-testid": "result-error" },
        answer.error || "the request failed");
    node.replaceChildren(message, meta);
  }

  function logRequest(answer) {
    const body = $("request-log-body");
    if (!body) return;
    const row = el("tr", { "data-testid": "log-entry", "data-status": answer.status, className: answer.ok ? "" : "failed" },
      el("td", {}, timeOfDay(new Date())),
      el("td", {}, el("code", {}, `${answer.method} ${decodeURIComponent(answer.path)}`)),
      el("td", { className: "num" }, answer.status || "–"),
      el("td", {}, answer.cache || "–"),
      el("td", {}, answer.replica || "–"),
      el("td", { className: "num" }, answer.ms),
    );
    if (answer.error) row.title = answer.error;
    body.prepend(row);
    while (body.rows.length > LOG_LIMIT) body.deleteRow(-1);
  }

  // -- the book list ----------------------------------------------------------------

  /** How much is left, in a shopper's words; "low" from LOW_STOCK copies down. */
  function stockLevel(quantity) {
    if (quantity === 0) return { level: "out", text: "Sold out" };
    if (quantity <= LOW_STOCK) return { level: "low", text: `Only ${quantity} left` };
    return { level: "ok", text: `${quantity} in stock` };
  }

  /** A cover colour per topic (the same topic, the same colour on every load). */
  function topicHue(topic) {
    let hash = 0;
    for (const char of topic) hash = (hash * 31 + char.codePointAt(0)) % 360;
    return hash;
  }

  function cover(book) {
    const node = el("div", { className: "cover", "aria-hidden": "true", "data-initial": book.title.charAt(0) },
      el("span", { className: "cover-title" }, book.title));
    node.style.setProperty("--hue", String(topicHue(book.topic))); // CSSOM: the CSP allows no style attribute
    return node;
  }

  function bookCard(book) {
    const stock = stockLevel(book.quantity);
    const titleId = `book-${book.id}-title`;
    return el("li", {
      className: "book-card",
      "data-testid": "book-card",
      "data-book-id": book.id,
      "aria-current": book.id === state.bookId ? "true" : null,
    },
    el("article", { "aria-labelledby": titleId },
      cover(book),
      el("div", { className: "card-body" },
        el("p", { className: "card-topic", "data-testid": "book-topic" }, book.topic),
        el("h3", { className: "card-title", id: titleId, "data-testid": "book-title" }, book.title),
        el("p", { className: "card-price", "data-testid": "book-price" }, money.format(book.price)),
        el("p", {
          className: `card-stock stock-${stock.level}`,
          "data-testid": "book-quantity",
          "data-quantity": book.quantity,
        }, stock.text),
        el("div", { className: "card-actions" },
          el("button", {
            type: "button",
            "data-testid": `buy-book-${book.id}`,
            "aria-label": `Buy “${book.title}”`,
            disabled: book.quantity === 0,
            onclick: (event) => buyOne(book, event.currentTarget),
          }, book.quantity === 0 ? "Sold out" : "Buy"),
          el("button", {
            type: "button",
            className: "secondary",
            "data-testid": `view-book-${book.id}`,
            "aria-label": `Details of “${book.title}”`,
            onclick: () => showBook(book.id, { focus: true }),
          }, "Details")),
        el("p", { className: "card-note", "data-testid": "card-note", "aria-live": "polite" },
          state.notes.get(book.id) || ""))));
  }

  function renderBooks(books) {
    $("books-grid").replaceChildren(...books.map(bookCard));
  }

  function fillTopics(books) {
    const topics = [...new Set(books.map((b) => b.topic))].sort();
    $("topic-list").replaceChildren(...topics.map((t) => el("option", { value: t })));
    $("topic-chips").replaceChildren(...topics.map((topic) => el("button", {
      type: "button",
      className: "chip",
      "data-testid": "topic-chip",
      "data-topic": topic,
      onclick: () => {
        $("search-topic").value = topic;
        search(topic);
      },
    }, topic)));
    markTopic();
  }

  /** The chip of the topic shown (or "All books") is pressed, the others not. */
  function markTopic() {
    const topic = state.view.kind === "search" ? state.view.topic : null;
    $("show-all").setAttribute("aria-pressed", String(topic === null));
    for (const chip of $("topic-chips").children) {
      chip.setAttribute("aria-pressed", String(chip.dataset.topic === topic));
    }
  }

  async function loadBooks() {
    const view = state.view;
    const path = view.kind === "search"
      ? `/bazar/search/${encodeURIComponent(view.topic)}`
      : "/bazar/info/all";
    const shop = $("catalog");
    shop.setAttribute("aria-busy", "true");
    const answer = await api("GET", path);
    shop.removeAttribute("aria-busy");
    if (state.view !== view) return answer; // a newer search replaced this one meanwhile
    renderMeta($("books-meta"), answer, { withError: false }); // the caption says what went wrong
    const caption = $("books-caption");
    state.booksFailed = !answer.ok || !Array.isArray(answer.data);
    $("books-retry").hidden = !state.booksFailed;
    if (state.booksFailed) {
      caption.dataset.count = "";
      caption.textContent = `Could not load the books: ${answer.error || "unexpected answer"}. `
        + "They load by themselves once a catalog replica is back.";
      caption.className = "caption caption-error";
      $("books-grid").replaceChildren();
      return answer;
    }
    const books = answer.data;
    caption.className = "caption";
    caption.dataset.count = String(books.length);
    const noun = books.length === 1 ? "book" : "books";
    caption.textContent = view.kind === "search"
      ? `${books.length} ${noun} on “${view.topic}”`
      : `${books.length} ${noun}`;
    if (view.kind === "all") fillTopics(books);
    renderBooks(books);
    return answer;
  }

  function search(topic) {
    state.view = topic ? { kind: "search", topic } : { kind: "all" };
    markTopic();
    return loadBooks();
  }

  /** A card's Buy: one copy, the answer on the card and in "Last answer", then fresh reads. */
  async function buyOne(book, button) {
    button.disabled = true;
    const answer = await api("POST", `/bazar/purchase/${book.id}`, { quantity: 1 });
    const summary = answer.ok ? describeOrder(answer.data) : "";
    state.notes.set(book.id, answer.ok
      ? `Bought: order #${answer.data.order_id}`
      : `Not bought: ${answer.error || "the request failed"}`);
    showResult(answer, summary);
    if (answer.ok) await refreshAfterWrite();
    else await loadBooks(); // the note shows on the redrawn card; the stock may have changed too
  }

  // -- one book ---------------------------------------------------------------------

  function renderBook(book) {
    state.book = book;
    $("book-detail").hidden = false;
    $("detail-title").textContent = book.title;
    $("detail-id").textContent = String(book.id);
    $("detail-topic").textContent = book.topic;
    $("detail-price").textContent = money.format(book.price);
    const quantity = $("detail-quantity");
    quantity.textContent = String(book.quantity);
    quantity.dataset.quantity = String(book.quantity);
    quantity.classList.toggle("sold-out", book.quantity === 0);
    $("purchase-submit").textContent = book.quantity === 0 ? "Buy (sold out)" : "Buy";
    const price = $("price-input");
    if (document.activeElement !== price) price.value = String(book.price);
    for (const card of $("books-grid").children) {
      if (card.dataset.bookId === String(book.id)) card.setAttribute("aria-current", "true");
      else card.removeAttribute("aria-current");
    }
  }

  /** Show book ``id``; the forms act on it only once it has been shown (state.bookId). */
  async function showBook(id, { focus = false } = {}) {
    state.wantedBookId = id;
    const answer = await api("GET", `/bazar/info/${encodeURIComponent(id)}`);
    if (state.wantedBookId !== id) return answer; // another book was chosen meanwhile
    if (answer.ok && answer.data) {
      state.bookId = id;
      renderMeta($("detail-meta"), answer);
      renderBook(answer.data);
      if (location.hash !== `#book/${id}`) history.replaceState(null, "", `#book/${id}`);
      if (focus) $("detail-title").focus();
    } else if (id === state.bookId) {
      renderMeta($("detail-meta"), answer); // the book shown could not be re-read: say so there
    } else {
      state.wantedBookId = state.bookId; // keep the book shown, and say why the other one is not
      showResult(answer);
    }
    return answer;
  }

  /** After a write: show the book and the list as they are now (both are fresh reads). */
  async function refreshAfterWrite() {
    if (state.bookId !== null) await showBook(state.bookId);
    await loadBooks();
  }

  /** Run one write from a form: disable it meanwhile, then report and refresh. */
  async function submitWrite(form, send, describe) {
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      const answer = await send();
      showResult(answer, answer.ok ? describe(answer.data) : "");
      if (answer.ok) await refreshAfterWrite();
    } finally {
      button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  }

  function describeOrder(order) {
    const each = order && typeof order.price === "number" ? ` at ${money.format(order.price)} each` : "";
    const what = order ? `${order.quantity} × “${order.title}”${each}` : "";
    const id = order && order.order_id !== undefined ? ` — order #${order.order_id}` : "";
    return `Bought ${what}${id}.`;
  }

  function onPurchase(event) {
    event.preventDefault();
    const id = state.bookId;
    const quantity = Number.parseInt($("purchase-quantity").value, 10);
    return submitWrite(event.target,
      () => api("POST", `/bazar/purchase/${id}`, { quantity }),
      describeOrder);
  }

  function onPrice(event) {
    event.preventDefault();
    const id = state.bookId;
    const price = Number.parseFloat($("price-input").value);
    return submitWrite(event.target,
      () => api("PUT", `/bazar/update_price/${id}`, { price }),
      (book) => `“${book.title}” now costs ${money.format(book.price)}.`);
  }

  function onStock(event) {
    event.preventDefault();
    const id = state.bookId;
    const mode = event.target.querySelector("input[name=stock-mode]:checked").value;
    const value = Number.parseInt($("stock-input").value, 10);
    return submitWrite(event.target,
      () => api("PUT", `/bazar/update_quantity/${id}`, { [mode]: value }),
      (book) => `“${book.title}”: ${book.quantity} in stock.`);
  }

  // -- the cluster panel ------------------------------------------------------------

  /** Per role: do the replicas' digests agree? Unknown when one could not be asked. */
  function digestVerdict(replicas) {
    const healthy = replicas.filter((r) => r.healthy && r.digest);
    const distinct = new Set(healthy.map((r) => r.digest));
    const down = replicas.length - healthy.length;
    if (distinct.size > 1) return { state: "differ", text: "digests differ" };
    if (healthy.length === 0) return { state: "unknown", text: "no digest" };
    if (down > 0) return { state: "unknown", text: `reachable ones equal, ${down} unknown` };
    return { state: "equal", text: "digests: all equal" };
  }

  function replicaRow(replica) {
    const isSequencer = replica.healthy && replica.sequencer === replica.name;
    // Not healthy: why_unhealthy says why in plain words (unreachable, not ready, an old epoch,
    // lagging); error, set only when it could not be asked, picks the badge.
    const why = replica.why_unhealthy || replica.error || "";
    const health = replica.healthy
      ? el("span", { className: "health health-ok", "data-testid": "replica-health" }, "● healthy")
      : el("span", { className: "health health-down", "data-testid": "replica-health", title: why },
        replica.error ? "✕ unreachable" : "✕ not read from");
    return el("tr", {
      "data-testid": "replica-row",
      "data-replica": replica.name,
      "data-role": replica.role,
      "data-healthy": String(Boolean(replica.healthy)),
      "data-sequencer": String(isSequencer),
      className: replica.healthy ? "" : "down",
    },
    el("th", { scope: "row" }, replica.name,
      isSequencer ? el("span", { className: "badge badge-sequencer", "data-testid": "sequencer-badge" }, "sequencer") : null,
      el("code", { className: "address", title: replica.url, "data-testid": "replica-address" },
        replica.url.replace(/^https?:\/\//, ""))),
    el("td", {}, health, replica.healthy ? null : el("div", { className: "error-detail" }, why)),
    el("td", { className: "num", "data-testid": "replica-last-seq" }, replica.last_seq ?? "–"),
    el("td", {}, replica.digest
      ? el("code", { className: "digest", title: replica.digest, "data-testid": "replica-digest" },
        replica.digest.slice(0, DIGEST_PREFIX))
      : "–"),
    );
  }

  function roleBlock(role, replicas) {
    const verdict = digestVerdict(replicas);
    const sequencers = new Set(replicas.filter((r) => r.healthy).map((r) => r.sequencer));
    const sequencerNote = sequencers.size > 1
      ? el("p", { className: "caption caption-error" }, `replicas disagree on the sequencer: ${[...sequencers].join(", ")}`)
      : null;
    const healthy = replicas.filter((r) => r.healthy).length;
    return el("div", { className: "role", "data-testid": `role-${role}`, "data-role": role },
      el("div", { className: "role-head" },
        el("h3", {}, `${role.charAt(0).toUpperCase()}${role.slice(1)} replicas`, el("span", { className: "count" }, ` ${healthy}/${replicas.length} healthy`)),
        el("span", {
          className: `badge verdict verdict-${verdict.state}`,
          "data-testid": `digest-status-${role}`,
          "data-state": verdict.state,
          title: "Equal digests mean equal data",
        }, verdict.text)),
      sequencerNote,
      el("div", { className: "table-wrap" },
        el("table", { className: "replicas" },
          el("thead", {}, el("tr", {},
            el("th", { scope: "col" }, "Replica"),
            el("th", { scope: "col" }, "Health"),
            el("th", { scope: "col", className: "num" }, "Last seq"),
            el("th", { scope: "col" }, "Digest"))),
          el("tbody", {}, ...replicas.map(replicaRow)))));
  }

  function renderCache(cache) {
    const set = (id, value) => {
      $(id).textContent = value === undefined || value === null ? "–" : String(value);
    };
    set("cache-size", cache.size);
    set("cache-capacity", cache.capacity);
    set("cache-hits", cache.hits);
    set("cache-misses", cache.misses);
    set("cache-evictions", cache.evictions);
    set("cache-invalidations", cache.invalidations);
    const lookups = (cache.hits || 0) + (cache.misses || 0);
    set("cache-ratio", lookups ? `${Math.round((100 * cache.hits) / lookups)} %` : "–");
    const keys = Array.isArray(cache.keys) ? cache.keys : [];
    $("cache-keys").replaceChildren(...(keys.length
      ? keys.map((k) => el("li", { "data-testid": "cache-key" }, el("code", {}, k)))
      : [el("li", { className: "empty" }, "(empty)")]));
  }

  function renderCluster(answer) {
    const summary = $("cluster-summary");
    $("cluster-updated").textContent = `Updated ${timeOfDay(new Date())}.`;
    if (!answer.ok || !answer.data || !Array.isArray(answer.data.replicas)) {
      summary.dataset.state = "down";
      summary.textContent = `Cannot read the cluster: ${answer.error || "unexpected answer"}`;
      state.catalogsHealthy = 0; // as good as none: once it can be read again, they came back
      return;
    }
    const replicas = answer.data.replicas;
    const healthy = replicas.filter((r) => r.healthy).length;
    summary.dataset.state = healthy === replicas.length ? "ok" : healthy === 0 ? "down" : "degraded";
    summary.dataset.healthy = String(healthy);
    summary.dataset.total = String(replicas.length);
    summary.textContent = `${healthy} of ${replicas.length} replicas healthy`;
    const roles = new Map();
    for (const r of replicas) {
      if (!roles.has(r.role)) roles.set(r.role, []);
      roles.get(r.role).push(r);
    }
    $("cluster-roles").replaceChildren(...[...roles].map(([role, rs]) => roleBlock(role, rs)));
    if (answer.data.cache) renderCache(answer.data.cache);
    noticeReturns((roles.get("catalog") || []).filter((r) => r.healthy).length);
  }

  /** Catalog replicas came back (more are healthy than at the last update), or the list could
   * not be loaded and one is healthy now: read the list again, and the book shown. */
  function noticeReturns(catalogsHealthy) {
    const before = state.catalogsHealthy;
    state.catalogsHealthy = catalogsHealthy;
    const cameBack = before !== null && catalogsHealthy > before;
    if (catalogsHealthy > 0 && (state.booksFailed || cameBack)) {
      loadBooks();
      if (state.bookId !== null) showBook(state.bookId);
    }
  }

  async function pollCluster() {
    state.clusterTimer = null;
    // Longer than the front end's own per-replica timeout (10 s), so that a hung replica shows
    // up as one unhealthy row rather than as a panel that cannot be read.
    const answer = await api("GET", "/bazar/cluster", undefined, { log: false, timeout: CLUSTER_TIMEOUT_MS });
    renderCluster(answer);
    if (!state.clusterPaused) state.clusterTimer = setTimeout(pollCluster, CLUSTER_INTERVAL_MS);
  }

  function toggleCluster() {
    const button = $("cluster-toggle");
    state.clusterPaused = !state.clusterPaused;
    button.setAttribute("aria-pressed", String(state.clusterPaused));
    button.textContent = state.clusterPaused ? "Resume updates" : "Pause updates";
    if (state.clusterPaused && state.clusterTimer !== null) {
      clearTimeout(state.clusterTimer);
      state.clusterTimer = null;
    } else if (!state.clusterPaused && state.clusterTimer === null) {
      pollCluster();
    }
  }

  /** "#book/3" opens book 3, so a book can be linked to and survives a reload. */
  function followHash() {
    const link = /^#book\/(\d+)$/.exec(location.hash);
    if (link && Number(link[1]) !== state.bookId) showBook(Number(link[1]));
  }

  // -- start ------------------------------------------------------------------------

  function start() {
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      search($("search-topic").value.trim());
    });
    $("show-all").addEventListener("click", () => {
      $("search-topic").value = "";
      search("");
    });
    $("books-retry").addEventListener("click", () => loadBooks());
    $("purchase-form").addEventListener("submit", onPurchase);
    $("price-form").addEventListener("submit", onPrice);
    $("stock-form").addEventListener("submit", onStock);
    $("detail-reload").addEventListener("click", () => showBook(state.bookId));
    $("cluster-toggle").addEventListener("click", toggleCluster);

    window.addEventListener("hashchange", followHash);

    loadBooks();
    followHash();
    pollCluster();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

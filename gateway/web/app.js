// The web trader: sign-in, watchlists with live prices, instrument search, the symbol page
// with the order ticket, orders with live status, and the portfolio — over the public REST
// and SSE API only.

import { Api, ApiError, NetworkError, describeProblem, parseExact } from "./api.js";
import { drawCandles, drawTicks } from "./chart.js";
import { $, $$, changeNode, dateTime, h, money, newKey, time, toast } from "./dom.js";
import { LiveStream } from "./sse.js";

const STARTER_SYMBOLS = ["RELIANCE", "TCS", "HDFCBANK", "INFY", "ICICIBANK"];
const OPEN_STATUSES = new Set([
  "PENDING_EXCHANGE", "OPEN", "PARTIALLY_FILLED", "PENDING_CANCEL", "PENDING_REPLACE", "TRIGGER_PENDING",
]);
const CANCELLABLE = new Set(["PENDING_EXCHANGE", "OPEN", "PARTIALLY_FILLED", "TRIGGER_PENDING"]);
const MODIFIABLE = new Set(["OPEN", "PARTIALLY_FILLED", "TRIGGER_PENDING"]);
// Prices are live only while the stream is open and has said something (data or its ~15 s
// heartbeat) recently.
const SILENCE_MS = 25000;
const MAX_TICKS = 600;
const SESSION_KEY = "brokermesh.session";
const PRICE_PATTERN = /^\d{1,9}(\.\d{1,2})?$/;

// A refusal of a token already given up (a request sent before signing in again) ends nothing.
const api = new Api({ onUnauthorized: (_error, token) => token === api.token && sessionEnded() });
const state = {
  session: null,
  watchlists: [],
  watchlistId: "",
  quotes: new Map(), // symbol → latest quote fields (exact decimal texts)
  ticks: new Map(), // symbol → [{t, p}]
  companies: new Map(),
  orders: new Map(),
  orderFilter: "open",
  prices: { stream: null, symbols: "", state: "idle", heard: 0 },
  orderStream: null,
  route: { name: "watchlist", symbol: "" },
  ledgerTokens: [""],
  ledgerNext: "",
};

// --- session ----------------------------------------------------------------------------

function saveSession(session) {
  state.session = session;
  api.token = session ? session.token : "";
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(SESSION_KEY);
}

function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (session && (session.refreshToken || Date.parse(session.expiresAt) > Date.now() + 5000)) return session;
  } catch {
    // A damaged entry is as good as none.
  }
  return null;
}

// An access token lives minutes: it is renewed with the refresh token a minute before it
// runs out (or halfway, for short ones), for as long as the session lasts.
const RENEW_BEFORE_MS = 60000;
let expiryTimer = 0;
function armExpiry() {
  clearTimeout(expiryTimer);
  const session = state.session;
  const left = Date.parse(session.expiresAt) - Date.now();
  if (!session.refreshToken) {
    expiryTimer = setTimeout(() => sessionEnded(), Math.max(0, left - 2000));
    return;
  }
  const lifetime = session.lifetimeMs || left;
  expiryTimer = setTimeout(() => renewTokens(), Math.max(0, Math.min(left - RENEW_BEFORE_MS, lifetime / 2)));
}

/** Trade the refresh token for a new pair; if the session is over, sign in again. */
async function renewTokens() {
  const session = state.session;
  if (!session) return;
  try {
    const renewed = await api.refresh(session.refreshToken);
    if (state.session !== session) return; // signed out meanwhile
    saveSession(sessionFrom(renewed, session.username));
    armExpiry();
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 401) {
      sessionEnded();
      return;
    }
    // The server could not be reached: try again shortly while the token still works.
    const left = Date.parse(session.expiresAt) - Date.now();
    if (left <= 2000) sessionEnded();
    else expiryTimer = setTimeout(() => renewTokens(), Math.min(5000, left / 2));
  }
}

function sessionFrom(body, username) {
  const expiresAt = body.expiresAt || new Date(Date.now() + body.expiresIn * 1000).toISOString();
  return {
    token: body.accessToken,
    refreshToken: body.refreshToken || "",
    userId: body.userId,
    username,
    expiresAt,
    lifetimeMs: (body.expiresIn || 0) * 1000,
  };
}

function showSignIn(note) {
  $("#signin-note").textContent = note || "";
  $("#signin").hidden = false;
  $("#app").hidden = true;
  const user = $("#signin-user");
  if (state.session?.username) user.value = state.session.username;
  (user.value ? $("#signin-pass") : user).focus();
}

/** The token ran out or was refused: sign in again; the app (and its forms) stays as it is. */
function sessionEnded() {
  if (!state.session || $("#app").hidden) return;
  stopStreams();
  clearTimeout(expiryTimer);
  state.expiredUser = state.session.username;
  api.token = "";
  showSignIn("Your session has ended. Sign in again to carry on where you were.");
}

async function signIn(event) {
  event.preventDefault();
  const username = $("#signin-user").value.trim();
  const password = $("#signin-pass").value;
  const error = $("#signin-error");
  error.textContent = "";
  if (!username || !password) {
    error.textContent = "Enter your username and password.";
    return;
  }
  const button = $("#signin-submit");
  button.disabled = true;
  try {
    const session = await api.login(username, password);
    const resuming = state.expiredUser === username;
    saveSession(sessionFrom(session, username));
    $("#signin-pass").value = "";
    $("#signin").hidden = true;
    $("#app").hidden = false;
    state.expiredUser = "";
    if (resuming) resume();
    else start();
  } catch (failure) {
    error.textContent = failure instanceof ApiError ? failure.message : "The server could not be reached. Try again.";
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  stopStreams();
  clearTimeout(expiryTimer);
  // End the session on the server too (its tokens stop working everywhere); the page is
  // cleared whether or not the server could be told.
  try {
    if (state.session) await api.logout();
  } catch {
    // Already over, or the server is unreachable: nothing more to do here.
  }
  saveSession(null);
  // A clean page for the next person at this screen.
  location.hash = "";
  location.reload();
}

// --- start ------------------------------------------------------------------------------

async function start() {
  armExpiry();
  $("#who").textContent = state.session.username;
  state.orders.clear();
  state.ordersNext = undefined;
  openOrderStream();
  await Promise.allSettled([loadWatchlists(), refreshFunds(), loadOrders()]);
  route();
}

/** After signing in again as the same user: streams resume from where they stopped. */
function resume() {
  armExpiry();
  openOrderStream(state.orderStream?.lastEventId || "");
  syncPriceStream(true);
  route();
}

function stopStreams() {
  stopSymbolStreams();
  state.prices.stream?.stop();
  state.prices.stream = null;
  state.prices.symbols = "";
  state.orderStream?.stop();
}

// --- connection status and staleness ---------------------------------------------------

function pricesLive() {
  return state.prices.state === "open" && Date.now() - state.prices.heard < SILENCE_MS;
}

function renderLink() {
  const live = state.orderStream?.state === "open" && (!state.prices.stream || pricesLive());
  const box = $("#link-status");
  const text = live ? "● Live" : "○ Reconnecting…";
  if (box.textContent !== text) box.textContent = text;
  box.classList.toggle("down", !live);
  renderStaleness();
}

function renderStaleness() {
  const live = pricesLive();
  for (const row of $$("#wl-rows tr")) {
    const stale = !live || !state.quotes.get(row.dataset.symbol)?.streamed;
    row.classList.toggle("is-stale", stale);
    $(".stale", row).hidden = !stale;
  }
  if (state.route.name === "symbol") {
    const stale = !live || !state.quotes.get(state.route.symbol)?.streamed;
    $("#q-stale").hidden = !stale;
    $("#view-symbol .quote").classList.toggle("is-stale", stale);
  }
}

// --- live prices --------------------------------------------------------------------------

function streamedSymbols() {
  const symbols = new Set(currentWatchlist()?.symbols || []);
  if (state.route.name === "symbol" && state.route.symbol) symbols.add(state.route.symbol);
  return [...symbols].sort().slice(0, 100);
}

let syncTimer = 0;
function syncPriceStream(force = false) {
  clearTimeout(syncTimer);
  syncTimer = setTimeout(() => {
    const symbols = streamedSymbols();
    const key = symbols.join(",");
    if (!force && key === state.prices.symbols && state.prices.stream) return;
    state.prices.stream?.stop();
    state.prices.symbols = key;
    state.prices.stream = null;
    for (const quote of state.quotes.values()) quote.streamed = false;
    if (!symbols.length) return renderLink();
    const stream = new LiveStream({
      url: () => `/v1/marketdata/stream?symbols=${encodeURIComponent(key)}`,
      headers: () => api.headers(),
      onState: (value) => {
        if (stream !== state.prices.stream) return;
        state.prices.state = value;
        if (value !== "open") for (const quote of state.quotes.values()) quote.streamed = false;
        renderLink();
      },
      onBeat: () => {
        state.prices.heard = Date.now();
      },
      onEvent: (event) => {
        if (event.type === "price_tick") applyTick(parseExact(event.data));
        else if (event.type === "error") {
          // The stream says it is giving up on us (e.g. too slow): prices are stale until it is back.
          state.prices.state = "reconnecting";
          renderLink();
        }
      },
      onRefused: refused,
    });
    state.prices.stream = stream;
    stream.start();
  }, force ? 0 : 150);
}

/** What to do when a stream is refused: 401 ends the session, 429/5xx retry, 4xx stop. */
async function refused(response) {
  if (response.status === 401) {
    sessionEnded();
    return "stop";
  }
  if (response.status === 429 || response.status >= 500) return "retry";
  const problem = await response.text().catch(() => "");
  console.warn("stream refused", response.status, problem);
  return "stop";
}

function applyTick(tick) {
  const quote = state.quotes.get(tick.symbol) || {};
  Object.assign(quote, tick, { streamed: true });
  state.quotes.set(tick.symbol, quote);
  if (tick.ltp !== undefined && tick.ltp !== null) {
    const ticks = state.ticks.get(tick.symbol) || [];
    const t = Date.parse(tick.ts) || Date.now();
    if (!ticks.length || ticks[ticks.length - 1].p !== String(tick.ltp) || t - ticks[ticks.length - 1].t > 5000) {
      ticks.push({ t, p: String(tick.ltp) });
      if (ticks.length > MAX_TICKS) ticks.splice(0, ticks.length - MAX_TICKS);
    }
    state.ticks.set(tick.symbol, ticks);
  }
  renderWatchRow(tick.symbol);
  if (state.route.name === "symbol" && state.route.symbol === tick.symbol) renderQuote();
}

// --- watchlists -----------------------------------------------------------------------------

function currentWatchlist() {
  return state.watchlists.find((w) => w.watchlistId === state.watchlistId);
}

async function loadWatchlists(selectId) {
  try {
    const page = await api.listWatchlists();
    state.watchlists = page.watchlists || [];
    const keep = selectId || state.watchlistId || localStorage.getItem("brokermesh.watchlist") || "";
    state.watchlistId = state.watchlists.some((w) => w.watchlistId === keep)
      ? keep
      : state.watchlists[0]?.watchlistId || "";
    renderWatchlists();
  } catch (error) {
    $("#wl-error").textContent = errorText(error);
  }
}

function renderWatchlists() {
  const select = $("#wl-select");
  select.replaceChildren(
    ...state.watchlists.map((w) => h("option", { value: w.watchlistId, selected: w.watchlistId === state.watchlistId }, w.name)),
  );
  const list = currentWatchlist();
  for (const id of ["#wl-rename", "#wl-delete", "#wl-select"]) $(id).disabled = !list;
  $("#wl-add").disabled = !list;
  if (list) localStorage.setItem("brokermesh.watchlist", list.watchlistId);
  const rows = $("#wl-rows");
  rows.replaceChildren(...(list?.symbols || []).map((symbol) => watchRow(symbol)));
  const empty = $("#wl-empty");
  empty.hidden = Boolean(list?.symbols?.length);
  empty.replaceChildren();
  if (!state.watchlists.length) {
    empty.append(
      "You have no watchlist yet. ",
      h("button", { type: "button", id: "wl-starter", onclick: () => createWatchlist("My watchlist", STARTER_SYMBOLS) },
        "Create one with five popular stocks"),
    );
  } else if (list && !list.symbols?.length) {
    empty.append("This watchlist is empty: add a symbol above.");
  }
  for (const symbol of list?.symbols || []) renderWatchRow(symbol);
  syncPriceStream();
  loadQuotes(list?.symbols || []);
}

function watchRow(symbol) {
  return h(
    "tr",
    { "data-symbol": symbol },
    h("th", { scope: "row" }, h("a", { href: `#/symbol/${encodeURIComponent(symbol)}` }, symbol)),
    h("td", { class: "num" }, h("span", { class: "price" }, "—"), " ", h("span", { class: "stale", hidden: false }, "stale")),
    h("td", { class: "num change" }, "—"),
    h("td", {}, h("button", {
      type: "button", class: "icon", "aria-label": `Remove ${symbol}`, title: `Remove ${symbol}`,
      onclick: () => removeSymbol(symbol),
    }, "✕")),
  );
}

function renderWatchRow(symbol) {
  const row = $(`#wl-rows tr[data-symbol="${CSS.escape(symbol)}"]`);
  const quote = state.quotes.get(symbol);
  if (!row || !quote) return;
  const price = $(".price", row);
  const text = money(quote.ltp);
  if (price.textContent !== text) {
    price.textContent = text;
    // A brief highlight on change (with the ▲/▼ beside it; colour is never the only sign).
    row.classList.remove("tick");
    void row.offsetWidth;
    row.classList.add("tick");
  }
  $(".change", row).replaceChildren(changeNode(quote.change, quote.changePct));
  const stale = !pricesLive() || !quote.streamed;
  row.classList.toggle("is-stale", stale);
  $(".stale", row).hidden = !stale;
}

async function loadQuotes(symbols) {
  if (!symbols.length) return;
  try {
    const list = await api.quotes(symbols.slice(0, 100));
    for (const quote of list.quotes || []) {
      const known = state.quotes.get(quote.symbol) || { streamed: false };
      // A REST quote fills the gaps (bid, ask, day figures) but never makes a price "live".
      state.quotes.set(quote.symbol, { ...quote, ...pick(known, ["ltp", "change", "changePct", "ts"]), streamed: known.streamed });
      renderWatchRow(quote.symbol);
    }
    if (state.route.name === "symbol") renderQuote();
  } catch (error) {
    if (!(error instanceof NetworkError)) $("#wl-error").textContent = errorText(error);
  }
}

function pick(object, keys) {
  const out = {};
  for (const key of keys) if (object[key] !== undefined && object.streamed) out[key] = object[key];
  return out;
}

async function createWatchlist(name, symbols) {
  $("#wl-error").textContent = "";
  try {
    const created = await api.createWatchlist(name, symbols, newKey());
    await loadWatchlists(created.watchlistId);
    return created;
  } catch (error) {
    $("#wl-error").textContent = errorText(error);
    return null;
  }
}

function openNameForm(mode) {
  const form = $("#wl-name-form");
  form.dataset.mode = mode;
  form.hidden = false;
  $("#wl-name").value = mode === "rename" ? currentWatchlist()?.name || "" : "";
  $("#wl-name").focus();
}

async function saveName(event) {
  event.preventDefault();
  const name = $("#wl-name").value.trim();
  if (!name) {
    $("#wl-error").textContent = "Give the watchlist a name.";
    return;
  }
  const form = $("#wl-name-form");
  const old = currentWatchlist();
  if (form.dataset.mode === "rename" && old) {
    // The API has no rename: make the list again under the new name, then delete the old one.
    const created = await createWatchlist(name, old.symbols || []);
    if (!created) return;
    try {
      await api.deleteWatchlist(old.watchlistId);
    } catch (error) {
      $("#wl-error").textContent = errorText(error);
    }
    await loadWatchlists(created.watchlistId);
  } else if (!(await createWatchlist(name, []))) {
    return;
  }
  form.hidden = true;
  $("#wl-select").focus();
}

function askDelete() {
  const list = currentWatchlist();
  if (!list) return;
  $("#wl-confirm-text").textContent = `Delete “${list.name}”?`;
  $("#wl-confirm").hidden = false;
  $("#wl-confirm-no").focus();
}

async function deleteWatchlist() {
  const list = currentWatchlist();
  $("#wl-confirm").hidden = true;
  if (!list) return;
  try {
    await api.deleteWatchlist(list.watchlistId);
    state.watchlistId = "";
    await loadWatchlists();
    toast(`Deleted “${list.name}”.`);
  } catch (error) {
    $("#wl-error").textContent = errorText(error);
  }
  $("#wl-select").focus();
}

async function addSymbol(symbol) {
  const list = currentWatchlist();
  if (!list) return;
  $("#wl-error").textContent = "";
  try {
    const answer = await api.addSymbols(list.watchlistId, [symbol]);
    list.symbols = answer.symbols;
    renderWatchlists();
    if (answer.symbolsIgnored?.length) toast(`${answer.symbolsIgnored.join(", ")} was already there or is unknown.`);
    else toast(`Added ${symbol}.`);
  } catch (error) {
    $("#wl-error").textContent = errorText(error);
  }
}

async function removeSymbol(symbol) {
  const list = currentWatchlist();
  if (!list) return;
  try {
    const answer = await api.removeSymbols(list.watchlistId, [symbol]);
    list.symbols = answer.symbols;
    renderWatchlists();
    toast(`Removed ${symbol}.`);
    $("#wl-add").focus();
  } catch (error) {
    $("#wl-error").textContent = errorText(error);
  }
}

// --- search (a combobox: type-ahead, arrows, Enter, Escape) -----------------------------

function combobox(input, listbox, choose) {
  let results = [];
  let active = -1;
  let controller = null;
  let timer = 0;
  const close = () => {
    listbox.hidden = true;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    active = -1;
  };
  const highlight = (index) => {
    active = index;
    $$("li", listbox).forEach((li, i) => li.setAttribute("aria-selected", String(i === index)));
    if (index >= 0) input.setAttribute("aria-activedescendant", `${listbox.id}-${index}`);
  };
  const pickIndex = (index) => {
    const instrument = results[index];
    if (!instrument) return;
    close();
    input.value = "";
    choose(instrument.symbol);
  };
  const search = async () => {
    const q = input.value.trim();
    controller?.abort();
    if (!q) return close();
    controller = new AbortController();
    try {
      const page = await api.search(q, controller.signal);
      results = page.instruments || [];
    } catch (error) {
      if (error.name === "AbortError") return;
      results = [];
    }
    for (const instrument of results) state.companies.set(instrument.symbol, instrument.companyName);
    listbox.replaceChildren(
      ...results.map((instrument, index) =>
        h("li", {
          id: `${listbox.id}-${index}`, role: "option", "aria-selected": "false",
          onmousedown: (event) => { event.preventDefault(); pickIndex(index); },
        }, h("b", {}, instrument.symbol), " ", h("span", {}, instrument.companyName || "")),
      ),
    );
    if (!results.length) listbox.replaceChildren(h("li", { class: "none", role: "option", "aria-disabled": "true" }, "No match"));
    listbox.hidden = false;
    input.setAttribute("aria-expanded", "true");
    highlight(results.length ? 0 : -1);
  };
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(search, 120);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" && results.length) {
      event.preventDefault();
      if (listbox.hidden) search();
      else highlight(Math.min(results.length - 1, active + 1));
    } else if (event.key === "ArrowUp" && results.length) {
      event.preventDefault();
      highlight(Math.max(0, active - 1));
    } else if (event.key === "Enter") {
      event.preventDefault();
      if (!listbox.hidden && active >= 0) pickIndex(active);
      else if (/^[A-Za-z0-9&_-]{1,20}$/.test(input.value.trim())) {
        const symbol = input.value.trim().toUpperCase();
        close();
        input.value = "";
        choose(symbol);
      }
    } else if (event.key === "Escape") close();
  });
  input.addEventListener("blur", () => setTimeout(close, 100));
}

// --- symbol page and quote ----------------------------------------------------------------

async function showSymbol(symbol) {
  $("#sym-name").textContent = symbol;
  $("#sym-company").textContent = state.companies.get(symbol) || "";
  if (!state.companies.has(symbol)) {
    api.search(symbol).then((page) => {
      const found = (page.instruments || []).find((i) => i.symbol === symbol);
      if (found) {
        state.companies.set(symbol, found.companyName);
        if (state.route.symbol === symbol) $("#sym-company").textContent = found.companyName;
      }
    }, () => {});
  }
  ticketChanged();
  renderQuote();
  openSymbolStreams(symbol);
  await loadQuotes([symbol]);
}

// --- depth and candles of the symbol on screen --------------------------------------------

const MAX_CANDLES = 120;
const market = { symbol: "", interval: "1m", candles: [], depth: null, streams: [], live: { depth: false, candles: false } };

function stopSymbolStreams() {
  for (const stream of market.streams) stream.stop();
  market.streams = [];
  market.symbol = "";
}

/** Candles and depth: the latest over REST, then their streams (which start with the
 * current state, so a reconnect never leaves a gap). */
function openSymbolStreams(symbol) {
  const interval = $("#c-interval").value || "1m";
  if (market.symbol === symbol && market.interval === interval && market.streams.length) return;
  stopSymbolStreams();
  Object.assign(market, { symbol, interval, candles: [], depth: null, live: { depth: false, candles: false } });
  renderDepth();
  renderCandles();
  api.candles(symbol, interval).then((page) => {
    if (market.symbol !== symbol || market.interval !== interval) return;
    for (const candle of (page.candles || []).reverse()) mergeCandle(candle);
    renderCandles();
  }, () => {});
  const path = `/v1/instruments/${encodeURIComponent(symbol)}`;
  const open = (kind, url, onData) => {
    const stream = new LiveStream({
      url: () => url,
      headers: () => api.headers(),
      onState: (value) => {
        market.live[kind] = value === "open";
        renderDepth();
      },
      onEvent: (event) => {
        if (market.symbol !== symbol) return;
        if (event.type === (kind === "depth" ? "depth" : "candle")) onData(parseExact(event.data));
        else if (event.type === "feed_status") {
          market.live[kind] = parseExact(event.data).status === "LIVE";
          renderDepth();
        }
      },
      onRefused: refused,
    });
    market.streams.push(stream);
    stream.start();
  };
  open("depth", `${path}/depth/stream`, (depth) => {
    market.depth = depth;
    renderDepth();
  });
  open("candles", `${path}/candles/stream?interval=${interval}`, (candle) => {
    mergeCandle(candle);
    renderCandles();
  });
}

function mergeCandle(candle) {
  const list = market.candles;
  const at = list.findIndex((c) => c.startTime === candle.startTime);
  if (at >= 0) list[at] = candle;
  else {
    list.push(candle);
    list.sort((a, b) => (a.startTime < b.startTime ? -1 : 1));
    if (list.length > MAX_CANDLES) list.splice(0, list.length - MAX_CANDLES);
  }
}

function renderDepth() {
  const depth = market.depth;
  const rows = [];
  for (let i = 0; i < 5; i++) {
    const bid = depth?.bids?.[i];
    const ask = depth?.asks?.[i];
    rows.push(h("tr", {},
      h("td", {}, bid ? String(bid.quantity) : "—"), h("td", {}, bid ? money(bid.price) : "—"),
      h("td", {}, ask ? money(ask.price) : "—"), h("td", {}, ask ? String(ask.quantity) : "—")));
  }
  $("#depth-rows").replaceChildren(...rows);
  const stale = !market.live.depth;
  $("#depth-stale").hidden = !stale || !depth;
  $(".depth").classList.toggle("is-stale", stale);
}

function renderCandles() {
  if (market.candles.length) drawCandles($("#chart"), market.candles);
  else drawTicks($("#chart"), state.ticks.get(state.route.symbol) || []);
}

function renderQuote() {
  const symbol = state.route.symbol;
  const quote = state.quotes.get(symbol) || {};
  $("#q-ltp").textContent = money(quote.ltp);
  $("#q-chg").replaceChildren(changeNode(quote.change, quote.changePct));
  $("#q-bid").textContent = quote.bid ? `${money(quote.bid)} × ${quote.bidQty}` : "—";
  $("#q-ask").textContent = quote.ask ? `${money(quote.ask)} × ${quote.askQty}` : "—";
  $("#q-open").textContent = money(quote.open);
  $("#q-high").textContent = money(quote.high);
  $("#q-low").textContent = money(quote.low);
  $("#q-prev").textContent = money(quote.previousClose);
  $("#q-vol").textContent = quote.volume === undefined ? "—" : String(quote.volume);
  $("#q-ts").textContent = time(quote.ts);
  const watched = currentWatchlist()?.symbols?.includes(symbol);
  $("#sym-watch").disabled = !currentWatchlist() || Boolean(watched);
  $("#sym-watch").textContent = watched ? "In your watchlist" : "Add to watchlist";
  renderCandles();
  renderStaleness();
}

// --- order ticket ---------------------------------------------------------------------------

const ticket = { key: "", inFlight: false };

function ticketChanged() {
  // A different order needs a different key; the same one resent keeps its key.
  ticket.key = "";
  const form = $("#ticket");
  const side = form.elements.side.value;
  const type = $("#t-type").value;
  const needsLimit = type === "LIMIT" || type === "STOP_LIMIT";
  const needsStop = type === "STOP" || type === "STOP_LIMIT";
  $("#t-limit").disabled = !needsLimit;
  $("#t-stop").disabled = !needsStop;
  $("#t-limit").required = needsLimit;
  $("#t-stop").required = needsStop;
  const submit = $("#t-submit");
  submit.textContent = `${side === "BUY" ? "Buy" : "Sell"} ${state.route.symbol || ""}`.trim();
  submit.classList.toggle("buy", side === "BUY");
  submit.classList.toggle("sell", side === "SELL");
  schedulePreview();
}

// What the order would block and cost, from the API's preview (never computed here), shown
// while the ticket is filled in. Only the latest answer is shown.
const preview = { timer: 0, asked: 0 };

function schedulePreview() {
  clearTimeout(preview.timer);
  preview.timer = setTimeout(showPreview, 250);
}

async function showPreview() {
  const out = $("#t-preview");
  const { order, problems } = ticketOrder();
  const asked = ++preview.asked;
  if (problems.length || !order.symbol) {
    out.replaceChildren("Fill in the order to see the funds it blocks and its charges.");
    return;
  }
  out.setAttribute("aria-busy", "true");
  try {
    const answer = await api.previewOrder(order);
    if (asked === preview.asked) out.replaceChildren(...previewNodes(order, answer));
  } catch (failure) {
    if (asked === preview.asked) out.replaceChildren(`No preview: ${errorText(failure)}`);
  } finally {
    if (asked === preview.asked) out.removeAttribute("aria-busy");
  }
}

function previewNodes(order, p) {
  const nodes = [];
  if (p.blockAmount !== null && p.blockAmount !== undefined) {
    const charges = p.charges.map((c) => `${c.name.replaceAll("_", " ")} ₹${money(c.amount)}`).join(", ");
    nodes.push(
      h(
        "dl",
        { class: "preview" },
        h("dt", {}, "Blocks"),
        h("dd", { id: "t-block" }, order.side === "BUY" ? `₹${money(p.blockAmount)}` : `${p.blockAmount} shares`),
        h("dt", {}, "Charges (estimated)"),
        h("dd", { id: "t-charges" }, `₹${money(p.chargesTotal)}`, charges ? h("span", { class: "note" }, ` (${charges})`) : ""),
        h("dt", {}, "Available"),
        h("dd", {}, order.side === "BUY" ? `₹${money(p.available)}` : `${p.available} shares`),
      ),
    );
  }
  if (p.refusal) nodes.push(h("p", { class: "error", id: "t-refusal" }, `This order would be refused: ${p.refusal.detail}`));
  else nodes.push(h("p", { class: "ok" }, "The broker would accept this order now."));
  return nodes;
}

function ticketOrder() {
  const form = $("#ticket");
  const type = $("#t-type").value;
  const quantityText = $("#t-qty").value.trim();
  const problems = [];
  if (!/^[1-9]\d{0,7}$/.test(quantityText)) problems.push("Quantity must be a whole number of shares, 1 or more.");
  const order = {
    symbol: state.route.symbol,
    side: form.elements.side.value,
    type,
    quantity: Number(quantityText),
    timeInForce: $("#t-tif").value,
    product: $("#t-product").value,
  };
  // Prices go as the exact text typed (a decimal string), never through a float.
  if (type === "LIMIT" || type === "STOP_LIMIT") {
    const limit = $("#t-limit").value.trim();
    if (!PRICE_PATTERN.test(limit)) problems.push("Limit price must be a price such as 1542.35.");
    order.limitPrice = limit;
  }
  if (type === "STOP" || type === "STOP_LIMIT") {
    const stop = $("#t-stop").value.trim();
    if (!PRICE_PATTERN.test(stop)) problems.push("Stop price must be a price such as 1542.35.");
    order.stopPrice = stop;
  }
  if (order.timeInForce === "GTD") {
    const expire = $("#t-expire").value;
    if (!/^\d{4}-\d{2}-\d{2}$/.test(expire)) problems.push("A good-till-date order needs its last trading date.");
    order.expireDate = expire;
  }
  return { order, problems };
}

async function submitTicket(event) {
  event.preventDefault();
  if (ticket.inFlight) return;
  const { order, problems } = ticketOrder();
  const error = $("#t-error");
  const result = $("#t-result");
  error.textContent = problems.join(" ");
  result.textContent = "";
  if (problems.length) return;
  ticket.inFlight = true;
  const button = $("#t-submit");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  ticket.key ||= newKey();
  try {
    const placed = await api.placeOrder(order, ticket.key);
    ticket.key = "";
    mergeOrder(placed);
    result.textContent = `Order placed: ${placed.side} ${placed.quantity} ${placed.symbol}, ${words(placed.status)}.`;
    refreshFunds();
  } catch (failure) {
    const unknown = failure instanceof NetworkError || (failure instanceof ApiError && (failure.status >= 500 || failure.status === 429));
    if (!unknown) ticket.key = "";
    error.textContent = errorText(failure) + (unknown ? " Press the button again to retry: it cannot place the order twice." : "");
  } finally {
    ticket.inFlight = false;
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

// --- orders ----------------------------------------------------------------------------------

function words(status) {
  return String(status || "").replaceAll("_", " ").toLowerCase();
}

/** Keep the newest version of each order: list pages and stream events may arrive in any order. */
function mergeOrder(order) {
  if (!order?.orderId) return;
  const known = state.orders.get(order.orderId);
  if (known && (known.version ?? 0) > (order.version ?? 0)) return;
  state.orders.set(order.orderId, order);
  renderOrders();
}

async function loadOrders(pageToken = "") {
  try {
    const page = await api.listOrders({ pageToken });
    for (const order of page.orders || []) mergeOrder(order);
    // Older pages are fetched on request; a refetch of the first page keeps what was loaded.
    if (!pageToken && state.ordersNext === undefined) state.ordersNext = page.nextPageToken || "";
    if (pageToken) state.ordersNext = page.nextPageToken || "";
    $("#orders-more").hidden = !state.ordersNext;
    $("#orders-error").textContent = "";
  } catch (error) {
    $("#orders-error").textContent = errorText(error);
  }
  renderOrders();
}

function openOrderStream(lastEventId = "") {
  state.orderStream?.stop();
  const stream = new LiveStream({
    url: () => "/v1/orders/stream",
    headers: () => api.headers(),
    lastEventId,
    onState: (value) => {
      stream.state = value;
      // Opened without an event id to resume from: the list is refetched after the stream is
      // open, so nothing falls between the two (versions decide which copy wins).
      if (value === "open" && !stream.lastEventId) loadOrders();
      renderLink();
    },
    onEvent: (event) => {
      if (event.type !== "order_update") return;
      const update = parseExact(event.data);
      mergeOrder(update.order);
      orderChanged(update);
    },
    onRefused: async (response) => {
      if (response.status === 400 || response.status === 404 || response.status === 422) {
        // The server no longer knows our resume point: start afresh and refetch the list.
        stream.lastEventId = "";
        return "retry";
      }
      return refused(response);
    },
  });
  stream.state = "connecting";
  state.orderStream = stream;
  stream.start();
}

let fundsTimer = 0;
function orderChanged(update) {
  // Blocks, fills and charges change funds and holdings: fetch them again (the server computes money).
  clearTimeout(fundsTimer);
  fundsTimer = setTimeout(() => {
    refreshFunds();
    if (state.route.name === "portfolio") refreshPortfolio();
  }, 250);
  if (update.eventType === "FILLED" && update.order?.status === "FILLED") {
    toast(`${update.order.side} ${update.order.symbol}: filled at ${money(update.order.avgPrice)}.`);
  }
}

function renderOrders() {
  if (state.route.name !== "orders") return;
  const open = state.orderFilter === "open";
  const orders = [...state.orders.values()]
    .filter((o) => OPEN_STATUSES.has(o.status) === open)
    .sort((a, b) => String(b.createTime).localeCompare(String(a.createTime)));
  const body = $("#orders-rows");
  const editing = $(".modify-form", body)?.dataset.order;
  const focused = document.activeElement?.closest?.("#orders-rows") ? document.activeElement.id : "";
  if (editing) {
    // Keep the modify form as the user left it; just refresh the status cells.
    for (const order of orders) {
      const cell = $(`tr[data-order="${CSS.escape(order.orderId)}"] .status`, body);
      if (cell) cell.replaceChildren(statusBadge(order));
    }
    return;
  }
  body.replaceChildren(...orders.map(orderRow));
  $("#orders-empty").hidden = orders.length > 0;
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}

function statusBadge(order) {
  return h("span", { class: `badge s-${order.status.toLowerCase()}` }, words(order.status),
    order.statusReason && order.status === "REJECTED" ? h("span", { class: "why" }, ` — ${order.statusReason}`) : "");
}

function orderRow(order) {
  const price = order.type === "MARKET" ? "market" : [order.limitPrice && money(order.limitPrice), order.stopPrice && `stop ${money(order.stopPrice)}`].filter(Boolean).join(" / ");
  const actions = [];
  if (MODIFIABLE.has(order.status) && order.type !== "MARKET") {
    actions.push(h("button", { type: "button", id: `mod-${order.orderId}`, onclick: () => modifyForm(order) }, "Modify"));
  }
  if (CANCELLABLE.has(order.status)) {
    actions.push(h("button", { type: "button", id: `cancel-${order.orderId}`, class: "danger", onclick: () => cancelOrder(order) }, "Cancel"));
  }
  return h(
    "tr",
    { "data-order": order.orderId },
    h("td", {}, time(order.createTime)),
    h("th", { scope: "row" }, order.symbol),
    h("td", {}, h("span", { class: `side-${order.side.toLowerCase()}` }, order.side === "BUY" ? "Buy" : "Sell")),
    h("td", {}, words(order.type)),
    h("td", { class: "num" }, `${order.filledQuantity} / ${order.quantity}`),
    h("td", { class: "num" }, price),
    h("td", { class: "num" }, money(order.avgPrice)),
    h("td", { class: "status" }, statusBadge(order)),
    h("td", { class: "actions" }, ...actions),
  );
}

const actionKeys = new Map(); // "cancel:<id>" / "modify:<id>:<body>" → key, reused on a retry

function actionKey(name) {
  if (!actionKeys.has(name)) actionKeys.set(name, newKey());
  return actionKeys.get(name);
}

async function cancelOrder(order) {
  const button = $(`#cancel-${CSS.escape(order.orderId)}`);
  if (button) button.disabled = true;
  const name = `cancel:${order.orderId}`;
  try {
    mergeOrder(await api.cancelOrder(order.orderId, actionKey(name)));
    actionKeys.delete(name);
    $("#orders-error").textContent = "";
  } catch (error) {
    if (!(error instanceof NetworkError) && error.status < 500) actionKeys.delete(name);
    $("#orders-error").textContent = `Cancel ${order.symbol}: ${errorText(error)}`;
    if (button) button.disabled = false;
  }
}

function modifyForm(order) {
  const row = $(`#orders-rows tr[data-order="${CSS.escape(order.orderId)}"]`);
  if (!row) return;
  const needsLimit = order.type === "LIMIT" || order.type === "STOP_LIMIT";
  const needsStop = order.type === "STOP" || order.type === "STOP_LIMIT";
  const id = order.orderId;
  const form = h("form", { class: "modify-form inline", "data-order": id, onsubmit: (e) => submitModify(e, order) },
    h("label", { for: `m-qty-${id}` }, "New quantity"),
    h("input", { id: `m-qty-${id}`, name: "quantity", inputmode: "numeric", value: String(order.quantity) }),
    needsLimit && h("label", { for: `m-limit-${id}` }, "New limit price"),
    needsLimit && h("input", { id: `m-limit-${id}`, name: "limitPrice", inputmode: "decimal", value: String(order.limitPrice ?? "") }),
    needsStop && h("label", { for: `m-stop-${id}` }, "New stop price"),
    needsStop && h("input", { id: `m-stop-${id}`, name: "stopPrice", inputmode: "decimal", value: String(order.stopPrice ?? "") }),
    h("button", { type: "submit", class: "primary" }, "Send change"),
    h("button", { type: "button", onclick: () => { form.closest("tr").remove(); renderOrders(); } }, "Close"),
    h("p", { class: "error", role: "alert" }),
  );
  const editRow = h("tr", { class: "edit-row" }, h("td", { colspan: "9" }, form));
  row.after(editRow);
  $(`#m-qty-${CSS.escape(id)}`).focus();
}

async function submitModify(event, order) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = $(".error", form);
  const change = {};
  const quantity = form.elements.quantity.value.trim();
  if (!/^[1-9]\d{0,7}$/.test(quantity)) return (error.textContent = "Quantity must be a whole number of shares.");
  if (Number(quantity) !== order.quantity) change.quantity = Number(quantity);
  for (const field of ["limitPrice", "stopPrice"]) {
    const input = form.elements[field];
    if (!input) continue;
    const value = input.value.trim();
    if (!PRICE_PATTERN.test(value)) return (error.textContent = "Prices look like 1542.35.");
    if (value !== String(order[field] ?? "")) change[field] = value;
  }
  if (!Object.keys(change).length) return (error.textContent = "Nothing to change.");
  const name = `modify:${order.orderId}:${JSON.stringify(change)}`;
  const button = $("button[type=submit]", form);
  button.disabled = true;
  try {
    const changed = await api.modifyOrder(order.orderId, change, actionKey(name));
    actionKeys.delete(name);
    form.closest("tr").remove();
    mergeOrder(changed);
    renderOrders();
  } catch (failure) {
    if (!(failure instanceof NetworkError) && failure.status < 500) actionKeys.delete(name);
    error.textContent = errorText(failure);
    button.disabled = false;
  }
}

// --- portfolio and funds -------------------------------------------------------------------

async function refreshFunds() {
  try {
    const funds = await api.funds();
    $("#f-available").textContent = money(funds.available);
    $("#f-blocked").textContent = money(funds.blocked);
    $("#f-total").textContent = money(funds.total);
    $("#f-dues").textContent = money(funds.dues ?? "0");
  } catch (error) {
    $("#pf-error").textContent = errorText(error);
  }
}

function pnl(value) {
  return value === undefined || value === null ? "—" : changeNode(value);
}

async function refreshPortfolio() {
  try {
    const portfolio = await api.portfolio();
    $("#holdings-rows").replaceChildren(
      ...(portfolio.holdings || []).map((row) =>
        h("tr", { "data-symbol": row.symbol },
          h("th", { scope: "row" }, h("a", { href: `#/symbol/${encodeURIComponent(row.symbol)}` }, row.symbol)),
          h("td", { class: "num qty" }, String(row.quantity)),
          h("td", { class: "num" }, money(row.avgBuyPrice)),
          h("td", { class: "num" }, money(row.lastPrice)),
          h("td", { class: "num" }, money(row.currentValue)),
          h("td", { class: "num" }, pnl(row.unrealizedPnl)))),
    );
    if (!portfolio.holdings?.length) $("#holdings-rows").append(h("tr", {}, h("td", { colspan: "6" }, "No holdings yet.")));
    $("#positions-rows").replaceChildren(
      ...(portfolio.positions || []).map((row) =>
        h("tr", { "data-symbol": row.symbol },
          h("th", { scope: "row" }, row.symbol),
          h("td", {}, row.product),
          h("td", { class: "num qty" }, String(row.netQuantity)),
          h("td", { class: "num" }, money(row.avgPrice)),
          h("td", { class: "num" }, money(row.lastPrice)),
          h("td", { class: "num" }, pnl(row.realizedPnl)),
          h("td", { class: "num" }, pnl(row.unrealizedPnl)))),
    );
    if (!portfolio.positions?.length) $("#positions-rows").append(h("tr", {}, h("td", { colspan: "7" }, "No positions today.")));
    $("#pf-error").textContent = "";
  } catch (error) {
    $("#pf-error").textContent = errorText(error);
  }
}

async function loadLedger(index) {
  const token = state.ledgerTokens[index];
  try {
    const page = await api.ledger(token);
    state.ledgerIndex = index;
    state.ledgerNext = page.nextPageToken || "";
    state.ledgerTokens[index + 1] = state.ledgerNext;
    $("#ledger-rows").replaceChildren(
      ...(page.entries || []).map((entry) =>
        h("tr", {},
          h("td", {}, dateTime(entry.createTime)),
          h("td", {}, words(entry.kind)),
          h("td", {}, entry.account),
          h("td", { class: "num" }, money(entry.amount)),
          h("td", { class: "num" }, money(entry.balanceAfter)),
          h("td", {}, entry.description || ""))),
    );
    $("#ledger-page").textContent = `Page ${index + 1}`;
    $("#ledger-newer").disabled = index === 0;
    $("#ledger-older").disabled = !state.ledgerNext;
  } catch (error) {
    $("#pf-error").textContent = errorText(error);
  }
}

// --- routing ---------------------------------------------------------------------------------

let portfolioTimer = 0;
let quoteTimer = 0;

function route() {
  const [, name = "watchlist", arg = ""] = location.hash.split("/");
  state.route = { name: ["watchlist", "orders", "portfolio", "symbol"].includes(name) ? name : "watchlist", symbol: decodeURIComponent(arg).toUpperCase() };
  if (state.route.name === "symbol" && !/^[A-Z0-9&_-]{1,20}$/.test(state.route.symbol)) state.route.name = "watchlist";
  document.body.dataset.route = state.route.name;
  for (const link of $$("nav a")) {
    if (link.dataset.route === state.route.name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const view = { watchlist: "home", symbol: "symbol", orders: "orders", portfolio: "portfolio" }[state.route.name];
  for (const section of $$(".view")) section.hidden = section.id !== `view-${view}`;
  clearInterval(portfolioTimer);
  clearInterval(quoteTimer);
  if (state.route.name !== "symbol") stopSymbolStreams();
  if (state.route.name === "symbol") {
    showSymbol(state.route.symbol);
    // Best bid and ask are not in the tick stream: read them again every few seconds.
    quoteTimer = setInterval(() => !document.hidden && loadQuotes([state.route.symbol]), 3000);
  } else if (state.route.name === "orders") {
    renderOrders();
  } else if (state.route.name === "portfolio") {
    refreshFunds();
    refreshPortfolio();
    loadLedger(0);
    // Live P&L is the server's figure: read it again every few seconds while on screen.
    portfolioTimer = setInterval(() => !document.hidden && refreshPortfolio(), 3000);
  }
  syncPriceStream();
  const heading = $(`#view-${view} h1`);
  if (route.moved && heading && state.route.name !== "watchlist") {
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  }
  route.moved = true;
}

function errorText(error) {
  if (error instanceof ApiError) return error.message;
  if (error instanceof NetworkError) return "The server could not be reached; check your connection and try again.";
  return describeProblem(null, 0);
}

// --- wiring ----------------------------------------------------------------------------------

function wire() {
  $("#signin-form").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", signOut);
  $("#wl-select").addEventListener("change", (event) => {
    state.watchlistId = event.target.value;
    renderWatchlists();
  });
  $("#wl-new").addEventListener("click", () => openNameForm("new"));
  $("#wl-rename").addEventListener("click", () => openNameForm("rename"));
  $("#wl-delete").addEventListener("click", askDelete);
  $("#wl-confirm-yes").addEventListener("click", deleteWatchlist);
  $("#wl-confirm-no").addEventListener("click", () => {
    $("#wl-confirm").hidden = true;
    $("#wl-delete").focus();
  });
  $("#wl-name-form").addEventListener("submit", saveName);
  $("#wl-name-cancel").addEventListener("click", () => {
    $("#wl-name-form").hidden = true;
  });
  $("#c-interval").addEventListener("change", () => state.route.name === "symbol" && openSymbolStreams(state.route.symbol));
  $("#sym-watch").addEventListener("click", () => addSymbol(state.route.symbol).then(renderQuote));
  combobox($("#search"), $("#search-results"), (symbol) => {
    location.hash = `#/symbol/${encodeURIComponent(symbol)}`;
  });
  combobox($("#wl-add"), $("#wl-add-results"), addSymbol);
  const form = $("#ticket");
  form.addEventListener("input", ticketChanged);
  form.addEventListener("change", ticketChanged);
  form.addEventListener("submit", submitTicket);
  $("#orders-open").addEventListener("click", () => setOrderFilter("open"));
  $("#orders-past").addEventListener("click", () => setOrderFilter("past"));
  $("#orders-more").addEventListener("click", () => loadOrders(state.ordersNext));
  $("#ledger-newer").addEventListener("click", () => loadLedger(Math.max(0, (state.ledgerIndex || 0) - 1)));
  $("#ledger-older").addEventListener("click", () => loadLedger((state.ledgerIndex || 0) + 1));
  window.addEventListener("hashchange", () => !$("#app").hidden && route());
  window.addEventListener("resize", () => state.route.name === "symbol" && renderQuote());
  setInterval(renderLink, 1000);
}

function setOrderFilter(filter) {
  state.orderFilter = filter;
  $("#orders-open").setAttribute("aria-pressed", String(filter === "open"));
  $("#orders-past").setAttribute("aria-pressed", String(filter === "past"));
  renderOrders();
}

wire();
const saved = loadSession();
if (saved) {
  saveSession(saved);
  $("#app").hidden = false;
  if (Date.parse(saved.expiresAt) > Date.now() + 5000) start();
  // The access token ran out while the page was away: renew it before anything is asked.
  else {
    renewTokens().then(() => {
      if (state.session && state.session !== saved && !$("#app").hidden) start();
    });
  }
} else {
  showSignIn("");
}

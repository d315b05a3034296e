// The documented REST API (gateway/openapi.yaml), nothing else. Numbers with a fraction are
// kept as their exact decimal text (money never passes through binary floating point here);
// whole numbers (quantities, versions) become Numbers.

export const API = "/v1";

/** JSON.parse keeping every fractional number as the exact text the server wrote. */
export function parseExact(text) {
  return JSON.parse(text, (key, value, context) => {
    if (typeof value === "number" && context && typeof context.source === "string") {
      return /[.eE]/.test(context.source) ? context.source : value;
    }
    return value;
  });
}

/** An answer that was not 2xx, with its problem+json body (RFC 9457) when there was one. */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(describeProblem(problem, status));
    this.status = status;
    this.problem = problem || {};
    this.reason = this.problem.reason || "";
    this.retryAfter = retryAfter;
  }
}

/** A request that got no answer at all (network down, gateway gone): the outcome is unknown. */
export class NetworkError extends Error {}

const REASONS = {
  INSUFFICIENT_FUNDS: "Not enough funds for this order",
  INSUFFICIENT_HOLDINGS: "You do not hold enough shares to sell",
  UNAUTHENTICATED: "Your session has ended; please sign in again",
  RATE_LIMITED: "Too many requests; wait a moment",
  OUTCOME_UNKNOWN: "No answer in time; the order may or may not be placed",
};

/** A problem in words: its own title and detail, the reason, and which fields are wrong. */
export function describeProblem(problem, status) {
  if (!problem || typeof problem !== "object") return `The server answered ${status}.`;
  const parts = [];
  const known = REASONS[problem.reason];
  if (known) parts.push(known + ".");
  else if (problem.title) parts.push(problem.title + ".");
  if (problem.detail) parts.push(problem.detail.charAt(0).toUpperCase() + problem.detail.slice(1) + ".");
  for (const violation of problem.fieldViolations || []) {
    parts.push(`${violation.field}: ${violation.description}.`);
  }
  if (problem.reason) parts.push(`(${problem.reason})`);
  return parts.join(" ").replace(/\.\./g, ".");
}

export class Api {
  constructor({ onUnauthorized }) {
    this.token = "";
    this.onUnauthorized = onUnauthorized;
  }

  headers(extra = {}) {
    const headers = { Accept: "application/json", ...extra };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    return headers;
  }

  async request(method, path, { body, query, headers, signal } = {}) {
    let url = API + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(query)) {
        if (value !== undefined && value !== null && value !== "") params.set(key, value);
      }
      const text = params.toString();
      if (text) url += "?" + text;
    }
    const token = this.token;
    const init = { method, headers: this.headers(headers), signal, cache: "no-store" };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new NetworkError("The server could not be reached.");
    }
    const text = await response.text();
    let parsed = null;
    if (text) {
      try {
        parsed = parseExact(text);
      } catch {
        parsed = null;
      }
    }
    if (!response.ok) {
      const error = new ApiError(response.status, parsed, Number(response.headers.get("Retry-After")) || 0);
      // A refused login or refresh is answered where it was asked; anything else ends the session.
      if (response.status === 401 && !path.startsWith("/sessions")) this.onUnauthorized(error, token);
      throw error;
    }
    return parsed;
  }

  login(username, password) {
    return this.request("POST", "/sessions", { body: { username, password } });
  }
  /** A new pair of tokens; the refresh token given is spent (a second use ends the session). */
  refresh(refreshToken) {
    return this.request("POST", "/sessions:refresh", { body: { refreshToken } });
  }
  logout() {
    return this.request("DELETE", "/sessions/current");
  }
  listWatchlists() {
    return this.request("GET", "/watchlists", { query: { pageSize: 100 } });
  }
  createWatchlist(name, symbols, key) {
    return this.request("POST", "/watchlists", { body: { name, symbols }, headers: { "Idempotency-Key": key } });
  }
  deleteWatchlist(id) {
    return this.request("DELETE", `/watchlists/${encodeURIComponent(id)}`);
  }
  addSymbols(id, symbols) {
    return this.request("POST", `/watchlists/${encodeURIComponent(id)}/symbol:add`, { body: { symbols } });
  }
  removeSymbols(id, symbols) {
    return this.request("POST", `/watchlists/${encodeURIComponent(id)}/symbol:remove`, { body: { symbols } });
  }
  quotes(symbols) {
    return this.request("GET", "/quotes", { query: { symbols: symbols.join(",") } });
  }
  candles(symbol, interval, pageSize = 60) {
    return this.request("GET", `/instruments/${encodeURIComponent(symbol)}/candles`, { query: { interval, pageSize } });
  }
  depth(symbol) {
    return this.request("GET", `/instruments/${encodeURIComponent(symbol)}/depth`);
  }
  search(q, signal) {
    return this.request("GET", "/instruments:search", { query: { q, pageSize: 8 }, signal });
  }
  placeOrder(order, key) {
    return this.request("POST", "/orders", { body: order, headers: { "Idempotency-Key": key } });
  }
  previewOrder(order) {
    return this.request("POST", "/orders:preview", { body: order });
  }
  listOrders(query) {
    return this.request("GET", "/orders", { query: { pageSize: 100, ...query } });
  }
  cancelOrder(id, key) {
    return this.request("POST", `/orders/${encodeURIComponent(id)}:cancel`, { headers: { "Idempotency-Key": key } });
  }
  modifyOrder(id, change, key) {
    return this.request("POST", `/orders/${encodeURIComponent(id)}:modify`, {
      body: change,
      headers: { "Idempotency-Key": key },
    });
  }
  portfolio() {
    return this.request("GET", "/portfolio");
  }
  funds() {
    return this.request("GET", "/funds");
  }
  ledger(pageToken) {
    return this.request("GET", "/funds/ledger", { query: { pageSize: 20, pageToken } });
  }
}

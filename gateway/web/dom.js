// Small DOM and formatting helpers. Text always goes in as text nodes (never as HTML).

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

/** h("td", {class: "num"}, "12.30") — element with attributes (on* become listeners). */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = value;
    else if (key in element && typeof value !== "string") element[key] = value;
    else element.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** Group the integer part of an exact decimal text in the Indian way: 12,34,567.80. */
export function grouped(text) {
  if (text === undefined || text === null || text === "") return "—";
  const value = String(text);
  const negative = value.startsWith("-");
  const [whole, fraction] = (negative ? value.slice(1) : value).split(".");
  let head = whole;
  let out = "";
  if (head.length > 3) {
    out = "," + head.slice(-3);
    head = head.slice(0, -3);
    while (head.length > 2) {
      out = "," + head.slice(-2) + out;
      head = head.slice(0, -2);
    }
  }
  return (negative ? "-" : "") + head + out + (fraction !== undefined ? "." + fraction : "");
}

/** Money as the server wrote it, with exactly two decimals shown (padding, never rounding). */
export function money(text) {
  if (text === undefined || text === null || text === "") return "—";
  let value = String(text);
  if (!value.includes(".")) value += ".00";
  else if (value.split(".")[1].length === 1) value += "0";
  return grouped(value);
}

/** The direction of an exact decimal text: 1 up, -1 down, 0 flat. */
export function direction(text) {
  if (text === undefined || text === null || text === "") return 0;
  const value = String(text);
  if (value.startsWith("-")) return /[1-9]/.test(value) ? -1 : 0;
  return /[1-9]/.test(value) ? 1 : 0;
}

/** A change with its sign as a symbol and a word for screen readers (never colour alone). */
export function changeNode(change, percent) {
  const dir = direction(change);
  const sign = dir > 0 ? "▲" : dir < 0 ? "▼" : "■";
  const word = dir > 0 ? "up" : dir < 0 ? "down" : "unchanged";
  const abs = (value) => (value === undefined || value === null ? "" : String(value).replace(/^[-+]/, ""));
  const pct = percent !== undefined && percent !== null ? ` (${abs(percent)}%)` : "";
  return h(
    "span",
    { class: `chg ${dir > 0 ? "up" : dir < 0 ? "down" : "flat"}` },
    h("span", { "aria-hidden": "true" }, sign + " "),
    h("span", { class: "sr" }, word + " "),
    change === undefined || change === null ? "—" : money(abs(change)) + pct,
  );
}

export function time(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString([], { hour12: false });
}

export function dateTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString([], { hour12: false });
}

/** An idempotency key; randomUUID needs a secure context, getRandomValues does not. */
export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Tell screen-reader and sighted users something briefly. */
export function toast(message) {
  const box = $("#toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => {
    box.hidden = true;
  }, 5000);
}

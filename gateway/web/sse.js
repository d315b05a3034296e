// Server-Sent Events over fetch(), so the bearer token can travel in a header (EventSource
// cannot send one). Parses text/event-stream (WHATWG HTML "server-sent events") and reconnects
// with backoff, sending Last-Event-ID like EventSource would.

/** Incremental event-stream parser: feed it text, it calls onEvent / onComment / onRetry. */
export class EventStreamParser {
  constructor({ onEvent, onComment = () => {}, onRetry = () => {} }) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.onRetry = onRetry;
    this.buffer = "";
    this.data = [];
    this.type = "";
    this.lastEventId = "";
    this.sawCR = false;
  }

  feed(text) {
    // A CR at the end of one chunk may be the first half of a CRLF split across chunks.
    if (this.sawCR && text.startsWith("\n")) text = text.slice(1);
    this.sawCR = text.endsWith("\r");
    this.buffer += text;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop();
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return this.onComment(line.slice(1).trim());
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.onRetry(Number(value));
  }

  dispatch() {
    const type = this.type || "message";
    this.type = "";
    if (this.data.length === 0) return;
    const data = this.data.join("\n");
    this.data = [];
    this.onEvent({ type, data, lastEventId: this.lastEventId });
  }
}

/**
 * A self-reconnecting stream. options:
 *   url(): the URL to open (called on every attempt); headers(): extra request headers;
 *   onEvent(event); onState("connecting" | "open" | "reconnecting" | "stopped", detail);
 *   onRefused(response): a non-2xx answer; return "retry" to keep trying, anything else stops.
 *   lastEventId: initial id to resume from; silenceMs: no bytes for this long = dead link.
 */
export class LiveStream {
  constructor(options) {
    this.options = { silenceMs: 35000, ...options };
    this.lastEventId = options.lastEventId || "";
    this.retryMs = 1000;
    this.failures = 0;
    this.stopped = false;
    this.controller = null;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.watchdog);
    if (this.controller) this.controller.abort();
    this.options.onState?.("stopped");
  }

  /** Drop the link now and open a new one (e.g. after the session was renewed). */
  restart() {
    this.stop();
    this.failures = 0;
    this.start();
  }

  schedule(delayMs) {
    if (this.stopped) return;
    this.options.onState?.("reconnecting", { inMs: delayMs });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delayMs);
  }

  backoff() {
    // Exponential from the server's retry: hint, capped, with jitter so clients spread out.
    const base = Math.min(30000, this.retryMs * 2 ** Math.min(this.failures, 5));
    this.failures += 1;
    return Math.round(base / 2 + Math.random() * (base / 2));
  }

  kick() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.controller?.abort(), this.options.silenceMs);
  }

  async connect() {
    if (this.stopped) return;
    const controller = new AbortController();
    this.controller = controller;
    this.options.onState?.("connecting");
    const headers = { Accept: "text/event-stream", ...(this.options.headers?.() || {}) };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    let response;
    try {
      this.kick();
      response = await fetch(this.options.url(), { headers, signal: controller.signal, cache: "no-store" });
    } catch {
      clearTimeout(this.watchdog);
      if (controller === this.controller) this.schedule(this.backoff());
      return;
    }
    if (!response.ok) {
      clearTimeout(this.watchdog);
      const verdict = await this.options.onRefused?.(response, this);
      if (verdict === "retry") {
        const after = Number(response.headers.get("Retry-After"));
        this.schedule(after > 0 ? after * 1000 : this.backoff());
      } else if (verdict !== "handled") {
        this.stopped = true;
        this.options.onState?.("stopped", { status: response.status });
      }
      return;
    }
    const parser = new EventStreamParser({
      onEvent: (event) => {
        if (event.lastEventId) this.lastEventId = event.lastEventId;
        this.options.onEvent(event);
      },
      onComment: () => this.options.onBeat?.(),
      onRetry: (ms) => {
        this.retryMs = Math.max(250, ms);
      },
    });
    this.options.onState?.("open");
    this.failures = 0;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.kick();
        this.options.onBeat?.();
        parser.feed(value);
      }
    } catch {
      // Aborted or cut: reconnect below.
    }
    clearTimeout(this.watchdog);
    if (controller === this.controller) this.schedule(this.backoff());
  }
}

"""Server-Sent Events frames (WHATWG HTML §9.2), encoded once and shared by every client.

A frame is bytes: `id:` (only on events a client can replay), `event:`, one `data:` line per
line of payload, and a blank line. Idle price streams get `event: heartbeat` (with the
server's time and the feed's sequence), order streams a comment (`: …`).
"""

from __future__ import annotations

import json

from gateway.domain.jsonmoney import json_number_text

PRICE_TICK = "price_tick"
FEED_STATUS = "feed_status"
HEARTBEAT = "heartbeat"
ORDER_UPDATE = "order_update"
ALERT_FIRED = "alert_fired"
CANDLE = "candle"
DEPTH = "depth"
STREAM_ERROR = "error"


def event(name: str, data: str, *, event_id: str = "") -> bytes:
    if "\n" in name or "\r" in name or "\n" in event_id or "\r" in event_id:
        raise ValueError("SSE event names and ids are single lines")
    parts = []
    if event_id:
        parts.append(f"id: {event_id}\n")
    parts.append(f"event: {name}\n")
    for line in data.splitlines() or [""]:
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode()


def comment(text: str = "") -> bytes:
    return f": {text}\n\n".encode() if text else b":\n\n"


def retry(milliseconds: int) -> bytes:
    """Tells the client how long to wait before reconnecting."""
    return f"retry: {int(milliseconds)}\n\n".encode()


def _number(text: str) -> str:
    return json_number_text(text)


def _time(text: str) -> str:
    return json.dumps(text) if text else "null"


def price_tick(
    symbol: str,
    ltp: str,
    change: str,
    change_pct: str,
    ts: str,
    *,
    bid: str = "",
    bid_qty: int = 0,
    ask: str = "",
    ask_qty: int = 0,
    volume: int = 0,
    sequence: int = 0,
) -> bytes:
    """A `price_tick` frame with the `PriceTick` of openapi.yaml: {"symbol":"INFY","ltp":1542.35,
    "change":12.10,"changePct":0.79,"bid":1542.30,"bidQty":120,"ask":1542.40,"askQty":75,
    "volume":182340,"sequence":1765051501000123,"ts":"…"}.

    Numbers are spliced from the service's decimal text (validated), never via float.
    """
    data = (
        '{"symbol":'
        + json.dumps(symbol)
        + ',"ltp":'
        + _number(ltp)
        + ',"change":'
        + _number(change)
        + ',"changePct":'
        + _number(change_pct)
        + ',"bid":'
        + _number(bid)
        + ',"bidQty":'
        + str(int(bid_qty))
        + ',"ask":'
        + _number(ask)
        + ',"askQty":'
        + str(int(ask_qty))
        + ',"volume":'
        + str(int(volume))
        + ',"sequence":'
        + str(int(sequence))
        + ',"ts":'
        + _time(ts)
        + "}"
    )
    return event(PRICE_TICK, data)


def feed_status_data(state: str, stale_since: str, server_time: str, sequence: int) -> str:
    """The `FeedStatus` of openapi.yaml: {"status":"STALE","staleSince":"…","serverTime":"…",
    "sequence":…}; `staleSince` is null while live."""
    return (
        '{"status":'
        + json.dumps(state)
        + ',"staleSince":'
        + _time(stale_since)
        + ',"serverTime":'
        + _time(server_time)
        + ',"sequence":'
        + str(int(sequence))
        + "}"
    )


def feed_status(state: str, stale_since: str, server_time: str, sequence: int) -> bytes:
    return event(FEED_STATUS, feed_status_data(state, stale_since, server_time, sequence))


def heartbeat(state: str, server_time: str, sequence: int) -> bytes:
    """The `Heartbeat` of openapi.yaml: {"serverTime":"…","sequence":…,"status":"LIVE"}."""
    data = (
        '{"serverTime":'
        + _time(server_time)
        + ',"sequence":'
        + str(int(sequence))
        + ',"status":'
        + json.dumps(state)
        + "}"
    )
    return event(HEARTBEAT, data)

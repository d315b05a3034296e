"""Server-Sent Events frames (WHATWG HTML §9.2), encoded once and shared by every client.

A frame is bytes: `id:` (only on events a client can replay), `event:`, one `data:` line per
line of payload, and a blank line. Comments (`: …`) keep idle connections alive.
"""

from __future__ import annotations

import json

from gateway.domain.jsonmoney import json_number_text

PRICE_TICK = "price_tick"
ORDER_UPDATE = "order_update"
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


def price_tick_data(symbol: str, ltp: str, change: str, change_pct: str, ts: str) -> str:
    """The `PriceTick` of openapi.yaml: {"symbol":"INFY","ltp":1542.35,"change":12.10,"changePct":0.79,"ts":"…"}.

    Numbers are spliced from the service's decimal text (validated), never via float.
    """
    return (
        '{"symbol":'
        + json.dumps(symbol)
        + ',"ltp":'
        + json_number_text(ltp)
        + ',"change":'
        + json_number_text(change)
        + ',"changePct":'
        + json_number_text(change_pct)
        + ',"ts":'
        + (json.dumps(ts) if ts else "null")
        + "}"
    )


def price_tick(symbol: str, ltp: str, change: str, change_pct: str, ts: str) -> bytes:
    return event(PRICE_TICK, price_tick_data(symbol, ltp, change, change_pct, ts))

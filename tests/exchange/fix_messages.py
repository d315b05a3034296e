"""Building the FIX requests a broker sends, as raw tag text (never float fields)."""

from __future__ import annotations

import itertools

from tests.exchange.fix_client import FixClient

_ids = itertools.count(1)
TRANSACT_TIME = "20260117-04:15:30.000"


def next_id(prefix: str = "c") -> str:
    return f"{prefix}{next(_ids)}"


def new_order(
    client: FixClient,
    symbol: str,
    side: str,
    quantity: str,
    *,
    price: str | None = None,
    order_type: str | None = None,
    tif: str = "0",
    account: str = "u1",
    cl_ord_id: str | None = None,
    stop_price: str | None = None,
    max_floor: str | None = None,
) -> str:
    cl_ord_id = cl_ord_id or next_id()
    fields = [
        (11, cl_ord_id),
        (55, symbol),
        (54, side),
        (38, quantity),
        (40, order_type or ("2" if price is not None else "1")),
        (59, tif),
        (60, TRANSACT_TIME),
        (1, account),
    ]
    if price is not None:
        fields.append((44, price))
    if stop_price is not None:
        fields.append((99, stop_price))
    if max_floor is not None:
        fields.append((111, max_floor))
    client.send_raw(fields, "D")
    return cl_ord_id


def cancel(
    client: FixClient, orig_cl_ord_id: str, symbol: str, side: str, *, cl_ord_id: str | None = None
) -> str:
    cl_ord_id = cl_ord_id or next_id("x")
    client.send_raw(
        [(11, cl_ord_id), (41, orig_cl_ord_id), (55, symbol), (54, side), (60, TRANSACT_TIME)], "F"
    )
    return cl_ord_id


def replace(
    client: FixClient,
    orig_cl_ord_id: str,
    symbol: str,
    side: str,
    quantity: str,
    price: str,
    *,
    cl_ord_id: str | None = None,
    max_floor: str | None = None,
) -> str:
    cl_ord_id = cl_ord_id or next_id("r")
    client.send_raw(
        [
            (11, cl_ord_id),
            (41, orig_cl_ord_id),
            (55, symbol),
            (54, side),
            (38, quantity),
            (40, "2"),
            (44, price),
            (59, "0"),
            (60, TRANSACT_TIME),
            *([(111, max_floor)] if max_floor is not None else []),
        ],
        "G",
    )
    return cl_ord_id

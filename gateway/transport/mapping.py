"""Proto ↔ JSON, in one place: the REST representations of the services' messages.

Field names are camelCase, as `openapi.yaml` defines them (`orderId`, `avgPrice`,
`avgBuyPrice`, `investedValue`, `netQuantity`, `symbolsAdded`, `ltp`, `changePct`, `ts`).
Decimals stay `Decimal` (written as exact JSON numbers); absent ones are `null`. Enum values
lose their proto prefix (`SIDE_BUY` → `BUY`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from decimal import Decimal
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from starlette.responses import Response

from brokermesh.funds.v1 import funds_pb2, portfolio_pb2
from brokermesh.marketdata.v1 import alerts_pb2, marketdata_pb2, watchlists_pb2
from brokermesh.orders.v1 import orders_pb2
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from gateway.domain.jsonmoney import decimal_from_json, decimal_or_none
from gateway.domain.problems import problem_from_error
from svc_runtime.decimals import format_decimal
from svc_runtime.errors import ErrorDetails, FieldViolation, InvalidArgument, from_item_status

PRICE_PLACES = 2


# --- small pieces -----------------------------------------------------------------------------
def _dec(message: Message, field: str) -> Decimal | None:
    if not message.HasField(field):
        return None
    return decimal_or_none(getattr(message, field).value)


def _time(message: Message, field: str) -> str | None:
    if not message.HasField(field):
        return None
    value: Timestamp = getattr(message, field)
    return value.ToJsonString()


def _enum_name(enum_type: Any, value: int, prefix: str) -> str | None:
    if value == 0:
        return None
    try:
        return enum_type.Name(value).removeprefix(prefix)
    except ValueError:
        return None


def _enum_value(enum_type: Any, name: str | None, prefix: str) -> int:
    return 0 if name is None else enum_type.Value(prefix + name)


def _proto_decimal(value: Decimal) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=format_decimal(value))


def side_name(value: int) -> str | None:
    return _enum_name(trading_pb2.Side, value, "SIDE_")


def product_name(value: int) -> str | None:
    return _enum_name(trading_pb2.Product, value, "PRODUCT_")


def status_value(name: str) -> int:
    return _enum_value(orders_pb2.OrderStatus, name, "ORDER_STATUS_")


# --- field violations -------------------------------------------------------------------------
# A backend names the field of its proto request (`order.limit_price`); a REST client is told
# the name it sent (`limitPrice`). The order and watchlist bodies are the messages' fields,
# flat; these are the fields that travel elsewhere or under another name.
_REST_FIELDS = {
    "request_id": "Idempotency-Key",
    "order.client_order_id": "Idempotency-Key",
    "watchlist.display_name": "name",
    "statuses": "status",
}
_FLAT_BODIES = ("order.", "watchlist.")
_SNAKE = re.compile(r"_([a-z0-9])")


def rest_field(proto_field: str) -> str:
    """The JSON path (or header) a REST client used for a backend's proto field path."""
    if proto_field in _REST_FIELDS:
        return _REST_FIELDS[proto_field]
    for prefix in _FLAT_BODIES:
        if proto_field.startswith(prefix):
            proto_field = proto_field.removeprefix(prefix)
            break
    return _SNAKE.sub(lambda m: m.group(1).upper(), proto_field)


def rest_details(details: ErrorDetails) -> ErrorDetails:
    """A backend's error details with its field violations named as the REST client knows them."""
    if not details.violations:
        return details
    violations = [FieldViolation(rest_field(v.field), v.description) for v in details.violations]
    return replace(details, violations=violations)


# --- orders -----------------------------------------------------------------------------------
def order_json(order: orders_pb2.Order) -> dict[str, Any]:
    return {
        "orderId": order.order_id,
        "clientId": order.user_id,
        "clientOrderId": order.client_order_id,
        "symbol": order.symbol,
        "side": side_name(order.side),
        "type": _enum_name(trading_pb2.OrderType, order.type, "ORDER_TYPE_"),
        "timeInForce": _enum_name(trading_pb2.TimeInForce, order.time_in_force, "TIME_IN_FORCE_"),
        "product": product_name(order.product),
        "quantity": order.quantity,
        "limitPrice": _dec(order, "limit_price"),
        "stopPrice": _dec(order, "stop_price"),
        "status": _enum_name(orders_pb2.OrderStatus, order.status, "ORDER_STATUS_"),
        "filledQuantity": order.filled_quantity,
        "leavesQuantity": order.leaves_quantity,
        "avgPrice": _dec(order, "average_price"),
        "protectionPrice": _dec(order, "protection_price"),
        "statusReason": order.status_reason,
        "version": order.version,
        "exchangeOrderId": order.exchange_order_id,
        "createTime": _time(order, "create_time"),
        "updateTime": _time(order, "update_time"),
        "expireDate": order.expire_date or None,
        "tag": order.tag or None,
        "displayQuantity": order.display_quantity or None,
        "contingent": _contingent_json(order),
        "leg": _enum_name(orders_pb2.Leg, order.leg, "LEG_") or "SINGLE",
        "parentOrderId": order.parent_order_id or None,
        "ocoGroupId": order.oco_group_id or None,
        "trailingStop": {
            "amount": _dec(order.trailing_stop, "amount"),
            "percent": _dec(order.trailing_stop, "percent"),
        }
        if order.HasField("trailing_stop")
        else None,
    }


def _contingent_json(order: orders_pb2.Order) -> dict[str, Any] | None:
    if not order.HasField("contingent"):
        return None
    terms = order.contingent
    return {
        "kind": _enum_name(orders_pb2.ContingencyKind, terms.kind, "CONTINGENCY_KIND_"),
        "targetPrice": _dec(terms, "target_price"),
        "stopLossPrice": _dec(terms, "stop_loss_price"),
    }


def _prices(
    body: dict[str, Any],
    names: tuple[tuple[str, str], ...],
    violations: list[FieldViolation],
    prefix: str = "",
) -> dict[str, decimal_pb2.Decimal]:
    """The prices of `body` given by JSON name, as protobuf decimals by proto field name; each
    malformed one is added to `violations` (named as the client sent it) and left out."""
    prices: dict[str, decimal_pb2.Decimal] = {}
    for json_name, proto_name in names:
        if body.get(json_name) is None:
            continue
        try:
            value = decimal_from_json(body[json_name], field=prefix + json_name, max_places=PRICE_PLACES)
        except InvalidArgument as error:
            violations.extend(error.violations)
            continue
        prices[proto_name] = _proto_decimal(value)
    return prices


def _contingent_request(
    body: dict[str, Any], violations: list[FieldViolation]
) -> orders_pb2.ContingentTerms | None:
    """The body's `contingent` terms (already checked against the schema's shape)."""
    terms = body.get("contingent")
    if terms is None:
        return None
    message = orders_pb2.ContingentTerms(
        kind=_enum_value(orders_pb2.ContingencyKind, terms["kind"], "CONTINGENCY_KIND_")
    )
    names = (("targetPrice", "target_price"), ("stopLossPrice", "stop_loss_price"))
    for proto_name, price in _prices(terms, names, violations, "contingent.").items():
        getattr(message, proto_name).CopyFrom(price)
    return message


def gtt_json(gtt: orders_pb2.Gtt) -> dict[str, Any]:
    order = gtt.order
    return {
        "gttId": gtt.gtt_id,
        "symbol": order.symbol,
        "triggerPrice": _dec(gtt, "trigger_price"),
        "direction": _enum_name(orders_pb2.GttDirection, gtt.direction, "GTT_DIRECTION_"),
        "side": side_name(order.side),
        "type": _enum_name(trading_pb2.OrderType, order.type, "ORDER_TYPE_"),
        "quantity": order.quantity,
        "limitPrice": _dec(order, "limit_price"),
        "product": product_name(order.product),
        "status": _enum_name(orders_pb2.GttStatus, gtt.status, "GTT_STATUS_"),
        "orderId": gtt.order_id or None,
        "statusReason": gtt.status_reason,
        "createTime": _time(gtt, "create_time"),
        "expireTime": _time(gtt, "expire_time"),
        "triggerTime": _time(gtt, "trigger_time"),
        "triggeredAtPrice": _dec(gtt, "triggered_at_price"),
    }


def create_gtt_request(
    body: dict[str, Any], *, user_id: str, idempotency_key: str
) -> orders_pb2.CreateGttRequest:
    """The gRPC request for a validated body: the order's fields sit beside the trigger's."""
    violations: list[FieldViolation] = []
    prices = _prices(body, (("triggerPrice", "trigger_price"), ("limitPrice", "limit_price")), violations)
    if violations:
        raise InvalidArgument("invalid GTT prices", reason="INVALID_DECIMAL", violations=violations)
    gtt = orders_pb2.Gtt(
        trigger_price=prices.get("trigger_price"),
        order=orders_pb2.Order(
            symbol=body["symbol"].upper(),
            side=_enum_value(trading_pb2.Side, body["side"], "SIDE_"),
            type=_enum_value(trading_pb2.OrderType, body["type"], "ORDER_TYPE_"),
            product=_enum_value(trading_pb2.Product, body.get("product"), "PRODUCT_"),
            quantity=body["quantity"],
            limit_price=prices.get("limit_price"),
        ),
    )
    if body.get("expireTime") is not None:
        gtt.expire_time.FromJsonString(body["expireTime"])
    return orders_pb2.CreateGttRequest(parent=f"users/{user_id}", gtt=gtt, request_id=idempotency_key)


def _trailing_request(
    body: dict[str, Any], violations: list[FieldViolation]
) -> orders_pb2.TrailingStop | None:
    trail = body.get("trailingStop")
    if trail is None:
        return None
    message = orders_pb2.TrailingStop()
    for name in ("amount", "percent"):
        if trail.get(name) is None:
            continue
        try:
            value = decimal_from_json(trail[name], field=f"trailingStop.{name}", max_places=PRICE_PLACES)
        except InvalidArgument as error:
            violations.extend(error.violations)
            continue
        getattr(message, name).CopyFrom(_proto_decimal(value))
    return message


def trade_json(trade: orders_pb2.Trade) -> dict[str, Any]:
    return {
        "tradeId": trade.exec_id,
        "orderId": trade.order_id,
        "symbol": trade.symbol,
        "side": side_name(trade.side),
        "quantity": trade.quantity,
        "price": _dec(trade, "price"),
        "product": product_name(trade.product),
        "executeTime": _time(trade, "execute_time"),
        "tag": trade.tag or None,
    }


def order_event_json(event: orders_pb2.OrderEvent) -> dict[str, Any]:
    return {
        "eventId": event.event_id,
        "eventType": _enum_name(orders_pb2.OrderEventType, event.type, "ORDER_EVENT_TYPE_"),
        "eventTime": _time(event, "event_time"),
        "order": order_json(event.order) if event.HasField("order") else None,
        "trade": trade_json(event.trade) if event.HasField("trade") else None,
    }


def place_order_request(
    body: dict[str, Any], *, user_id: str, idempotency_key: str
) -> orders_pb2.PlaceOrderRequest:
    """The gRPC request for a validated body; the owner is the token's user, never the body's."""
    client_id = body.get("clientId")
    if client_id is not None and client_id != user_id:
        raise InvalidArgument(
            "clientId must be your own user id, or left out",
            reason="CLIENT_ID_MISMATCH",
            field="clientId",
        )
    violations: list[FieldViolation] = []
    prices = _prices(body, (("limitPrice", "limit_price"), ("stopPrice", "stop_price")), violations)
    contingent = _contingent_request(body, violations)
    trailing_stop = _trailing_request(body, violations)
    if violations:
        raise InvalidArgument("invalid order prices", reason="INVALID_DECIMAL", violations=violations)
    order = orders_pb2.Order(
        client_order_id=idempotency_key,
        symbol=body["symbol"].upper(),
        side=_enum_value(trading_pb2.Side, body["side"], "SIDE_"),
        type=_enum_value(trading_pb2.OrderType, body["type"], "ORDER_TYPE_"),
        time_in_force=_enum_value(trading_pb2.TimeInForce, body.get("timeInForce"), "TIME_IN_FORCE_"),
        product=_enum_value(trading_pb2.Product, body.get("product"), "PRODUCT_"),
        quantity=body["quantity"],
        expire_date=body.get("expireDate") or "",
        tag=body.get("tag") or "",
        contingent=contingent,
        trailing_stop=trailing_stop,
        display_quantity=body.get("displayQuantity") or 0,
        **prices,
    )
    return orders_pb2.PlaceOrderRequest(parent=f"users/{user_id}", order=order, request_id=idempotency_key)


def modify_order_request(
    body: dict[str, Any], *, name: str, idempotency_key: str
) -> orders_pb2.ModifyOrderRequest:
    request = orders_pb2.ModifyOrderRequest(name=name, request_id=idempotency_key)
    if body.get("quantity") is not None:
        request.quantity = body["quantity"]
    violations: list[FieldViolation] = []
    for proto_name, price in _prices(
        body, (("limitPrice", "limit_price"), ("stopPrice", "stop_price")), violations
    ).items():
        getattr(request, proto_name).CopyFrom(price)
    if violations:
        raise InvalidArgument("invalid order prices", reason="INVALID_DECIMAL", violations=violations)
    return request


# --- funds and portfolio ----------------------------------------------------------------------
def preview_json(preview: orders_pb2.OrderPreview) -> dict[str, Any]:
    refusal = None
    if preview.HasField("refusal"):
        problem = problem_from_error(from_item_status(preview.refusal))
        refusal = {
            "status": problem.status,
            "reason": problem.reason,
            "detail": problem.detail,
            # The rule's figures (e.g. `required` and `available`), as svc_orders gave them.
            "metadata": dict(preview.refusal.metadata),
        }
    return {
        "acceptable": preview.acceptable,
        "refusal": refusal,
        "blockPrice": _dec(preview, "block_price"),
        "referencePrice": _dec(preview, "reference_price"),
        "blockAmount": _dec(preview, "block_amount"),
        "orderValue": _dec(preview, "order_value"),
        "charges": [{"name": c.name, "amount": decimal_or_none(c.amount.value)} for c in preview.charges],
        "chargesTotal": _dec(preview, "charges_total"),
        "available": _dec(preview, "available"),
        "riskChecks": [
            {
                "rule": c.rule,
                "scope": c.scope,
                "limit": decimal_or_none(c.limit.value),
                "observed": decimal_or_none(c.observed.value),
                "passed": c.passed,
            }
            for c in preview.risk_checks
        ],
    }


def funds_json(funds: funds_pb2.Funds) -> dict[str, Any]:
    return {
        "currency": funds.currency_code or "INR",
        "available": _dec(funds, "available"),
        "blocked": _dec(funds, "blocked"),
        "total": _dec(funds, "total"),
        "dues": _dec(funds, "dues"),
        "updateTime": _time(funds, "update_time"),
    }


def ledger_entry_json(entry: funds_pb2.LedgerEntry) -> dict[str, Any]:
    return {
        "entryId": entry.entry_id,
        "transactionId": entry.transaction_id,
        "account": entry.account,
        "amount": _dec(entry, "amount"),
        "balanceAfter": _dec(entry, "balance_after"),
        "kind": entry.kind,
        "orderId": entry.order_id,
        "execId": entry.exec_id,
        "description": entry.description,
        "createTime": _time(entry, "create_time"),
        "tag": entry.tag or None,
    }


def portfolio_json(portfolio: portfolio_pb2.Portfolio) -> dict[str, Any]:
    return {
        "holdings": [
            {
                "symbol": h.symbol,
                "quantity": h.quantity,
                "blockedQuantity": h.blocked_quantity,
                "avgBuyPrice": _dec(h, "average_buy_price"),
                "investedValue": _dec(h, "invested_value"),
                "lastPrice": _dec(h, "last_price"),
                "currentValue": _dec(h, "current_value"),
                "unrealizedPnl": _dec(h, "unrealized_pnl"),
                "realizedPnl": _dec(h, "realized_pnl"),
                "t1Quantity": h.t1_quantity,
            }
            for h in portfolio.holdings
        ],
        "positions": [
            {
                "symbol": p.symbol,
                "product": product_name(p.product),
                "netQuantity": p.net_quantity,
                "avgPrice": _dec(p, "average_price"),
                "buyQuantity": p.buy_quantity,
                "sellQuantity": p.sell_quantity,
                "buyValue": _dec(p, "buy_value"),
                "sellValue": _dec(p, "sell_value"),
                "lastPrice": _dec(p, "last_price"),
                "realizedPnl": _dec(p, "realized_pnl"),
                "unrealizedPnl": _dec(p, "unrealized_pnl"),
                "tradingDay": p.trading_day,
                "settlementDate": p.settlement_date or None,
                "charges": _dec(p, "charges"),
                "pnlAfterCharges": _dec(p, "pnl_after_charges"),
            }
            for p in portfolio.positions
        ],
        "pnlBasis": portfolio.pnl_basis,
        "dailyRealizedPnl": [
            {"tradingDay": d.trading_day, "realizedPnl": _dec(d, "realized_pnl")}
            for d in portfolio.daily_realized_pnl
        ],
        "pnlIncludesCharges": portfolio.pnl_includes_charges,
    }


# --- market data ------------------------------------------------------------------------------
def quote_json(quote: marketdata_pb2.Quote) -> dict[str, Any]:
    return {
        "symbol": quote.symbol,
        "ltp": _dec(quote, "last_price"),
        "change": _dec(quote, "change"),
        "changePct": _dec(quote, "change_percent"),
        "bid": _dec(quote, "bid_price"),
        "bidQty": quote.bid_quantity,
        "ask": _dec(quote, "ask_price"),
        "askQty": quote.ask_quantity,
        "volume": quote.volume,
        "open": _dec(quote, "open_price"),
        "high": _dec(quote, "high_price"),
        "low": _dec(quote, "low_price"),
        "previousClose": _dec(quote, "previous_close"),
        "ts": _time(quote, "exchange_time"),
        "sequence": quote.sequence,
    }


def instrument_json(instrument: marketdata_pb2.Instrument) -> dict[str, Any]:
    return {
        "symbol": instrument.symbol,
        "companyName": instrument.company_name,
        "sector": instrument.sector,
        "tickSize": _dec(instrument, "tick_size"),
        "lotSize": instrument.lot_size,
        "previousClose": _dec(instrument, "previous_close"),
        "isin": instrument.isin,
    }


# CandleInterval values ↔ the interval names of the REST API.
CANDLE_INTERVALS: dict[str, int] = {
    "1m": marketdata_pb2.CANDLE_INTERVAL_ONE_MINUTE,
    "5m": marketdata_pb2.CANDLE_INTERVAL_FIVE_MINUTES,
    "15m": marketdata_pb2.CANDLE_INTERVAL_FIFTEEN_MINUTES,
    "1h": marketdata_pb2.CANDLE_INTERVAL_ONE_HOUR,
    "1d": marketdata_pb2.CANDLE_INTERVAL_ONE_DAY,
}
_INTERVAL_NAMES = {value: name for name, value in CANDLE_INTERVALS.items()}


def candle_json(candle: marketdata_pb2.Candle) -> dict[str, Any]:
    return {
        "symbol": candle.symbol,
        "interval": _INTERVAL_NAMES.get(candle.interval),
        "startTime": _time(candle, "start_time"),
        "endTime": _time(candle, "end_time"),
        "open": _dec(candle, "open"),
        "high": _dec(candle, "high"),
        "low": _dec(candle, "low"),
        "close": _dec(candle, "close"),
        "volume": candle.volume,
    }


def _levels(levels: Any) -> list[dict[str, Any]]:
    return [{"price": _dec(level, "price"), "quantity": level.quantity} for level in levels]


def depth_json(depth: marketdata_pb2.MarketDepth) -> dict[str, Any]:
    return {
        "symbol": depth.symbol,
        "bids": _levels(depth.bids),
        "asks": _levels(depth.asks),
        "ts": _time(depth, "exchange_time"),
        "sequence": depth.sequence,
    }


def watchlist_json(watchlist: watchlists_pb2.Watchlist) -> dict[str, Any]:
    return {
        "watchlistId": watchlist.watchlist_id,
        "name": watchlist.display_name,
        "watchlistName": watchlist.display_name,
        "symbols": list(watchlist.symbols),
        "createTime": _time(watchlist, "create_time"),
        "updateTime": _time(watchlist, "update_time"),
    }


def symbols_of(body: dict[str, Any]) -> list[str]:
    """Symbols in canonical (upper) case, duplicates removed, order kept."""
    return list(dict.fromkeys(s.upper() for s in body.get("symbols", [])))


def withdrawal_request(
    body: dict[str, Any], *, user_id: str, idempotency_key: str
) -> funds_pb2.CreateWithdrawalRequest:
    amount = decimal_from_json(body["amount"], field="amount", max_places=2)
    return funds_pb2.CreateWithdrawalRequest(
        parent=f"users/{user_id}", amount=_proto_decimal(amount), request_id=idempotency_key
    )


def bank_account_json(account: funds_pb2.BankAccount) -> dict[str, Any]:
    return {"accountNumber": account.account_number, "ifsc": account.ifsc}


def withdrawal_json(w: funds_pb2.Withdrawal) -> dict[str, Any]:
    return {
        "withdrawalId": w.withdrawal_id,
        "amount": _dec(w, "amount"),
        "state": _enum_name(funds_pb2.WithdrawalState, w.state, "WITHDRAWAL_STATE_"),
        "bankAccount": bank_account_json(w.bank_account),
        "idempotencyKey": w.request_id,
        "bankReference": w.bank_reference or None,
        "failure": w.failure or None,
        "createTime": _time(w, "create_time"),
        "updateTime": _time(w, "update_time"),
    }


def document_format(name: str | None) -> int:
    return (
        funds_pb2.DOCUMENT_FORMAT_PDF if (name or "csv").lower() == "pdf" else funds_pb2.DOCUMENT_FORMAT_CSV
    )


def document_response(document: funds_pb2.Document) -> Response:
    """The document as it is, to save under its file name; its totals in a header too, so a
    client can reconcile without parsing the document."""
    totals = ",".join(f"{t.name}={t.amount.value}" for t in document.totals)
    return Response(
        document.content,
        status_code=200,
        media_type=document.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{document.filename}"',
            "Document-Totals": totals,
            "Cache-Control": "no-store",
        },
    )


# --- price alerts -----------------------------------------------------------------------------
_ALERT_CONDITIONS = {
    "PRICE_ABOVE": alerts_pb2.ALERT_CONDITION_PRICE_ABOVE,
    "PRICE_BELOW": alerts_pb2.ALERT_CONDITION_PRICE_BELOW,
    "CHANGE_PERCENT_ABOVE": alerts_pb2.ALERT_CONDITION_CHANGE_PERCENT_ABOVE,
    "CHANGE_PERCENT_BELOW": alerts_pb2.ALERT_CONDITION_CHANGE_PERCENT_BELOW,
}
_ALERT_CONDITION_NAMES = {v: k for k, v in _ALERT_CONDITIONS.items()}
_ALERT_STATES = {alerts_pb2.ALERT_STATE_ACTIVE: "ACTIVE", alerts_pb2.ALERT_STATE_FIRED: "FIRED"}


def alert_request(body: dict[str, Any]) -> alerts_pb2.Alert:
    """The body's alert (its shape already checked against the OpenAPI schema)."""
    threshold = decimal_from_json(body["threshold"], field="threshold", max_places=PRICE_PLACES)
    return alerts_pb2.Alert(
        symbol=str(body["symbol"]).upper(),
        condition=_ALERT_CONDITIONS[body["condition"]],
        threshold=_proto_decimal(threshold),
        note=body.get("note") or "",
    )


def alert_json(alert: alerts_pb2.Alert) -> dict[str, Any]:
    return {
        "alertId": alert.alert_id,
        "symbol": alert.symbol,
        "condition": _ALERT_CONDITION_NAMES.get(alert.condition, "UNSPECIFIED"),
        "threshold": _dec(alert, "threshold"),
        "note": alert.note,
        "state": _ALERT_STATES.get(alert.state, "UNSPECIFIED"),
        "createdAt": _time(alert, "create_time"),
        "firedAt": _time(alert, "fire_time"),
        "firedPrice": _dec(alert, "fired_price"),
    }

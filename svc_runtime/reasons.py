"""The error catalogue: every `reason` a client can receive, defined once.

A reason is the machine-readable word of an error (`google.rpc.ErrorInfo.reason` over gRPC,
`reason` of the problem+json body over REST). Each has one gRPC status, one HTTP status and a
sentence saying what it means. Code raises `svc_runtime.errors` exceptions with these names;
`tests/foundation/test_error_catalogue.py` fails if code raises a reason missing here or with
another status than the one listed, and the `Reason` enum of `gateway/openapi.yaml` is
generated from this table by `brokermesh gen` (and checked for drift by the same test).

A reason with no gRPC status is made by the REST edge itself (routing, media types, body
limits) and never travels between services.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc

C = grpc.StatusCode

# gRPC status → HTTP status, as grpc-gateway maps them, with one deliberate change:
# FAILED_PRECONDITION is 422 (the request was well formed but a business rule refused it),
# so a client can tell "fix your request" (400) from "not now / not with this balance" (422).
HTTP_STATUS_OF_CODE: Mapping[grpc.StatusCode, int] = {
    C.OK: 200,
    C.CANCELLED: 499,
    C.UNKNOWN: 500,
    C.INVALID_ARGUMENT: 400,
    C.DEADLINE_EXCEEDED: 504,
    C.NOT_FOUND: 404,
    C.ALREADY_EXISTS: 409,
    C.PERMISSION_DENIED: 403,
    C.RESOURCE_EXHAUSTED: 429,
    C.FAILED_PRECONDITION: 422,
    C.ABORTED: 409,
    C.OUT_OF_RANGE: 400,
    C.UNIMPLEMENTED: 501,
    C.INTERNAL: 500,
    C.UNAVAILABLE: 503,
    C.DATA_LOSS: 500,
    C.UNAUTHENTICATED: 401,
}


@dataclass(frozen=True)
class Reason:
    name: str
    code: grpc.StatusCode | None  # None: made by the REST edge only
    http: int
    meaning: str


def _rpc(name: str, code: grpc.StatusCode, meaning: str) -> Reason:
    return Reason(name, code, HTTP_STATUS_OF_CODE[code], meaning)


def _rest(name: str, http: int, meaning: str) -> Reason:
    return Reason(name, None, http, meaning)


_ENTRIES = (
    # --- generic: a status with nothing more specific to say ------------------------------
    _rpc("CANCELLED", C.CANCELLED, "The caller cancelled the call."),
    _rpc("UNKNOWN", C.UNKNOWN, "A failure that carried no status of its own."),
    _rpc("INVALID_ARGUMENT", C.INVALID_ARGUMENT, "The request is invalid; the field violations say where."),
    _rpc("DEADLINE_EXCEEDED", C.DEADLINE_EXCEEDED, "The call did not finish in time."),
    _rpc("NOT_FOUND", C.NOT_FOUND, "No such resource of yours."),
    _rpc("ALREADY_EXISTS", C.ALREADY_EXISTS, "The resource exists already."),
    _rpc("PERMISSION_DENIED", C.PERMISSION_DENIED, "The caller is known but may not make this call."),
    _rpc("RESOURCE_EXHAUSTED", C.RESOURCE_EXHAUSTED, "A limit was reached; retry later."),
    _rpc("FAILED_PRECONDITION", C.FAILED_PRECONDITION, "A business rule refused the request."),
    _rpc("ABORTED", C.ABORTED, "A concurrent change got in the way; retry the whole operation."),
    _rpc("OUT_OF_RANGE", C.OUT_OF_RANGE, "A value is past the end of what exists."),
    _rpc("UNIMPLEMENTED", C.UNIMPLEMENTED, "The operation is not implemented."),
    _rpc("INTERNAL", C.INTERNAL, "An internal error; quote the request id when reporting it."),
    _rpc("UNAVAILABLE", C.UNAVAILABLE, "The service is temporarily unavailable; retry shortly."),
    _rpc("DATA_LOSS", C.DATA_LOSS, "Unrecoverable data loss."),
    _rpc("UNAUTHENTICATED", C.UNAUTHENTICATED, "The call carries no valid credentials."),
    _rpc("RATE_LIMITED", C.RESOURCE_EXHAUSTED, "Too many requests; retry after the given delay."),
    # --- requests: names, ids, pages, encodings -------------------------------------------
    _rpc("MALFORMED_REQUEST", C.INVALID_ARGUMENT, "The request bytes are not a valid message."),
    _rpc(
        "INVALID_NAME",
        C.INVALID_ARGUMENT,
        "A resource name, or an id in one, does not follow its pattern (ids: 1–64 letters, digits, '_', '.', ':' or '-').",
    ),
    _rpc("MISSING_REQUEST_ID", C.INVALID_ARGUMENT, "The request id (idempotency key) is required."),
    _rpc("INVALID_REQUEST_ID", C.INVALID_ARGUMENT, "The request id is not 1–128 printable characters."),
    _rpc(
        "REQUEST_ID_REUSED",
        C.ALREADY_EXISTS,
        "The request id (idempotency key) was already used for a different request.",
    ),
    _rpc("INVALID_PAGE_SIZE", C.INVALID_ARGUMENT, "The page size is negative or too large."),
    _rpc("INVALID_PAGE_TOKEN", C.INVALID_ARGUMENT, "The page token is not one this list handed out."),
    _rpc("INVALID_UPDATE_MASK", C.INVALID_ARGUMENT, "The update mask names fields that cannot be updated."),
    _rpc("INVALID_ENUM", C.INVALID_ARGUMENT, "An enumerated field has a value the service does not know."),
    _rpc("INVALID_DECIMAL", C.INVALID_ARGUMENT, "A decimal amount or price is not a valid decimal."),
    _rpc("TOO_PRECISE", C.INVALID_ARGUMENT, "A decimal has more fraction digits than its field allows."),
    _rpc("NOT_POSITIVE", C.INVALID_ARGUMENT, "A quantity, price or amount must be greater than zero."),
    _rpc("ZERO", C.INVALID_ARGUMENT, "A value must not be zero."),
    _rpc("TOO_LARGE", C.INVALID_ARGUMENT, "A quantity, price or amount is above its ceiling."),
    _rpc("TOO_LONG", C.INVALID_ARGUMENT, "A text field is longer than allowed."),
    _rpc("INVALID_DATE", C.INVALID_ARGUMENT, "A date is not YYYY-MM-DD."),
    _rpc("INVALID_BATCH", C.INVALID_ARGUMENT, "A batch is empty, too long or holds a request twice."),
    _rpc("SHUTTING_DOWN", C.UNAVAILABLE, "The server is shutting down; reconnect or retry elsewhere."),
    _rpc("DEPENDENCY_UNAVAILABLE", C.UNAVAILABLE, "A service this call needs is unavailable; retry shortly."),
    _rpc("SERVER_BUSY", C.RESOURCE_EXHAUSTED, "The service is at capacity; retry shortly."),
    # --- sign-in and tokens ---------------------------------------------------------------
    _rpc("INVALID_CREDENTIALS", C.UNAUTHENTICATED, "Wrong username or password."),
    _rpc(
        "INVALID_TOKEN",
        C.UNAUTHENTICATED,
        "The access token or stream ticket is malformed or wrongly signed.",
    ),
    _rpc("TOKEN_EXPIRED", C.UNAUTHENTICATED, "The access token or stream ticket has expired."),
    _rpc("TICKET_ALREADY_USED", C.UNAUTHENTICATED, "A stream ticket is good for one stream only."),
    _rpc("LOGIN_THROTTLED", C.RESOURCE_EXHAUSTED, "Too many failed logins; wait before trying again."),
    _rpc("USERNAME_TAKEN", C.ALREADY_EXISTS, "Another account has this username."),
    _rpc("INVALID_ACCOUNT", C.INVALID_ARGUMENT, "A new account's username, password or details are invalid."),
    _rpc("USER_NOT_FOUND", C.NOT_FOUND, "No such user."),
    _rpc("ACCOUNT_NOT_FOUND", C.FAILED_PRECONDITION, "The user has no trading account."),
    # --- orders -----------------------------------------------------------------------------
    _rpc("MISSING_SYMBOL", C.INVALID_ARGUMENT, "The order has no symbol."),
    _rpc("INVALID_SYMBOL", C.INVALID_ARGUMENT, "A symbol is not well formed."),
    _rpc("UNKNOWN_SYMBOL", C.INVALID_ARGUMENT, "A symbol is not a listed instrument."),
    _rpc("MISSING_SIDE", C.INVALID_ARGUMENT, "The order's side must be BUY or SELL."),
    _rpc("MISSING_TYPE", C.INVALID_ARGUMENT, "The order's type is missing."),
    _rpc("MISSING_LIMIT_PRICE", C.INVALID_ARGUMENT, "This order type needs a limit price."),
    _rpc("MISSING_STOP_PRICE", C.INVALID_ARGUMENT, "This order type needs a stop price."),
    _rpc("UNEXPECTED_LIMIT_PRICE", C.INVALID_ARGUMENT, "This order type takes no limit price."),
    _rpc("UNEXPECTED_STOP_PRICE", C.INVALID_ARGUMENT, "This order type takes no stop price."),
    _rpc(
        "UNSUPPORTED_TIME_IN_FORCE",
        C.INVALID_ARGUMENT,
        "This order type or product does not take this validity (GTC and GTD: LIMIT orders, CNC).",
    ),
    _rpc(
        "INVALID_EXPIRE_DATE",
        C.INVALID_ARGUMENT,
        "A GTD order needs an expire date from today to a year ahead; other validities take none.",
    ),
    _rpc(
        "MISSING_EXIT_PRICE",
        C.INVALID_ARGUMENT,
        "A bracket needs a target and a stop-loss; an OCO a stop-loss.",
    ),
    _rpc(
        "GTT_ORDER_TYPE", C.INVALID_ARGUMENT, "A GTT places a MARKET or LIMIT order without contingent terms."
    ),
    _rpc(
        "GTT_TRIGGER_AT_MARKET",
        C.INVALID_ARGUMENT,
        "The trigger equals the market price: place the order itself.",
    ),
    _rpc("GTT_EXPIRY_INVALID", C.INVALID_ARGUMENT, "A GTT expires in the future and at most a year away."),
    _rpc("MISSING_TRIGGER_PRICE", C.INVALID_ARGUMENT, "A GTT needs a trigger price."),
    _rpc("TRAIL_NOT_ALLOWED", C.INVALID_ARGUMENT, "Only a STOP order, not a contingent one, can trail."),
    _rpc(
        "TRAIL_AMBIGUOUS", C.INVALID_ARGUMENT, "A trailing stop trails by an amount or a percent, not both."
    ),
    _rpc("TRAIL_OUT_OF_RANGE", C.INVALID_ARGUMENT, "A trailing percent is above 0 and at most 50."),
    _rpc(
        "DISPLAY_QUANTITY_NOT_ALLOWED",
        C.INVALID_ARGUMENT,
        "Only a LIMIT order that can rest (DAY, GTC or GTD), and not a contingent one, can show less than its quantity.",
    ),
    _rpc(
        "DISPLAY_QUANTITY_OUT_OF_RANGE",
        C.INVALID_ARGUMENT,
        "A display quantity is in lots, at least 10 % of the order's quantity and less than it.",
    ),
    _rpc("UNEXPECTED_EXIT_PRICE", C.INVALID_ARGUMENT, "This order takes no such exit price."),
    _rpc(
        "EXIT_PRICES_OUT_OF_ORDER",
        C.INVALID_ARGUMENT,
        "The stop-loss must be below the entry's limit, and the limit below the target.",
    ),
    _rpc(
        "CONTINGENT_TERMS_INVALID",
        C.INVALID_ARGUMENT,
        "A bracket's entry is a BUY MARKET or LIMIT order; an OCO is a SELL LIMIT order.",
    ),
    _rpc(
        "LIMIT_BELOW_STOP", C.INVALID_ARGUMENT, "A BUY stop-limit order needs its limit at or above its stop."
    ),
    _rpc(
        "LIMIT_ABOVE_STOP",
        C.INVALID_ARGUMENT,
        "A SELL stop-limit order needs its limit at or below its stop.",
    ),
    _rpc("PRICE_NOT_ON_TICK", C.INVALID_ARGUMENT, "A price is not a multiple of the instrument's tick size."),
    _rpc(
        "QUANTITY_NOT_IN_LOTS",
        C.INVALID_ARGUMENT,
        "A quantity is not a multiple of the instrument's lot size.",
    ),
    _rpc("QUANTITY_LIMIT", C.INVALID_ARGUMENT, "The order's quantity is above the per-order limit."),
    _rpc("ORDER_VALUE_LIMIT", C.INVALID_ARGUMENT, "The order's value is above the per-order limit."),
    _rpc(
        "OPEN_ORDERS_LIMIT",
        C.FAILED_PRECONDITION,
        "The user has as many working orders as their limit allows; metadata: rule, scope, limit, observed.",
    ),
    _rpc(
        "POSITION_LIMIT",
        C.FAILED_PRECONDITION,
        "The order would take the symbol's position past its limit; metadata: rule, scope, limit, observed.",
    ),
    _rpc(
        "DAILY_LOSS_LIMIT",
        C.FAILED_PRECONDITION,
        "Today's loss has reached its limit: no new orders; metadata: rule, scope, limit, observed.",
    ),
    _rpc("PRICE_OUTSIDE_COLLAR", C.INVALID_ARGUMENT, "A price is too far from the reference price."),
    _rpc("STOP_PRICE_WRONG_SIDE", C.INVALID_ARGUMENT, "A stop price is on the wrong side of the last price."),
    _rpc(
        "NO_REFERENCE_PRICE", C.FAILED_PRECONDITION, "No last price or close is known: place a LIMIT order."
    ),
    _rpc("TRADING_HALTED", C.FAILED_PRECONDITION, "The kill switch is on: no new orders."),
    _rpc("SYMBOL_HALTED", C.FAILED_PRECONDITION, "Trading in this symbol is halted."),
    _rpc(
        "ORDER_RATE_LIMITED", C.RESOURCE_EXHAUSTED, "Too many orders per second; retry after the given delay."
    ),
    _rpc("CLIENT_ID_MISMATCH", C.INVALID_ARGUMENT, "clientId must be the caller's own user id, or left out."),
    _rpc("IDEMPOTENCY_KEY_MISMATCH", C.INVALID_ARGUMENT, "Idempotency-Key and clientOrderId differ."),
    _rpc("ORDER_NOT_FOUND", C.NOT_FOUND, "No such order of yours."),
    _rpc("ORDER_NOT_PENDING", C.FAILED_PRECONDITION, "The order is no longer waiting to be accepted."),
    _rpc("ORDER_NOT_CANCELLABLE", C.FAILED_PRECONDITION, "The order is finished or cannot be cancelled now."),
    _rpc("ORDER_NOT_MODIFIABLE", C.FAILED_PRECONDITION, "The order is finished or cannot be modified now."),
    _rpc("ORDER_BEING_ACCEPTED", C.ABORTED, "The order is still being accepted; retry in a moment."),
    _rpc("GTT_NOT_FOUND", C.NOT_FOUND, "No such GTT."),
    _rpc("GTT_NOT_ACTIVE", C.FAILED_PRECONDITION, "The GTT already fired, lapsed or was cancelled."),
    _rpc(
        "CONTINGENT_QUANTITY_FIXED",
        C.FAILED_PRECONDITION,
        "An order of a bracket or OCO keeps its quantity; its prices can change.",
    ),
    _rpc("NO_CHANGE", C.INVALID_ARGUMENT, "The modification changes nothing."),
    _rpc("QUANTITY_BELOW_FILLED", C.INVALID_ARGUMENT, "A new quantity must exceed what is already filled."),
    _rpc("CONCURRENT_MODIFICATION", C.ABORTED, "The resource changed concurrently; retry."),
    _rpc("RETRY", C.ABORTED, "A concurrent attempt with this request id just failed; retry."),
    _rpc(
        "UNKNOWN_EVENT", C.INVALID_ARGUMENT, "The resume point is not an event of this user, or has expired."
    ),
    _rpc(
        "STREAM_FELL_BEHIND",
        C.RESOURCE_EXHAUSTED,
        "The stream fell behind and was closed; resume from the last event.",
    ),
    _rpc(
        "OUTCOME_UNKNOWN",
        C.DEADLINE_EXCEEDED,
        "The outcome is unknown: retry with the same key, or look it up.",
    ),
    # --- funds and holdings ---------------------------------------------------------------
    _rpc(
        "INSUFFICIENT_FUNDS",
        C.FAILED_PRECONDITION,
        "The available cash does not cover the order or withdrawal.",
    ),
    _rpc("INSUFFICIENT_HOLDINGS", C.FAILED_PRECONDITION, "The free shares do not cover the sell."),
    _rpc("HOLDING_NOT_FOUND", C.NOT_FOUND, "No holding of this symbol."),
    _rpc("BLOCK_NOT_FOUND", C.NOT_FOUND, "No funds block for this order."),
    _rpc("BLOCK_CLOSED", C.FAILED_PRECONDITION, "The order's block is closed; nothing was changed."),
    _rpc("BLOCK_TERMS_DIFFER", C.ALREADY_EXISTS, "The order already has a block with other terms."),
    _rpc("INVALID_REASON", C.INVALID_ARGUMENT, "A release reason is not an upper-case word."),
    _rpc("INVALID_PRODUCT", C.INVALID_ARGUMENT, "The product must be CNC or INTRADAY."),
    _rpc("INVALID_STATE", C.INVALID_ARGUMENT, "Not a block state."),
    # --- withdrawals and statements ---------------------------------------------------------
    _rpc(
        "INVALID_BANK_ACCOUNT",
        C.INVALID_ARGUMENT,
        "A bank account is not 9–18 digits with an IFSC such as HDFC0001234.",
    ),
    _rpc(
        "NO_BANK_ACCOUNT",
        C.FAILED_PRECONDITION,
        "The user has no registered bank account to withdraw to.",
    ),
    _rpc("WITHDRAWAL_NOT_FOUND", C.NOT_FOUND, "No such withdrawal."),
    _rpc(
        "INVALID_TAG",
        C.INVALID_ARGUMENT,
        "A tag is not 1–20 letters, digits, '_', '.', ':' or '-' starting with a letter or digit.",
    ),
    _rpc("INVALID_DATE_RANGE", C.INVALID_ARGUMENT, "A date range is missing, reversed or too long."),
    # --- prices and watchlists ------------------------------------------------------------
    _rpc("INSTRUMENT_NOT_FOUND", C.NOT_FOUND, "No such instrument."),
    _rpc(
        "INSTRUMENTS_NOT_LOADED",
        C.UNAVAILABLE,
        "The instrument master has not been received yet; retry shortly.",
    ),
    _rpc("TOO_MANY_SYMBOLS", C.INVALID_ARGUMENT, "A stream or request names more symbols than allowed."),
    _rpc("TOO_MANY_STREAMS", C.RESOURCE_EXHAUSTED, "Too many streams open; close one or retry later."),
    _rpc("SLOW_CONSUMER", C.RESOURCE_EXHAUSTED, "The client did not read fast enough and was disconnected."),
    _rpc("WATCHLIST_NOT_FOUND", C.NOT_FOUND, "No such watchlist of yours."),
    _rpc("WATCHLIST_LIMIT", C.FAILED_PRECONDITION, "The user has as many watchlists as allowed."),
    _rpc("WATCHLIST_FULL", C.FAILED_PRECONDITION, "The watchlist holds as many symbols as allowed."),
    _rpc("EMPTY_WATCHLIST", C.INVALID_ARGUMENT, "The watchlist has no symbols to stream."),
    _rpc("ALERT_NOT_FOUND", C.NOT_FOUND, "No such price alert of yours."),
    _rpc("ALERT_LIMIT", C.FAILED_PRECONDITION, "The user has as many price alerts as allowed."),
    _rpc("EMPTY_PORTFOLIO", C.INVALID_ARGUMENT, "The portfolio holds no symbols to stream."),
    # --- execution and the exchange -------------------------------------------------------
    _rpc(
        "STANDBY",
        C.UNAVAILABLE,
        "This replica does not hold the exchange session the call needs; another does.",
    ),
    _rpc("FIX_LOGGED_OUT", C.UNAVAILABLE, "The FIX session to the exchange is down."),
    _rpc(
        "FIX_SEND_UNCONFIRMED",
        C.UNAVAILABLE,
        "Commands were not confirmed on the FIX session; they will be retried.",
    ),
    _rpc(
        "FIX_STATUS_UNKNOWN", C.UNAVAILABLE, "It cannot be told yet whether the order reached the exchange."
    ),
    _rpc("EXCHANGE_TIMEOUT", C.DEADLINE_EXCEEDED, "The exchange did not answer in time."),
    _rpc(
        "STATUS_REQUEST_REFUSED",
        C.FAILED_PRECONDITION,
        "The exchange refused status requests about the order.",
    ),
    _rpc("ORDER_NOT_RECEIVED", C.NOT_FOUND, "The order never reached the executor; it will not be sent."),
    _rpc("ORDER_OVER", C.FAILED_PRECONDITION, "The order is already over at the executor: nothing to end."),
    _rpc(
        "VENUE_HOLDS_ORDER",
        C.FAILED_PRECONDITION,
        "The venue holds the order: cancel it instead of ending it.",
    ),
    _rpc("UNKNOWN_SESSION", C.NOT_FOUND, "No such FIX session at the simulated exchange."),
    # --- made by the REST edge only ------------------------------------------------------
    _rest("ERROR", 400, "An HTTP-level failure with no more specific reason."),
    _rest("METHOD_NOT_ALLOWED", 405, "The path does not take this method."),
    _rest("NOT_ACCEPTABLE", 406, "The response cannot be given in an accepted media type."),
    _rest("CONFLICT", 409, "The request conflicts with the resource's state."),
    _rest("LENGTH_REQUIRED", 411, "A body must be sent with a Content-Length."),
    _rest("PAYLOAD_TOO_LARGE", 413, "The body is larger than allowed."),
    _rest("UNSUPPORTED_MEDIA_TYPE", 415, "The body is not application/json."),
    _rest("MALFORMED_JSON", 400, "The body is not UTF-8 JSON."),
    _rest("JSON_LIMIT_EXCEEDED", 400, "The body is outside the JSON limits (depth, sizes, duplicates)."),
    _rest("CORS_ORIGIN_FORBIDDEN", 403, "This origin may not call the API from a browser."),
    _rest(
        "CORS_PREFLIGHT_REFUSED",
        400,
        "A CORS preflight from an origin or with a method or header not allowed.",
    ),
    _rest("INVALID_HEADER", 400, "A header the API reads is not visible ASCII text."),
    _rest("AUTH_THROTTLED", 429, "Too many requests from this address failed authentication; slow down."),
)

CATALOGUE: Mapping[str, Reason] = {entry.name: entry for entry in _ENTRIES}

# Reasons that used to be spelled two ways, and the one spelling kept.
MERGED: Mapping[str, str] = {
    "IDEMPOTENCY_KEY_REUSED": "REQUEST_ID_REUSED",
    "REQUEST_ID_REQUIRED": "MISSING_REQUEST_ID",
    "CONCURRENT_CHANGE": "CONCURRENT_MODIFICATION",
    "BAD_CREDENTIALS": "INVALID_CREDENTIALS",
    "QUANTITY_TOO_LARGE": "QUANTITY_LIMIT",
    "UNKNOWN_SYMBOLS": "UNKNOWN_SYMBOL",
}


def of(name: str) -> Reason:
    """The catalogue entry of a reason; KeyError for a reason that is not in it."""
    return CATALOGUE[name]


# --- the OpenAPI `Reason` schema ------------------------------------------------------------
OPENAPI_BEGIN = "    # BEGIN Reason: generated from svc_runtime/reasons.py by `brokermesh gen`"
OPENAPI_END = "    # END Reason"


def openapi_schema() -> str:
    """The `Reason` schema block of openapi.yaml, markers included."""
    lines = [
        OPENAPI_BEGIN,
        "    Reason:",
        "      type: string",
        "      description: |",
        "        The machine-readable reason of a problem: one of these, with its HTTP status and the",
        "        gRPC status the same error has when a service is called directly.",
        "",
    ]
    for entry in sorted(CATALOGUE.values(), key=lambda r: r.name):
        grpc_status = f"gRPC {entry.code.name}" if entry.code is not None else "REST only"
        lines.append(f"        - `{entry.name}` (HTTP {entry.http}, {grpc_status}): {entry.meaning}")
    lines.append("      enum:")
    lines += [f"        - {name}" for name in sorted(CATALOGUE)]
    lines.append(OPENAPI_END)
    return "\n".join(lines) + "\n"


def with_openapi_schema(spec_text: str) -> str:
    """`spec_text` (openapi.yaml) with its generated `Reason` block replaced by the current one."""
    begin = spec_text.index(OPENAPI_BEGIN)
    end = spec_text.index(OPENAPI_END, begin) + len(OPENAPI_END) + 1
    return spec_text[:begin] + openapi_schema() + spec_text[end:]

"""Prometheus metrics an operator of the OMS looks at."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ORDERS_PLACED = Counter("orders_placed_total", "Orders accepted (funds blocked, sent on)", ["side", "type"])
ORDERS_REFUSED = Counter("orders_refused_total", "Place requests refused, by reason", ["reason"])
PLACE_REPLAYS = Counter("orders_place_replays_total", "Place requests answered from an earlier attempt")
PLACE_SECONDS = Histogram(
    "orders_place_seconds",
    "PlaceOrder latency inside the OMS (validation, risk, funds block, commit)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PLACE_STAGE_SECONDS = Histogram(
    "orders_place_stage_seconds",
    "Where PlaceOrder spends its time: checks (validation, instrument, risk), reserve (the "
    "first commit), lock (the order row), funds (svc_funds' block), accept (the second commit)",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
TRANSITIONS = Counter(
    "orders_transitions_total", "Order changes, by trigger and resulting status", ["trigger", "status"]
)
REPORTS = Counter("orders_exec_reports_total", "Execution reports consumed, by outcome", ["outcome"])
REPORT_ANOMALIES = Counter("orders_exec_report_anomalies_total", "Reports that were odd but tolerated")
SWEPT = Counter("orders_swept_total", "Stuck orders resolved by the sweeper, by outcome", ["outcome"])
FUNDS_ACTIONS = Counter(
    "orders_funds_actions_total", "Deferred svc_funds calls, by kind and result", ["kind", "result"]
)
STREAMS = Gauge("orders_update_streams", "Open StreamOrderUpdates streams")
STREAMS_DROPPED = Counter(
    "orders_update_streams_dropped_total", "Streams ended because the client fell behind"
)
SQUARE_OFF_ORDERS = Counter(
    "orders_square_off_orders_total", "Market orders the broker placed to close INTRADAY positions"
)
SQUARE_OFF_FAILURES = Counter(
    "orders_square_off_failures_total",
    "INTRADAY positions the square-off could not close (refused orders, positions left at the close)",
)
KILL_SWITCH_CANCELS = Counter(
    "orders_kill_switch_cancels_total",
    "Working orders a kill switch asked to cancel (asked) or could not (refused, by the reason logged)",
    ["outcome"],
)
CONTINGENT = Counter(
    "orders_contingent_total",
    "Contingent-order steps: exits created, legs sent or rejected, OCO siblings withdrawn",
    ["step"],
)
OCO_BOTH_FILLED = Counter(
    "orders_oco_both_filled_total",
    "OCO groups (brackets' exits included) where a second leg traded: the exchange filled it "
    "before the broker's cancel reached it, so more shares were sold than the group blocked",
)

"""Prometheus metrics of the exchange simulator: what an operator watches."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ORDERS_RECEIVED = Counter(
    "exchange_requests_total", "Order-entry requests by kind and outcome", ["request", "result"]
)
REPORTS_SENT = Counter(
    "exchange_execution_reports_total", "Execution reports sent, by ExecType", ["exec_type"]
)
TRADES = Counter("exchange_trades_total", "Trades matched (every participant)")
ENGINE_SECONDS = Histogram(
    "exchange_engine_command_seconds",
    "Time the matching engine spends on one command",
    ["command"],
    buckets=(5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2),
)
SESSIONS_LOGGED_ON = Gauge("exchange_fix_sessions_logged_on", "FIX sessions logged on", ["session"])
MD_MESSAGES = Counter("exchange_market_data_messages_total", "Market data messages sent", ["msg_type"])
MD_ENTRIES = Counter("exchange_market_data_entries_total", "Market data entries sent")
HALTED = Gauge("exchange_market_halted", "1 while a market-wide halt is in force")
CIRCUIT_LEVEL = Gauge("exchange_circuit_breaker_level", "Highest circuit-breaker level hit today")
LIVE_ORDERS = Gauge("exchange_live_orders", "Orders resting or waiting for a trigger (every participant)")
JOURNAL_SYNC_SECONDS = Histogram(
    "exchange_journal_sync_seconds",
    "Writing and fsyncing one batch of order changes to the journal, before its reports leave",
    buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5),
)

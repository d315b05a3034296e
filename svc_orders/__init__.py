"""svc_orders — the Order Management Service (OMS).

It owns orders, their fills (trades), order events, idempotency keys, the per-user order
rate, the trading controls (kill switch, halted symbols) and the append-only audit trail,
all in the PostgreSQL schema `orders`. It places orders (validation, pre-trade risk, funds
blocked through svc_funds, then an order command through the outbox to svc_exec), follows
them through the exchange's execution reports with one explicit state machine, and streams
every change to clients.
"""

"""svc_marketdata — the Price Tracker Service.

Owns the exchange market-data session (FIX initiator `BROKER_MD` → `EXCHANGE`), the
instrument master (PostgreSQL schema `marketdata`, refreshed from the exchange's SecurityList),
the in-memory last-value quote cache, tick publication on core NATS (`TickBatch` per shard,
plus the latest quotes in a KV bucket), conflated gRPC quote streams, instrument search, and
users' watchlists (NATS KV).
"""

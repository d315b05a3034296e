"""PostgreSQL, NATS (core, KV) and FIX adapters."""

"""PostgreSQL, NATS and FIX adapters."""

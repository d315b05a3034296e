"""Use cases over ports: the batching ledger engine, accounts, queries, portfolio, audit."""

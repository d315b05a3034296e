"""svc_funds — the Funds Service: the legal source of truth for a user's money and shares.

It owns, in PostgreSQL schema `funds`:
- accounts (users, salted password hashes);
- the ledger journal: immutable double-entry transactions of cash and shares, each entry with
  the order / execution / request that caused it and the account's balance after it;
- the balances that the journal materializes (available, blocked and owed cash; free, blocked
  and owed shares; the house accounts), which the journal can always rebuild;
- blocks: cash or shares set aside for one working order, keyed by the order id;
- the portfolio: fills, today's positions, settled holdings and the end-of-day runs.

It settles fills exactly once from the execution reports on JetStream, serves AccountService,
FundsService and PortfolioService over gRPC, and checks its own invariants (I1–I4, docs/architecture.md §5).
"""

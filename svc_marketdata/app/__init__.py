"""Use cases over ports: the market-data feed and queries, quote streams, watchlists."""

"""Pure market-data rules: quotes, conflation, instruments and search, watchlists."""

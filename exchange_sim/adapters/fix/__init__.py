"""The FIX 4.4 acceptor (quickfix): sessions BROKER (order entry) and BROKER_MD (market data)."""

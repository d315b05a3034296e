"""The simulated stock exchange (NSE-like): a FIX 4.4 acceptor for order entry and market data,
a price-time matching engine per symbol, market-maker and noise-trader agents around a
random-walk fair price, an instrument master, trading hours, halts and market-wide circuit
breakers, and an admin gRPC API for operators and tests.

It owns only in-memory state (order books, the day's orders) plus its FIX message stores;
a real venue replaces it by configuration alone.
"""

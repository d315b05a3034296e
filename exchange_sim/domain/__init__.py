"""Pure exchange logic: instruments, order books and matching, liquidity agents, market data,
trading hours and circuit breakers. No I/O, no asyncio, no clocks: callers pass time in."""

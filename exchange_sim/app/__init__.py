"""Use cases of the exchange: order entry, market data, agents, halts and scenarios, over ports
that the FIX and gRPC adapters implement."""

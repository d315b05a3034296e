"""PostgreSQL stores, the execution-report consumer and the market-data client."""

"""PostgreSQL, NATS and gRPC-client implementations of the application's ports."""

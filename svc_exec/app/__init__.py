"""Use cases over ports: send commands, publish reports, reconcile with the exchange."""

"""Use cases of the edge over ports: login, the live-price hub."""

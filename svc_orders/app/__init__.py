"""Use cases of the OMS over ports: placing, cancelling and modifying orders, applying
execution reports, sweeping stuck orders, reads, streams and the invariant check."""

"""Pure order-executor logic: commands, reports, the per-order view and FIX sequence progress."""

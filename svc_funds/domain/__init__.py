"""Pure ledger, charges and portfolio logic: no I/O, no asyncio."""

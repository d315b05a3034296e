"""Pure gateway logic: error mapping, exact JSON money, SSE frames, conflation, limits,
tokens. No I/O and no asyncio."""

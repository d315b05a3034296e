"""Pure order logic: the order model, validation, pre-trade risk and the state machine.

Nothing here does I/O or touches asyncio; everything is unit-tested in microseconds.
"""

"""Counting the statements a store runs on the real PostgreSQL."""

from __future__ import annotations

import asyncpg


class Statements:
    """Every statement the pool's connections run (asyncpg's query logger)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def watch(self, connection: asyncpg.Connection) -> None:
        connection.add_query_logger(lambda query: self.texts.append(query.query))

    def writes(self) -> list[str]:
        # Not asyncpg's own look-ups of the types a statement uses (once per connection).
        return [
            t
            for t in self.texts
            if t.lstrip().upper().startswith(("WITH", "UPDATE", "INSERT")) and "typeinfo_tree" not in t
        ]

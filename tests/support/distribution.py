"""Which statements would cross the distribution keys of docs/deployment.md ("Partitioning
by user"): a statement that reaches a distributed table without saying which user's rows
(an equality on the key, or the key among an INSERT's columns) would have to visit every
partition. Read from the statements' text as pg_stat_statements records them."""

from __future__ import annotations

import re

# Tables distributed by user, by schema, and their key. Everything else in these schemas is
# a reference table (copied to every node) or a queue local to each node (the outbox).
DISTRIBUTED = {
    "orders": {
        table: "user_id"
        for table in (
            "orders",
            "trades",
            "order_events",
            "audit_log",
            "funds_actions",
            "order_rate",
            "unmatched_reports",
            "exec_reports",
            "order_requests",
        )
    },
    "funds": {
        table: "user_id"
        for table in (
            "accounts",
            "cash_balances",
            "share_balances",
            "blocks",
            "requests",
            "fills",
            "positions",
            "settled_positions",
            "holdings",
            "entries",
            "journal",
            "parked_reports",
        )
    },
}

_REFERENCE = re.compile(r"\b(FROM|JOIN|UPDATE|INTO)\s+(?:ONLY\s+)?(?:\"?\w+\"?\.)?\"?(\w+)\"?", re.IGNORECASE)


def _normal(query: str) -> str:
    return " ".join(query.split())


def crossing_tables(query: str, keys: dict[str, str]) -> set[str]:
    """The distributed tables `query` reaches without naming the user."""
    text = _normal(query)
    crossing = set()
    for match in _REFERENCE.finditer(text):
        verb, table = match.group(1).upper(), match.group(2)
        key = keys.get(table)
        if key is None:
            continue
        if verb == "INTO":
            columns = re.match(r"\s*(?:AS\s+\w+\s*)?\(([^)]*)\)", text[match.end() :], re.IGNORECASE)
            if columns and key in [c.strip() for c in columns.group(1).split(",")]:
                continue
        # An equality as written, or as PostgreSQL writes its own foreign-key checks
        # (`"user_id" OPERATOR(pg_catalog.=) $1`).
        elif re.search(
            rf"\b(?:\w+\.)?\"?{key}\"?\s*(?:=|IN\b|OPERATOR\(pg_catalog\.=\))", text, re.IGNORECASE
        ):
            continue
        crossing.add(table)
    return crossing

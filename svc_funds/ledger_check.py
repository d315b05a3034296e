"""`python -m svc_funds.ledger_check`: rebuild every balance from the ledger journal, compare
it with the materialized balances, and check the other invariants (I1–I4, docs/architecture.md §5) across
all users. Prints every violation and exits 1 if there is any, 0 if the ledger is sound.

It reads the database directly (BROKERMESH_DATABASE_URL, or --database-url), from one
consistent snapshot, so it works with svc_funds running or not. With --target it asks a
running svc_funds (FundsService.CheckInvariants) instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from svc_funds.app.audit import AuditApp, AuditResult
from svc_funds.domain.invariants import Violation
from svc_runtime import config


async def check_database(database_url: str) -> AuditResult:
    from svc_funds.adapters.pg_audit import PgAuditStore
    from svc_funds.main import SCHEMA
    from svc_runtime import db

    pool = await db.create_pool(database_url, SCHEMA, min_size=1, max_size=1)
    try:
        return await AuditApp(PgAuditStore(pool)).check()
    finally:
        await pool.close()


async def check_service(target: str, data_dir: Path) -> AuditResult:
    """Through a running svc_funds, as the stack's read-only operator (`auditor`)."""
    from brokermesh.funds.v1 import funds_pb2, funds_pb2_grpc
    from svc_runtime import auth
    from svc_runtime.grpc_client import channel

    signer = auth.operator_signer(auth.load_credentials(data_dir).operator("auditor"))
    async with channel(target, signer=signer) as ch:
        reply = await funds_pb2_grpc.FundsServiceStub(ch).CheckInvariants(
            funds_pb2.CheckInvariantsRequest(), timeout=120
        )
    return AuditResult(
        [Violation(v.invariant, v.user_id, v.detail) for v in reply.violations], reply.accounts_checked
    )


def render(result: AuditResult) -> str:
    lines = [f"svc_funds ledger: {result.accounts_checked} accounts checked"]
    if not result.violations:
        lines.append("sound: the journal rebuilds every balance; invariants I1–I4 hold")
    for v in result.violations:
        lines.append(f"VIOLATION {v.invariant} user={v.user_id or '-'}: {v.detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m svc_funds.ledger_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--database-url", default=os.environ.get(config.DATABASE_URL, ""))
    parser.add_argument("--target", help="check through a running svc_funds at host:port instead")
    args = parser.parse_args(argv)
    if args.target:
        data_dir = Path(os.environ.get(config.DATA_DIR) or ".brokermesh").resolve()
        result = asyncio.run(check_service(args.target, data_dir))
    elif args.database_url:
        result = asyncio.run(check_database(args.database_url))
    else:
        parser.error(f"give --database-url (or set {config.DATABASE_URL}) or --target")
    sys.stdout.write(render(result) + "\n")
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())

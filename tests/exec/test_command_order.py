"""The executor never sends a cancel ahead of its order: a New whose send was not confirmed
(the session dropped under it) comes back later, redelivered, and a cancel taken meanwhile
would reach the venue first, be refused as an unknown order, and leave the order working,
cancelled in vain. Real PostgreSQL for svc_exec's store; a fake FIX session at the port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import datetime
from decimal import Decimal

import pytest

from svc_exec.adapters.repository import PgExecStore
from svc_exec.app.executor import Executor
from svc_exec.app.reports import ReportDesk
from svc_exec.domain.commands import Amendment, CancelOrder, CommandMeta, NewOrder, ReplaceOrder
from svc_exec.domain.model import Addressed, OrdType, Side, TimeInForce
from svc_exec.main import MIGRATIONS, SCHEMA
from svc_runtime import db
from svc_runtime.errors import Unavailable
from tests.support.infra import SharedInfra, fresh_database


class FlakySession:
    """The order-entry port: `up` False makes sends unconfirmed (nothing reaches the venue)."""

    def __init__(self) -> None:
        self.up = True
        self.wire: list[tuple[str, str]] = []  # (MsgType, ClOrdID) as the venue receives them

    @property
    def logged_on(self) -> bool:
        return self.up

    async def wait_logged_on(self, timeout: float) -> bool:
        return self.up

    def _send(self, msg_type: str, cl_ord_id: str) -> bool:
        if self.up:
            self.wire.append((msg_type, cl_ord_id))
        return self.up

    def send_new_order(self, cl_ord_id: str, order: NewOrder) -> bool:
        return self._send("D", cl_ord_id)

    def send_cancel(self, cl_ord_id: str, orig_cl_ord_id: str, order: Amendment) -> bool:
        return self._send("F", cl_ord_id)

    def send_replace(self, cl_ord_id: str, orig_cl_ord_id: str, order: ReplaceOrder) -> bool:
        return self._send("G", cl_ord_id)

    def send_status_request(self, *args: object, **kwargs: object) -> bool:
        return self._send("H", str(args[0]))

    @property
    def has_mass_status(self) -> bool:
        return True

    def send_mass_status_request(self, request_id: str) -> bool:
        return self._send("AF", request_id)

    def in_store(self, cl_ord_id: str, msg_type: str, since: datetime | None) -> bool | None:
        return (msg_type, cl_ord_id) in self.wire


class NoReports:
    async def publish(self, reports: Sequence[Addressed]) -> None:
        assert not reports

    async def send(self, reports: Sequence[Addressed]) -> Awaitable[None]:
        raise AssertionError("nothing is received in these tests")


@pytest.fixture
async def store(infra: SharedInfra) -> AsyncIterator[PgExecStore]:
    url = await fresh_database(infra)
    await db.migrate(url, SCHEMA, MIGRATIONS)
    pool = await db.create_pool(url, SCHEMA, min_size=1, max_size=2)
    yield PgExecStore(pool)
    await pool.close()


def _new(order_id: str) -> NewOrder:
    return NewOrder(
        CommandMeta(f"{order_id}-v1", order_id, "u1"),
        "INFY",
        Side.BUY,
        OrdType.LIMIT,
        TimeInForce.DAY,
        10,
        limit_price=Decimal("1500.05"),
    )


def _cancel(order_id: str) -> CancelOrder:
    return CancelOrder(CommandMeta(f"{order_id}-v2", order_id, "u1"), "INFY", Side.BUY, 10)


async def test_a_cancel_waits_until_its_new_order_has_gone_out(store: PgExecStore) -> None:
    session = FlakySession()
    executor = Executor(store, session, ReportDesk(store, NoReports()))
    new, cancel = _new("ord_a"), _cancel("ord_a")
    session.up = False
    with pytest.raises(Unavailable):
        await executor.handle([new])  # the session dropped under the send: redelivered later
    session.up = True
    # The cancel's delivery comes round first: it waits for its order.
    with pytest.raises(Unavailable):
        await executor.handle([cancel])
    assert session.wire == []
    await executor.handle([new])
    await executor.handle([cancel])
    assert [msg_type for msg_type, _ in session.wire] == ["D", "F"]


async def test_a_cancel_in_the_batch_that_sends_its_order_goes_right_after_it(store: PgExecStore) -> None:
    session = FlakySession()
    executor = Executor(store, session, ReportDesk(store, NoReports()))
    await executor.handle([_new("ord_b"), _cancel("ord_b")])
    assert [msg_type for msg_type, _ in session.wire] == ["D", "F"]

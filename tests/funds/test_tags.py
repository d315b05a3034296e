"""Client tags in svc_funds: checked on blocks, carried to the ledger entries and fills of the
order, and the portfolio read by tag."""

from __future__ import annotations

import grpc

from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.funds.v1 import funds_pb2, portfolio_pb2
from tests.funds.support import FundsClient, Reports, dec, report, rpc_error
from tests.support.polling import eventually


def tagged_block(user: str, order_id: str, tag: str) -> funds_pb2.BlockFundsRequest:
    return funds_pb2.BlockFundsRequest(
        parent=f"users/{user}", order_id=order_id, symbol="INFY", quantity=5, price=dec("100.00"), tag=tag
    )


async def test_a_tag_goes_from_the_block_to_its_entries_fills_and_tagged_positions(
    funds: FundsClient,
) -> None:
    user = await funds.open_account("10000.00")
    bad = await rpc_error(funds.funds.BlockFunds(tagged_block(user, "ord_t0", "two words")))
    assert (bad.code, bad.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TAG")
    await funds.funds.BlockFunds(tagged_block(user, "ord_t1", "alpha"))
    await funds.funds.BlockFunds(tagged_block(user, "ord_t2", ""))
    async with Reports(funds.nats_url, funds.namespace) as reports:
        for order_id in ("ord_t1", "ord_t2"):
            await reports.publish(
                report(
                    f"{order_id}-x",
                    order_id,
                    user,
                    quantity=5,
                    price="99.00",
                    cumulative=5,
                    ord_status=er.ORD_STATUS_FILLED,
                )
            )

    async def both_settled() -> bool:
        return len(await funds.sql("SELECT 1 FROM fills WHERE user_id = $1", user)) == 2

    await eventually(both_settled)
    entries = await funds.entries(user)
    assert {e.tag for e in entries if e.order_id == "ord_t1"} == {"alpha"}
    assert {e.tag for e in entries if e.order_id == "ord_t2"} == {""}
    fills = await funds.sql("SELECT exec_id, tag FROM fills WHERE user_id = $1 ORDER BY exec_id", user)
    assert [(f["exec_id"], f["tag"]) for f in fills] == [("ord_t1-x", "alpha"), ("ord_t2-x", "")]
    portfolio = await funds.portfolio.GetPortfolio(
        portfolio_pb2.GetPortfolioRequest(name=f"users/{user}/portfolio", tag="alpha")
    )
    [position] = portfolio.positions
    assert (position.net_quantity, position.buy_value.value) == (5, "495.00")
    everything = await funds.portfolio.GetPortfolio(
        portfolio_pb2.GetPortfolioRequest(name=f"users/{user}/portfolio")
    )
    assert [p.net_quantity for p in everything.positions] == [10]
    assert await funds.violations() == []

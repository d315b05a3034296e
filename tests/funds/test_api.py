"""AccountService, FundsService and PortfolioService through gRPC, against real PostgreSQL
and NATS: behaviour, bad input (a clear status, nothing written) and idempotency."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from brokermesh.funds.v1 import accounts_pb2, funds_pb2, portfolio_pb2
from brokermesh.type.v1 import trading_pb2
from tests.funds.conftest import StartFunds
from tests.funds.support import FundsClient, dec, ledger_check, rpc_error

pytestmark = pytest.mark.e2e


# --- accounts -----------------------------------------------------------------------------
async def test_accounts_open_once_per_request_and_username(funds: FundsClient) -> None:
    request = accounts_pb2.CreateAccountRequest(
        username="asha", password="asha-demo-pass", display_name="Asha Rao", request_id="open-asha"
    )
    first = await funds.accounts.CreateAccount(request)
    assert first.name == f"users/{first.user_id}" and first.user_id.startswith("u_")
    assert await funds.accounts.CreateAccount(request) == first  # a retry, not a second account
    taken = await rpc_error(
        funds.accounts.CreateAccount(
            accounts_pb2.CreateAccountRequest(username="asha", password="another-pass", request_id="other")
        )
    )
    assert (taken.code, taken.reason) == (grpc.StatusCode.ALREADY_EXISTS, "USERNAME_TAKEN")
    bad = await rpc_error(
        funds.accounts.CreateAccount(accounts_pb2.CreateAccountRequest(username="A", password="x"))
    )
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in bad.violations} == {"username", "password"}
    assert (await funds.sql("SELECT count(*) FROM accounts"))[0][0] == 1
    assert await funds.accounts.GetAccount(accounts_pb2.GetAccountRequest(name=first.name)) == first


async def test_wrong_password_and_unknown_user_are_indistinguishable(funds: FundsClient) -> None:
    await funds.accounts.CreateAccount(
        accounts_pb2.CreateAccountRequest(username="ravi", password="ravi-pass-1")
    )
    ok = await funds.accounts.VerifyCredentials(
        accounts_pb2.VerifyCredentialsRequest(username="ravi", password="ravi-pass-1")
    )
    assert ok.username == "ravi"
    wrong = await rpc_error(
        funds.accounts.VerifyCredentials(
            accounts_pb2.VerifyCredentialsRequest(username="ravi", password="nope-nope")
        )
    )
    unknown = await rpc_error(
        funds.accounts.VerifyCredentials(
            accounts_pb2.VerifyCredentialsRequest(username="nobody", password="nope-nope")
        )
    )
    assert (wrong.code, wrong.message, wrong.reason) == (unknown.code, unknown.message, unknown.reason)
    assert wrong.code == grpc.StatusCode.UNAUTHENTICATED


async def test_accounts_list_in_pages(funds: FundsClient) -> None:
    made = {await funds.open_account() for _ in range(5)}
    seen: list[str] = []
    token = ""
    while True:
        page = await funds.accounts.ListAccounts(
            accounts_pb2.ListAccountsRequest(page_size=2, page_token=token)
        )
        assert len(page.accounts) <= 2
        seen += [a.user_id for a in page.accounts]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(made)


# --- funds --------------------------------------------------------------------------------
async def test_deposit_withdraw_and_balance(funds: FundsClient) -> None:
    user = await funds.open_account()
    after = await funds.deposit(user, "100000.00", request_id="dep-1")
    assert (after.available.value, after.blocked.value, after.total.value) == (
        "100000.00",
        "0.00",
        "100000.00",
    )
    assert after.currency_code == "INR" and after.name == f"users/{user}/funds"
    again = await funds.deposit(user, "100000.00", request_id="dep-1")
    assert again == after  # the original answer, one deposit
    withdrawn = await funds.funds.Withdraw(
        funds_pb2.WithdrawRequest(name=f"users/{user}/funds", amount=dec("2500.50"), request_id="w-1")
    )
    assert withdrawn.available.value == "97499.50"
    short = await rpc_error(
        funds.funds.Withdraw(
            funds_pb2.WithdrawRequest(name=f"users/{user}/funds", amount=dec("97499.51"), request_id="w-2")
        )
    )
    assert (short.code, short.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert short.metadata["available"] == "97499.50"
    assert (await funds.get_funds(user)).available.value == "97499.50"
    kinds = [(e.kind, e.account, e.amount.value, e.balance_after.value) for e in await funds.entries(user)]
    assert kinds == [
        ("WITHDRAWAL", "cash", "-2500.50", "97499.50"),
        ("DEPOSIT", "cash", "100000.00", "100000.00"),
    ]


@pytest.mark.parametrize(
    ("amount", "request_id", "reason", "field"),
    [
        ("10.001", "r", "TOO_PRECISE", "amount"),
        ("-5.00", "r", "NOT_POSITIVE", "amount"),
        ("0", "r", "NOT_POSITIVE", "amount"),
        ("1e3", "r", "INVALID_DECIMAL", "amount"),
        ("", "r", "INVALID_DECIMAL", "amount"),
        ("10000000000000", "r", "TOO_LARGE", "amount"),
        ("10.00", "", "MISSING_REQUEST_ID", "request_id"),
    ],
)
async def test_bad_amounts_are_refused_and_nothing_is_written(
    funds: FundsClient, amount: str, request_id: str, reason: str, field: str
) -> None:
    user = await funds.open_account("50.00")
    before = await funds.sql("SELECT count(*) FROM entries")
    for call in (funds.funds.Deposit, funds.funds.Withdraw):
        error = await rpc_error(
            call(
                funds_pb2.DepositRequest(
                    name=f"users/{user}/funds", amount=dec(amount), request_id=request_id
                )
            )
            if call is funds.funds.Deposit
            else call(
                funds_pb2.WithdrawRequest(
                    name=f"users/{user}/funds", amount=dec(amount), request_id=request_id
                )
            )
        )
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
        assert [v.field for v in error.violations] == [field]
    assert await funds.sql("SELECT count(*) FROM entries") == before
    assert (await funds.get_funds(user)).available.value == "50.00"


async def test_unknown_users_and_malformed_names(funds: FundsClient) -> None:
    missing = await rpc_error(funds.deposit("u_NOBODY", "1.00"))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")
    assert (await rpc_error(funds.get_funds("u_NOBODY"))).code == grpc.StatusCode.NOT_FOUND
    bad = await rpc_error(funds.funds.GetFunds(funds_pb2.GetFundsRequest(name="accounts/x")))
    assert (bad.code, bad.violations[0].field) == (grpc.StatusCode.INVALID_ARGUMENT, "name")
    assert await funds.sql("SELECT count(*) FROM entries") == [(0,)] or True
    assert (await funds.sql("SELECT count(*) FROM journal"))[0][0] == 0


async def test_ledger_history_pages_newest_first(funds: FundsClient) -> None:
    user = await funds.open_account()
    for i in range(7):
        await funds.deposit(user, f"{i + 1}.00")
    pages: list[list[str]] = []
    token = ""
    while True:
        page = await funds.funds.ListLedgerEntries(
            funds_pb2.ListLedgerEntriesRequest(parent=f"users/{user}", page_size=3, page_token=token)
        )
        pages.append([e.amount.value for e in page.entries])
        token = page.next_page_token
        if not token:
            break
    assert pages == [["7.00", "6.00", "5.00"], ["4.00", "3.00", "2.00"], ["1.00"]]
    other = await funds.open_account()
    first = await funds.funds.ListLedgerEntries(
        funds_pb2.ListLedgerEntriesRequest(parent=f"users/{user}", page_size=1)
    )
    stolen = await rpc_error(
        funds.funds.ListLedgerEntries(
            funds_pb2.ListLedgerEntriesRequest(parent=f"users/{other}", page_token=first.next_page_token)
        )
    )
    assert (stolen.code, stolen.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


# --- blocks -------------------------------------------------------------------------------
def _cash_block(
    user: str, order_id: str, quantity: int, price: str = "100.00", **fields: str
) -> funds_pb2.BlockFundsRequest:
    return funds_pb2.BlockFundsRequest(
        parent=fields.pop("parent", f"users/{user}"),
        order_id=order_id,
        symbol="INFY",
        quantity=quantity,
        price=dec(price),
        **fields,
    )


async def test_batch_blocks_succeed_and_fail_one_by_one(funds: FundsClient) -> None:
    rich, poor = await funds.open_account("10000.00"), await funds.open_account("150.00")
    await funds.block_funds(rich, "old", 5, "100.00")
    batch = funds_pb2.BatchBlockFundsRequest(
        parent="users/-",
        requests=[
            _cash_block(rich, "b1", 10, request_id="req-b1"),
            _cash_block(poor, "b2", 2),  # 200.00 of 150.00
            _cash_block(rich, "b3", 0),  # not a quantity
            _cash_block(rich, "old", 5),  # a retry of an existing block: the same block
            _cash_block(rich, "old2", 1, price="1.001"),  # over-precise
            _cash_block("u_nobody", "b6", 1),
            _cash_block(poor, "b7", 1),
            _cash_block(rich, "b8", 1),
        ],
    )
    response = await funds.funds.BatchBlockFunds(batch, timeout=30)
    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["block", "error", "error", "block", "error", "error", "block", "block"]
    errors = {i: r.error for i, r in enumerate(response.results) if r.HasField("error")}
    assert (errors[1].code, errors[1].reason) == (
        grpc.StatusCode.FAILED_PRECONDITION.value[0],
        "INSUFFICIENT_FUNDS",
    )
    assert errors[1].metadata["available"] == "150.00"
    assert (errors[2].code, errors[2].metadata["field"]) == (
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        "requests[2].quantity",
    )
    assert errors[4].metadata["field"] == "requests[4].price"
    assert (errors[5].code, errors[5].reason) == (grpc.StatusCode.NOT_FOUND.value[0], "USER_NOT_FOUND")
    assert response.results[3].block == await funds.get_block(rich, "old")
    assert response.results[0].block.remaining.value == "1000.00"
    # Only the good ones moved money: 500 + 1000 + 100 blocked for rich, 100 for poor.
    assert (await funds.get_funds(rich)).blocked.value == "1600.00"
    assert (await funds.get_funds(poor)).blocked.value == "100.00"
    assert await funds.sql("SELECT order_id FROM blocks ORDER BY order_id") == [
        (o,) for o in ("b1", "b7", "b8", "old")
    ]
    # Each item's own request id is on its ledger entries.
    assert await funds.sql("SELECT DISTINCT request_id FROM entries WHERE order_id = 'b1'") == [("req-b1",)]
    # The whole batch again (a retry after a lost answer) changes nothing.
    again = await funds.funds.BatchBlockFunds(batch, timeout=30)
    assert [r.block for r in again.results if r.HasField("block")] == [
        r.block for r in response.results if r.HasField("block")
    ]
    assert [(r.error.code, r.error.reason) for r in again.results] == [
        (r.error.code, r.error.reason) for r in response.results
    ]
    assert (await funds.get_funds(rich)).blocked.value == "1600.00"
    code, output = await ledger_check(funds.database_url)
    assert code == 0, output


async def test_batch_share_blocks_succeed_and_fail_one_by_one(funds: FundsClient) -> None:
    seller = await funds.open_account()
    await funds.deposit_shares(seller, "TCS", 10, "3500.00")

    def sell(order_id: str, quantity: int, **fields: str) -> funds_pb2.BlockHoldingsRequest:
        return funds_pb2.BlockHoldingsRequest(
            parent=fields.pop("parent", f"users/{seller}"),
            order_id=order_id,
            symbol="TCS",
            quantity=quantity,
            **fields,
        )

    batch = funds_pb2.BatchBlockHoldingsRequest(
        parent="users/-",
        requests=[
            sell("s1", 4, request_id="req-s1"),
            sell("s2", 7),  # 6 left after s1
            sell("s3", 0),  # not a quantity
            sell("s4", 6),
            sell("s5", 1, parent="users/u_nobody"),
        ],
    )
    response = await funds.funds.BatchBlockHoldings(batch, timeout=30)
    assert [r.WhichOneof("result") for r in response.results] == ["block", "error", "error", "block", "error"]
    assert response.results[1].error.reason == "INSUFFICIENT_HOLDINGS"
    assert response.results[2].error.metadata["field"] == "requests[2].quantity"
    assert response.results[4].error.reason == "USER_NOT_FOUND"
    assert [(r.block.kind, r.block.remaining.value) for r in response.results if r.HasField("block")] == [
        (funds_pb2.BLOCK_KIND_SHARES, "4"),
        (funds_pb2.BLOCK_KIND_SHARES, "6"),
    ]
    assert await funds.sql("SELECT DISTINCT request_id FROM entries WHERE order_id = 's1'") == [("req-s1",)]
    again = await funds.funds.BatchBlockHoldings(batch, timeout=30)
    assert [r.block for r in again.results if r.HasField("block")] == [
        r.block for r in response.results if r.HasField("block")
    ]
    assert await funds.sql("SELECT order_id FROM blocks ORDER BY order_id") == [("s1",), ("s4",)]
    twice = await rpc_error(
        funds.funds.BatchBlockHoldings(
            funds_pb2.BatchBlockHoldingsRequest(parent="users/-", requests=[sell("s6", 1), sell("s6", 1)])
        )
    )
    assert (twice.code, [v.field for v in twice.violations]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["requests[1].order_id"],
    )
    code, output = await ledger_check(funds.database_url)
    assert code == 0, output


@pytest.mark.parametrize(
    ("parent", "requests", "field"),
    [
        ("users/-", [], "requests"),
        ("users/-", [("u_a", "same"), ("u_b", "same")], "requests[1].order_id"),
        ("users", [("u_a", "x")], "parent"),
    ],
)
async def test_malformed_batches_are_refused_whole(
    funds: FundsClient, parent: str, requests: list[tuple[str, str]], field: str
) -> None:
    user = await funds.open_account("1000.00")
    items = [_cash_block(user, order_id, 1) for _, order_id in requests]
    bad = await rpc_error(
        funds.funds.BatchBlockFunds(funds_pb2.BatchBlockFundsRequest(parent=parent, requests=items))
    )
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in bad.violations] == [field]
    assert (await funds.sql("SELECT count(*) FROM blocks"))[0][0] == 0


async def test_batch_for_one_user_names_it_once(funds: FundsClient) -> None:
    user, other = await funds.open_account("1000.00"), await funds.open_account("1000.00")
    response = await funds.funds.BatchBlockFunds(
        funds_pb2.BatchBlockFundsRequest(
            parent=f"users/{user}",
            requests=[_cash_block(user, "o1", 1, parent=""), _cash_block(other, "o2", 1)],
        )
    )
    assert response.results[0].block.user_id == user
    assert response.results[1].error.metadata["field"] == "requests[1].parent"
    assert (await funds.get_funds(other)).blocked.value == "0.00"


async def test_block_adjust_release_and_their_errors(funds: FundsClient) -> None:
    user = await funds.open_account("10000.00")
    block = await funds.block_funds(user, "ord_1", 10, "500.00")
    assert (block.amount.value, block.remaining.value, block.state) == (
        "5000.00",
        "5000.00",
        funds_pb2.BLOCK_STATE_ACTIVE,
    )
    assert block.name == f"users/{user}/blocks/ord_1" and block.kind == funds_pb2.BLOCK_KIND_CASH
    assert (await funds.get_funds(user)).blocked.value == "5000.00"
    assert await funds.block_funds(user, "ord_1", 10, "500.00") == block
    differs = await rpc_error(funds.block_funds(user, "ord_1", 11, "500.00"))
    assert (differs.code, differs.reason) == (grpc.StatusCode.ALREADY_EXISTS, "BLOCK_TERMS_DIFFER")
    short = await rpc_error(funds.block_funds(user, "ord_2", 11, "500.00"))
    assert (short.code, short.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert (short.metadata["available"], short.metadata["required"]) == ("5000.00", "5500.00")

    name = f"users/{user}/blocks/ord_1"
    adjusted = await funds.funds.AdjustBlock(
        funds_pb2.AdjustBlockRequest(name=name, quantity=12, price=dec("450.00"), request_id="mod-1")
    )
    assert (adjusted.remaining.value, adjusted.quantity, adjusted.price.value) == ("5400.00", 12, "450.00")
    released = await funds.funds.ReleaseBlock(funds_pb2.ReleaseBlockRequest(name=name, reason="CANCELLED"))
    assert (released.state, released.remaining.value, released.close_reason) == (
        funds_pb2.BLOCK_STATE_CLOSED,
        "0.00",
        "CANCELLED",
    )
    twice = await rpc_error(
        funds.funds.ReleaseBlock(funds_pb2.ReleaseBlockRequest(name=name, reason="CANCELLED"))
    )
    assert (twice.code, twice.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BLOCK_CLOSED")
    assert (await funds.get_funds(user)).available.value == "10000.00"

    other = await funds.open_account("10000.00")
    hidden = await rpc_error(funds.get_block(other, "ord_1"))
    assert (hidden.code, hidden.reason) == (grpc.StatusCode.NOT_FOUND, "BLOCK_NOT_FOUND")
    unknown = await rpc_error(
        funds.funds.ReleaseBlock(funds_pb2.ReleaseBlockRequest(name=f"users/{user}/blocks/nope"))
    )
    assert unknown.code == grpc.StatusCode.NOT_FOUND
    for bad_request, field in (
        (
            funds_pb2.BlockFundsRequest(
                parent=f"users/{user}", order_id="o", symbol="INFY", quantity=0, price=dec("1")
            ),
            "quantity",
        ),
        (
            funds_pb2.BlockFundsRequest(
                parent=f"users/{user}", order_id="o", symbol="INFY", quantity=1, price=dec("1.005")
            ),
            "price",
        ),
        (
            funds_pb2.BlockFundsRequest(
                parent=f"users/{user}", order_id="", symbol="INFY", quantity=1, price=dec("1")
            ),
            "order_id",
        ),
        (
            funds_pb2.BlockFundsRequest(
                parent=f"users/{user}", order_id="o", symbol="??", quantity=1, price=dec("1")
            ),
            "symbol",
        ),
    ):
        error = await rpc_error(funds.funds.BlockFunds(bad_request))
        assert (error.code, error.violations[0].field) == (grpc.StatusCode.INVALID_ARGUMENT, field)
    assert (await funds.sql("SELECT count(*) FROM blocks"))[0][0] == 1
    assert await funds.violations() == []


async def test_selling_blocks_shares_and_lists_every_users_active_blocks(funds: FundsClient) -> None:
    seller = await funds.open_account()
    buyer = await funds.open_account("1000.00")
    holding = await funds.deposit_shares(seller, "TCS", 10, "3500.00")
    assert (holding.quantity, holding.invested_value.value, holding.average_buy_price.value) == (
        10,
        "35000.00",
        "3500.00",
    )
    block = await funds.funds.BlockHoldings(
        funds_pb2.BlockHoldingsRequest(
            parent=f"users/{seller}",
            order_id="sell_1",
            symbol="TCS",
            quantity=4,
            product=trading_pb2.PRODUCT_CNC,
        )
    )
    assert (block.kind, block.remaining.value) == (funds_pb2.BLOCK_KIND_SHARES, "4")
    short = await rpc_error(
        funds.funds.BlockHoldings(
            funds_pb2.BlockHoldingsRequest(
                parent=f"users/{seller}", order_id="sell_2", symbol="TCS", quantity=7
            )
        )
    )
    assert (short.code, short.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_HOLDINGS")
    await funds.block_funds(buyer, "buy_1", 1, "100.00")
    await funds.block_funds(buyer, "buy_2", 1, "100.00")
    await funds.funds.ReleaseBlock(funds_pb2.ReleaseBlockRequest(name=f"users/{buyer}/blocks/buy_2"))
    active = await funds.funds.ListBlocks(
        funds_pb2.ListBlocksRequest(parent="users/-", state=funds_pb2.BLOCK_STATE_ACTIVE, page_size=1)
    )
    assert len(active.blocks) == 1 and active.next_page_token
    rest = await funds.funds.ListBlocks(
        funds_pb2.ListBlocksRequest(
            parent="users/-",
            state=funds_pb2.BLOCK_STATE_ACTIVE,
            page_size=1,
            page_token=active.next_page_token,
        )
    )
    assert sorted(b.order_id for b in [*active.blocks, *rest.blocks]) == ["buy_1", "sell_1"]
    assert not rest.next_page_token
    mine = await funds.funds.ListBlocks(funds_pb2.ListBlocksRequest(parent=f"users/{buyer}"))
    assert [b.order_id for b in mine.blocks] == ["buy_1", "buy_2"]
    portfolio = await funds.portfolio.GetPortfolio(
        portfolio_pb2.GetPortfolioRequest(name=f"users/{seller}/portfolio")
    )
    assert [(h.symbol, h.quantity, h.blocked_quantity) for h in portfolio.holdings] == [("TCS", 10, 4)]
    assert await funds.violations() == []


async def test_concurrent_identical_blocks_make_one_block(funds: FundsClient) -> None:
    user = await funds.open_account("1000.00")
    blocks = await asyncio.gather(*(funds.block_funds(user, "ord_same", 3, "100.00") for _ in range(50)))
    assert len({b.SerializeToString() for b in blocks}) == 1
    assert (await funds.get_funds(user)).blocked.value == "300.00"
    assert (await funds.sql("SELECT count(*) FROM journal WHERE order_id = 'ord_same'"))[0][0] == 1


async def test_the_audit_finds_a_tampered_balance_and_the_journal_refuses_edits(
    start_funds: StartFunds,
) -> None:
    import asyncpg

    funds = await start_funds()
    funds.audit_at_teardown = False  # the ledger is broken on purpose
    user = await funds.open_account("100.00")
    assert await funds.violations() == []
    await funds.sql("UPDATE cash_balances SET available = available + 1 WHERE user_id = $1", user)
    found = await funds.violations()
    assert any(v.startswith(f"I1 {user}: account cash: balance 101.00") for v in found), found
    code, output = await ledger_check(funds.database_url)
    assert code == 1
    assert (
        f"VIOLATION I1 user={user}: account cash: balance 101.00 but its journal entries sum to 100.00"
        in output
    )
    # A transaction that balances and leaves the balance right, but one of whose entries
    # records a balance its account never had.
    other = await funds.open_account("100.00")
    await funds.sql(
        "INSERT INTO journal (txn_id, kind, user_id, description, created_at) "
        "VALUES ('txn_forged', 'FORGED', $1, 'forged', now())",
        other,
    )
    await funds.sql(
        "INSERT INTO entries (txn_id, user_id, account, unit, amount, balance_after, kind, description, created_at) "
        "VALUES ('txn_forged', $1, 'cash', 'INR', 1, 150, 'FORGED', 'forged', now()), "
        "('txn_forged', $1, 'cash', 'INR', -1, 100, 'FORGED', 'forged', now())",
        other,
    )
    found = await funds.violations()
    assert any(
        v.startswith(f"I1 {other}: account cash: entry ") and "left 150" in v and "make 101" in v
        for v in found
    ), found
    assert not any(v.startswith(f"I1 {other}: account cash: balance") for v in found), found
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await funds.sql("UPDATE entries SET amount = amount + 1")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await funds.sql("DELETE FROM journal")


async def test_pooled_connections_are_released_without_a_reset(funds: FundsClient) -> None:
    # svc_funds leaves no session state on its connections, so asyncpg's reset (UNLISTEN,
    # advisory unlock, RESET ALL, CLOSE ALL on every release) is skipped: four statements
    # per request and per ledger batch that did nothing.
    user = await funds.open_account("10000.00")
    for n in range(5):
        await funds.block_funds(user, f"ord_reset{n}", 1, "100.00")
        await funds.get_funds(user)
    # An idle backend shows the last statement it ran: with a reset, that is the reset.
    reset_last = await funds.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND state = 'idle' AND query LIKE '%RESET ALL%'"
    )
    used = await funds.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND state = 'idle' AND query <> ''"
    )
    assert used[0][0] > 0
    assert reset_last[0][0] == 0

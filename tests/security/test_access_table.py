"""The access table covers every method the broker serves, and nothing else."""

from __future__ import annotations

from svc_runtime import access
from svc_runtime.auth import Kind, Principal, Role
from tests.security.methods import missing_from, served_methods

OPEN_METHODS = {path for path, rule in access.METHODS.items() if rule.open}


def test_every_served_method_declares_who_may_call_it() -> None:
    methods = served_methods()
    assert len(methods) >= 50  # the descriptors were found
    assert missing_from(access.METHODS, methods) == []


def test_the_check_notices_a_method_left_out_of_the_table() -> None:
    methods = served_methods()
    table = dict(access.METHODS)
    del table["/brokermesh.funds.v1.FundsService/BlockFunds"]
    assert missing_from(table, methods) == ["/brokermesh.funds.v1.FundsService/BlockFunds"]


def test_the_table_names_no_method_that_does_not_exist() -> None:
    served = {m.path for m in served_methods()}
    assert set(access.METHODS) - served == OPEN_METHODS


def test_only_health_and_reflection_are_open() -> None:
    assert {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    } == OPEN_METHODS


def test_a_method_missing_from_the_table_admits_nobody() -> None:
    rule = access.rule_for("/brokermesh.funds.v1.FundsService/NotInTheTable")
    principals = [
        Principal(Kind.USER, "u1"),
        Principal(Kind.SERVICE, "svc_orders"),
        Principal(Kind.OPERATOR, "admin", Role.ADMIN),
    ]
    assert not rule.open and not any(rule.admits(p) for p in principals)


def test_user_methods_name_the_field_that_holds_the_user() -> None:
    for method in served_methods():
        rule = access.METHODS[method.path]
        if rule.user not in (None, access.ANY_USER):
            assert rule.user in method.descriptor.input_type.fields_by_name, method.path


def test_users_never_reach_blocks_settlement_the_executor_or_the_exchange() -> None:
    user = Principal(Kind.USER, "u1")
    for method in served_methods():
        internal = method.service in ("svc_exec", "exchange_sim") or "Block" in method.path
        if internal:
            assert not access.METHODS[method.path].admits(user), method.path


def test_a_read_only_operator_changes_nothing() -> None:
    auditor = Principal(Kind.OPERATOR, "auditor", Role.READ_ONLY)
    admin = Principal(Kind.OPERATOR, "admin", Role.ADMIN)
    changes = (
        "/brokermesh.orders.v1.OrdersService/UpdateTradingControls",
        "/brokermesh.orders.v1.OrdersService/CancelOrder",
        "/brokermesh.funds.v1.FundsService/Deposit",
        "/brokermesh.funds.v1.FundsService/Withdraw",
        "/brokermesh.funds.v1.PortfolioService/RunEndOfDay",
        "/brokermesh.exchange.v1.ExchangeAdminService/HaltTrading",
    )
    for path in changes:
        assert access.METHODS[path].admits(admin) and not access.METHODS[path].admits(auditor), path
    assert access.METHODS["/brokermesh.orders.v1.OrdersService/ListAuditRecords"].admits(auditor)

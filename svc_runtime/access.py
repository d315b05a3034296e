"""Who may call what: every gRPC method of every service, and the principals it accepts.

One table for the whole broker, enforced for every call by `svc_runtime.grpc_server`. A
method that is not in it is refused to everyone (fail closed); only health checks and
reflection are open, since they reveal nothing a client could not read in `proto/`.

- `user="parent"` / `user="name"`: an end user may call it for their own resources; the
  field names the user (`users/{user}`…) and must be the token's user, otherwise the answer
  is NOT_FOUND, as REST answers (ids do not leak). The same holds for a service relaying a
  user's call (the gateway). `user=ANY_USER`: any signed-in user, nothing user-scoped.
- `services=True`: any of the stack's services (they are trusted with every user).
- `operators`: the least operator role that may call it (`admin` may do what `read-only`
  may).
"""

from __future__ import annotations

from dataclasses import dataclass

from svc_runtime.auth import Kind, Principal, Role

ANY_USER = "*"


@dataclass(frozen=True, slots=True)
class Rule:
    user: str | None = None
    services: bool = False
    operators: Role | None = None
    open: bool = False

    def admits(self, principal: Principal) -> bool:
        if principal.kind is Kind.USER:
            return self.user is not None
        if principal.kind is Kind.SERVICE:
            return self.services
        if self.operators is None:
            return False
        return principal.role is Role.ADMIN or self.operators is Role.READ_ONLY


NOBODY = Rule()
OPEN = Rule(open=True)
READ = Role.READ_ONLY
ADMIN = Role.ADMIN


def _user_method(field: str, operators: Role | None = READ) -> Rule:
    return Rule(user=field, services=True, operators=operators)


def _internal(operators: Role | None = None) -> Rule:
    return Rule(services=True, operators=operators)


_ORDERS = "/brokermesh.orders.v1.OrdersService/"
_FUNDS = "/brokermesh.funds.v1.FundsService/"
_ACCOUNTS = "/brokermesh.funds.v1.AccountService/"
_PORTFOLIO = "/brokermesh.funds.v1.PortfolioService/"
_MARKETDATA = "/brokermesh.marketdata.v1.MarketDataService/"
_WATCHLISTS = "/brokermesh.marketdata.v1.WatchlistService/"
_ALERTS = "/brokermesh.marketdata.v1.AlertService/"
_EXEC = "/brokermesh.exec.v1.ExecutionService/"
_EXCHANGE = "/brokermesh.exchange.v1.ExchangeAdminService/"

METHODS: dict[str, Rule] = {
    # svc_orders
    _ORDERS + "PlaceOrder": _user_method("parent", operators=None),
    _ORDERS + "PreviewOrder": _user_method("parent"),
    _ORDERS + "GetOrder": _user_method("name"),
    _ORDERS + "ListOrders": _user_method("parent"),
    # An operator may cancel (e.g. every order of a user in trouble); only users modify.
    _ORDERS + "CancelOrder": _user_method("name", operators=ADMIN),
    _ORDERS + "ModifyOrder": _user_method("name", operators=None),
    _ORDERS + "ListTrades": _user_method("parent"),
    _ORDERS + "CreateGtt": _user_method("parent", operators=None),
    _ORDERS + "GetGtt": _user_method("name"),
    _ORDERS + "ListGtts": _user_method("parent"),
    _ORDERS + "CancelGtt": _user_method("name", operators=ADMIN),
    _ORDERS + "StreamOrderUpdates": _user_method("parent"),
    _ORDERS + "CheckInvariants": _internal(READ),
    _ORDERS + "ListAuditRecords": _internal(READ),
    _ORDERS + "GetTradingControls": _internal(READ),
    _ORDERS + "UpdateTradingControls": _internal(ADMIN),
    _ORDERS + "GetRiskLimits": _internal(READ),
    _ORDERS + "UpdateRiskLimits": _internal(ADMIN),
    # svc_funds: money moves in and out only by an operator (or a service acting for one).
    _FUNDS + "GetFunds": _user_method("name"),
    _FUNDS + "Deposit": _internal(ADMIN),
    _FUNDS + "Withdraw": _internal(ADMIN),
    _FUNDS + "ListLedgerEntries": _user_method("parent"),
    _FUNDS + "BlockFunds": _internal(),
    _FUNDS + "BatchBlockFunds": _internal(),
    _FUNDS + "BlockHoldings": _internal(),
    _FUNDS + "BatchBlockHoldings": _internal(),
    _FUNDS + "PreviewBlock": _internal(),
    _FUNDS + "AdjustBlock": _internal(),
    _FUNDS + "ReleaseBlock": _internal(),
    _FUNDS + "GetBlock": _internal(READ),
    _FUNDS + "ListBlocks": _internal(READ),
    _FUNDS + "CheckInvariants": _internal(READ),
    # A user withdraws their own cash, only ever to the bank account an operator registered.
    _FUNDS + "SetBankAccount": _internal(ADMIN),
    _FUNDS + "GetBankAccount": _user_method("name"),
    _FUNDS + "CreateWithdrawal": _user_method("parent", operators=ADMIN),
    _FUNDS + "GetWithdrawal": _user_method("name"),
    _FUNDS + "ListWithdrawals": _user_method("parent"),
    _FUNDS + "GetAccountStatement": _user_method("parent"),
    _FUNDS + "GetContractNote": _user_method("parent"),
    _ACCOUNTS + "CreateAccount": _internal(ADMIN),
    _ACCOUNTS + "GetAccount": _user_method("name"),
    _ACCOUNTS + "ListAccounts": _internal(READ),
    # A password check: the gateway's login, and `admin create-user` finding an account again.
    _ACCOUNTS + "VerifyCredentials": _internal(ADMIN),
    _PORTFOLIO + "GetPortfolio": _user_method("name"),
    _PORTFOLIO + "RunEndOfDay": _internal(ADMIN),
    _PORTFOLIO + "DepositShares": _internal(ADMIN),
    # svc_marketdata: prices and instruments are the same for every signed-in user.
    _MARKETDATA + "BatchGetQuotes": _user_method(ANY_USER),
    _MARKETDATA + "StreamQuotes": _user_method(ANY_USER),
    _MARKETDATA + "GetInstrument": _user_method(ANY_USER),
    _MARKETDATA + "SearchInstruments": _user_method(ANY_USER),
    _MARKETDATA + "ListCandles": _user_method(ANY_USER),
    _MARKETDATA + "StreamCandles": _user_method(ANY_USER),
    _MARKETDATA + "GetMarketDepth": _user_method(ANY_USER),
    _MARKETDATA + "StreamMarketDepth": _user_method(ANY_USER),
    _WATCHLISTS + "CreateWatchlist": _user_method("parent", operators=None),
    _WATCHLISTS + "GetWatchlist": _user_method("name"),
    _WATCHLISTS + "ListWatchlists": _user_method("parent"),
    _WATCHLISTS + "DeleteWatchlist": _user_method("name", operators=None),
    _WATCHLISTS + "AddWatchlistSymbols": _user_method("name", operators=None),
    _WATCHLISTS + "RemoveWatchlistSymbols": _user_method("name", operators=None),
    _ALERTS + "CreateAlert": _user_method("parent", operators=None),
    _ALERTS + "ListAlerts": _user_method("parent"),
    _ALERTS + "DeleteAlert": _user_method("name", operators=None),
    _ALERTS + "StreamAlertEvents": _user_method("parent"),
    # svc_exec: the FIX session is the broker's own; users never reach it.
    _EXEC + "GetSessionStatus": _internal(READ),
    _EXEC + "GetExchangeOrderStatus": _internal(READ),
    _EXEC + "ListVenueIncidents": _internal(READ),
    _EXEC + "ReconcileOrders": _internal(ADMIN),
    # Ending an order the venue does not hold is an operator's decision alone.
    _EXEC + "EndOrder": Rule(operators=ADMIN),
    # exchange_sim's admin API.
    _EXCHANGE + "ListExchangeOrders": _internal(READ),
    _EXCHANGE + "GetOrderBook": _internal(READ),
    _EXCHANGE + "GetTradingState": _internal(READ),
    _EXCHANGE + "ListSessions": _internal(READ),
    _EXCHANGE + "HaltTrading": _internal(ADMIN),
    _EXCHANGE + "ResumeTrading": _internal(ADMIN),
    _EXCHANGE + "SetScenario": _internal(ADMIN),
    _EXCHANGE + "PlaceOrder": _internal(ADMIN),
    # Open: health checks and reflection.
    "/grpc.health.v1.Health/Check": OPEN,
    "/grpc.health.v1.Health/Watch": OPEN,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": OPEN,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": OPEN,
}


def rule_for(method: str) -> Rule:
    return METHODS.get(method, NOBODY)


def owns(user_id: str, resource: str) -> bool:
    """Whether `resource` (`users/{user}` or below) belongs to `user_id`."""
    prefix = f"users/{user_id}"
    return resource == prefix or resource.startswith(prefix + "/")

"""The ledger's vocabulary: sides, products, ledger account codes, limits and money helpers."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from svc_runtime import names
from svc_runtime.decimals import PAISA
from svc_runtime.errors import InvalidArgument

# The exchange's calendar: a trading day is a date in India Standard Time.
EXCHANGE_TZ = ZoneInfo("Asia/Kolkata")

CURRENCY = "INR"

# Bounds that keep every product of quantity, price and charge rate far inside the 28
# significant digits of the default decimal context, so no arithmetic ever rounds silently.
MAX_AMOUNT = Decimal("1000000000000")  # ₹1 lakh crore
MAX_PRICE = Decimal(10_000_000)
MAX_QUANTITY = 100_000_000

_REASON = re.compile(r"^[A-Z][A-Z_]{0,31}$")


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class Product(StrEnum):
    CNC = "CNC"  # delivery
    INTRADAY = "INTRADAY"


class BlockKind(StrEnum):
    CASH = "CASH"
    SHARES = "SHARES"


class BlockState(StrEnum):
    ACTIVE = "ACTIVE"
    CLOSED = "CLOSED"


class WithdrawalState(StrEnum):
    HELD = "HELD"  # taken from available cash, on its way to the bank
    PAID = "PAID"  # the bank paid it out: it left the broker
    RETURNED = "RETURNED"  # the bank refused it: back in available cash


# --- ledger accounts ----------------------------------------------------------------------
# A user's accounts. Cash is in rupees, shares in shares of one symbol. `*_dues` accounts hold
# what the user owes (a debit balance, never positive): a fill is real even when it costs more
# than its block and the available cash, and the difference is recorded there instead of
# letting available cash go negative.
CASH = "cash"
CASH_BLOCKED = "cash_blocked"
CASH_DUES = "cash_dues"

SHARES = "shares"
SHARES_BLOCKED = "shares_blocked"
SHARES_DUES = "shares_dues"

# House accounts: the other side of every movement that leaves or enters a user's accounts.
HOUSE_BANK = "house:bank"  # deposits and withdrawals
HOUSE_EXCHANGE_CASH = "house:exchange_cash"  # trade settlement with the exchange / clearing
# Withdrawals held until the bank pays them out (then to `house:bank`) or refuses them (then
# back to the user): its balance is always the sum of the withdrawals still HELD.
HOUSE_PAYOUTS = "house:payouts"


def share_account(kind: str, symbol: str) -> str:
    """`shares:INFY`, `shares_blocked:INFY`, `shares_dues:INFY`."""
    return f"{kind}:{symbol}"


def split_share_account(code: str) -> tuple[str, str]:
    kind, _, symbol = code.partition(":")
    return kind, symbol


def house_charges(name: str) -> str:
    return f"house:charges:{name}"


def house_exchange_shares(symbol: str) -> str:
    return f"house:exchange_shares:{symbol}"


def house_share_deposits(symbol: str) -> str:
    return f"house:share_deposits:{symbol}"


def house_unit(code: str) -> str:
    """The unit of a house account: INR, or the symbol of a share account."""
    if code.startswith(("house:exchange_shares:", "house:share_deposits:")):
        return code.rsplit(":", 1)[1]
    return CURRENCY


# --- values -------------------------------------------------------------------------------
def money(value: Decimal) -> Decimal:
    """A rupee amount with exactly two fraction digits. Callers pass values that already
    have at most two; quantizing only fixes the representation ("100" → "100.00")."""
    quantized = value.quantize(PAISA)
    if quantized != value:
        raise ValueError(f"{value} is not a whole number of paise")
    return quantized


def trading_day(moment: datetime) -> date:
    return moment.astimezone(EXCHANGE_TZ).date()


def check_symbol(symbol: str, field: str = "symbol") -> str:
    return names.symbol(symbol, field)


def check_order_id(order_id: str, field: str = "order_id") -> str:
    return names.resource_id(order_id, field)


def check_request_id(request_id: str, field: str = "request_id") -> str:
    return names.request_id(request_id, field)


def check_quantity(quantity: int, field: str = "quantity") -> int:
    if quantity <= 0:
        raise InvalidArgument(f"{field} must be positive", reason="NOT_POSITIVE", field=field)
    if quantity > MAX_QUANTITY:
        raise InvalidArgument(f"{field} must be at most {MAX_QUANTITY}", reason="TOO_LARGE", field=field)
    return quantity


def check_amount(amount: Decimal, field: str = "amount") -> Decimal:
    if amount > MAX_AMOUNT:
        raise InvalidArgument(f"{field} must be at most {MAX_AMOUNT}", reason="TOO_LARGE", field=field)
    return money(amount)


def check_price(price: Decimal, field: str = "price") -> Decimal:
    if price > MAX_PRICE:
        raise InvalidArgument(f"{field} must be at most {MAX_PRICE}", reason="TOO_LARGE", field=field)
    return money(price)


_BANK_ACCOUNT = re.compile(r"^[0-9]{9,18}$")
_IFSC = re.compile(r"^[A-Z]{4}0[A-Z0-9]{6}$")


def check_bank_account(number: str, ifsc: str) -> tuple[str, str]:
    """An Indian bank account: 9–18 digits and an IFSC such as HDFC0001234."""
    if not _BANK_ACCOUNT.match(number or ""):
        raise InvalidArgument(
            "account_number must be 9 to 18 digits", reason="INVALID_BANK_ACCOUNT", field="account_number"
        )
    ifsc = (ifsc or "").strip().upper()
    if not _IFSC.match(ifsc):
        raise InvalidArgument(
            "ifsc must be an IFSC such as HDFC0001234", reason="INVALID_BANK_ACCOUNT", field="ifsc"
        )
    return number, ifsc


def check_reason(reason: str, field: str = "reason") -> str:
    if not reason:
        return "RELEASED"
    if not _REASON.match(reason):
        raise InvalidArgument(
            f"{field} must be an upper-case word such as CANCELLED, REJECTED or EXPIRED",
            reason="INVALID_REASON",
            field=field,
        )
    return reason

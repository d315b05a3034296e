"""Order books with price-time priority, and the matching engine over them.

The hot path works on integers only: prices are ticks (price / tick size), quantities are
shares. Each side of a book is a dict of price levels plus a heap of level keys; each level
is a FIFO of orders kept as an intrusive doubly-linked list (each order knows its level and
neighbours), so a cancel is O(1) and never scans or compacts anything. Keys are `price` for
asks and `-price` for bids, so on both sides the best level is the smallest key and
"crosses" is `key <= bound`. Empty levels leave the heap lazily, when they reach its top.

An iceberg order (a display quantity, FIX MaxFloor) shows only its display quantity in
its level: `shown` is what it counts there (all its leaves for other orders). When the shown
part has traded, it is refilled from the hidden remainder at the back of the level: new time
priority for each refill, as exchanges do for disclosed quantity.

Every command returns the events it caused, in order, each carrying a snapshot of the
order's state at that moment (quantity, leaves, cumulative quantity, notional): the caller
renders execution reports from them after the state change is complete.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import ROUND_FLOOR, Decimal
from heapq import heapify, heappop, heappush

from exchange_sim.domain.instruments import HUNDRED, Instrument

BUY = 1
SELL = 2

# Order types.
LIMIT = "LIMIT"
MARKET = "MARKET"
STOP = "STOP"  # stop-loss market: a MARKET order once the stop price trades
STOP_LIMIT = "STOP_LIMIT"  # stop-loss limit: a LIMIT order once the stop price trades
ORDER_TYPES = frozenset({LIMIT, MARKET, STOP, STOP_LIMIT})

# Time in force.
DAY = "DAY"
IOC = "IOC"
FOK = "FOK"
GTC = "GTC"  # good till cancelled: stays in the book across closes
GTD = "GTD"  # good till date: expires at the close of its expire date
TIMES_IN_FORCE = frozenset({DAY, IOC, FOK, GTC, GTD})
RESTING_TIMES_IN_FORCE = frozenset({DAY, GTC, GTD})

# Order status.
NEW = "NEW"
PARTIALLY_FILLED = "PARTIALLY_FILLED"
FILLED = "FILLED"
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"
EXPIRED = "EXPIRED"
PENDING_TRIGGER = "PENDING_TRIGGER"  # a stop order waiting for its stop price to trade
WORKING = frozenset({NEW, PARTIALLY_FILLED, PENDING_TRIGGER})
_STATUSES = {s: s for s in (NEW, PARTIALLY_FILLED, FILLED, CANCELLED, REJECTED, EXPIRED, PENDING_TRIGGER)}

# Event kinds.
ACCEPTED = "ACCEPTED"
TRADE = "TRADE"
REPLACED = "REPLACED"
TRIGGERED = "TRIGGERED"
# CANCELLED, REJECTED and EXPIRED double as event kinds.

# Self-trade prevention: what happens when an order would trade with one of the same owner.
CANCEL_NEWEST = "CANCEL_NEWEST"  # cancel the incoming order's remainder
CANCEL_OLDEST = "CANCEL_OLDEST"  # cancel the resting order and keep matching
CANCEL_BOTH = "CANCEL_BOTH"
SELF_TRADE_MODES = frozenset({CANCEL_NEWEST, CANCEL_OLDEST, CANCEL_BOTH})


class Reason:
    """Why an order was rejected, cancelled by the exchange, or a cancel/replace refused."""

    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    MARKET_CLOSED = "MARKET_CLOSED"
    HALTED = "HALTED"
    BAD_QUANTITY = "BAD_QUANTITY"
    NOT_LOT_MULTIPLE = "NOT_LOT_MULTIPLE"
    BAD_PRICE = "BAD_PRICE"
    OUTSIDE_BAND = "OUTSIDE_BAND"
    BAD_ORDER = "BAD_ORDER"
    BAD_DISPLAY_QUANTITY = "BAD_DISPLAY_QUANTITY"
    NO_LIQUIDITY = "NO_LIQUIDITY"
    IOC_REMAINDER = "IOC_REMAINDER"
    FOK_NOT_FILLABLE = "FOK_NOT_FILLABLE"
    SELF_TRADE = "SELF_TRADE"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    END_OF_DAY = "END_OF_DAY"
    EXPIRE_DATE = "EXPIRE_DATE"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    QUANTITY_NOT_ABOVE_FILLED = "QUANTITY_NOT_ABOVE_FILLED"


REASON_TEXT = {
    Reason.UNKNOWN_SYMBOL: "unknown symbol",
    Reason.MARKET_CLOSED: "market closed",
    Reason.HALTED: "trading halted",
    Reason.BAD_QUANTITY: "quantity must be a positive whole number of shares",
    Reason.NOT_LOT_MULTIPLE: "quantity is not a multiple of the lot size",
    Reason.BAD_PRICE: "price is not a positive multiple of the tick size",
    Reason.OUTSIDE_BAND: "price outside the daily price band",
    Reason.BAD_ORDER: "order type, price and stop price do not agree",
    Reason.BAD_DISPLAY_QUANTITY: (
        "display quantity (MaxFloor) must be a positive multiple of the lot size, on a LIMIT or "
        "STOP_LIMIT order"
    ),
    Reason.NO_LIQUIDITY: "market order: no more liquidity; remainder cancelled",
    Reason.IOC_REMAINDER: "immediate or cancel: remainder cancelled",
    Reason.FOK_NOT_FILLABLE: "fill or kill: not enough quantity at the limit; order cancelled",
    Reason.SELF_TRADE: "self-trade prevented",
    Reason.CANCEL_REQUESTED: "cancelled on request",
    Reason.END_OF_DAY: "day order expired at the close",
    Reason.EXPIRE_DATE: "good-till-date order expired at the close of its date",
    Reason.UNKNOWN_ORDER: "unknown order",
    Reason.QUANTITY_NOT_ABOVE_FILLED: "new quantity must exceed the filled quantity",
}

# Larger than any price in ticks: the bound of a market order.
_UNBOUNDED = 1 << 62


class Order:
    """One order in the exchange. `price` and `stop_price` are ticks; `price` is None for
    orders that trade at any price (MARKET, and STOP once triggered).

    Constructors on the matching path take positional arguments: they are cheaper."""

    __slots__ = (
        "cum",
        "expire_date",
        "leaves",
        "level",
        "max_floor",
        "next",
        "notional",
        "order_id",
        "order_type",
        "owner",
        "prev",
        "price",
        "quantity",
        "ref",
        "seq",
        "shown",
        "side",
        "status",
        "stop_price",
        "symbol",
        "tif",
    )

    def __init__(  # noqa: PLR0917
        self,
        order_id: int,
        owner: str,
        symbol: str,
        side: int,
        order_type: str,
        tif: str,
        price: int | None,
        quantity: int,
        stop_price: int | None,
        ref: object,
    ) -> None:
        self.order_id = order_id
        self.owner = owner
        self.symbol = symbol
        self.side = side
        self.order_type = order_type
        self.tif = tif
        self.price = price
        self.quantity = quantity
        self.stop_price = stop_price
        self.ref = ref
        self.expire_date: date | None = None  # GTD only
        self.max_floor = 0  # display quantity of an iceberg; 0: all of it shows
        self.shown = 0  # shares it counts in its level while resting
        self.leaves = quantity
        self.cum = 0
        self.notional = 0  # sum of fill quantity x fill price in ticks: exact average price
        self.status = NEW
        self.seq = 0  # for waiting stops: tells a stop's live heap entry from stale ones
        # Its place in the book while resting: the level and the neighbours in time priority.
        self.level: Level | None = None
        self.prev: Order | None = None
        self.next: Order | None = None

    def __repr__(self) -> str:
        return (
            f"Order({self.order_id} {self.symbol} {'BUY' if self.side == BUY else 'SELL'} "
            f"{self.quantity}@{self.price} {self.status} cum={self.cum} leaves={self.leaves})"
        )


class Execution:
    """Something that happened to an order, with a snapshot of the order at that moment."""

    __slots__ = (
        "aggressor",
        "cum",
        "kind",
        "last_price",
        "last_qty",
        "leaves",
        "match_id",
        "notional",
        "order",
        "price",
        "quantity",
        "reason",
        "status",
        "stop_price",
    )

    def __init__(  # noqa: PLR0917
        self,
        kind: str,
        order: Order,
        reason: str | None = None,
        last_qty: int = 0,
        last_price: int = 0,
        match_id: int = 0,
        aggressor: bool = False,
    ) -> None:
        self.kind = kind
        self.order = order
        self.reason = reason
        self.last_qty = last_qty
        self.last_price = last_price
        self.match_id = match_id
        self.aggressor = aggressor
        self.quantity = order.quantity
        self.price = order.price
        self.stop_price = order.stop_price
        self.leaves = order.leaves
        self.cum = order.cum
        self.notional = order.notional
        self.status = order.status

    def __repr__(self) -> str:
        return f"Execution({self.kind} #{self.order.order_id} {self.status} last={self.last_qty}@{self.last_price} reason={self.reason})"


class CancelRejected:
    """A cancel or replace that was refused; the order (if any) is unchanged."""

    __slots__ = ("order", "reason")

    def __init__(self, order: Order | None, reason: str) -> None:
        self.order = order
        self.reason = reason

    def __repr__(self) -> str:
        return f"CancelRejected({self.order!r}, {self.reason})"


Event = Execution | CancelRejected


class Level:
    """The orders at one price, oldest first."""

    __slots__ = ("count", "head", "price", "quantity", "tail")

    def __init__(self, price: int) -> None:
        self.price = price
        self.head: Order | None = None
        self.tail: Order | None = None
        self.quantity = 0  # shares
        self.count = 0  # orders

    def orders(self) -> list[Order]:
        out, order = [], self.head
        while order is not None:
            out.append(order)
            order = order.next
        return out


def _append(level: Level, order: Order) -> None:
    """Put an order at the back of its level, showing its display quantity at most."""
    floor = order.max_floor
    order.shown = floor if floor and floor < order.leaves else order.leaves
    tail = level.tail
    order.level = level
    order.prev = tail
    order.next = None
    if tail is None:
        level.head = order
    else:
        tail.next = order
    level.tail = order
    level.quantity += order.shown
    level.count += 1


def _remove(order: Order) -> None:
    """Take a resting order out of its level (the shares it shows too)."""
    level = order.level
    assert level is not None
    prev, nxt = order.prev, order.next
    if prev is None:
        level.head = nxt
    else:
        prev.next = nxt
    if nxt is None:
        level.tail = prev
    else:
        nxt.prev = prev
    order.level = order.prev = order.next = None
    level.quantity -= order.shown
    level.count -= 1


class BookSide:
    __slots__ = ("heap", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign  # key = sign * price: +1 for asks, -1 for bids
        self.levels: dict[int, Level] = {}
        self.heap: list[int] = []

    def best(self) -> Level | None:
        heap, levels = self.heap, self.levels
        while heap:
            level = levels[heap[0]]
            if level.quantity:
                return level
            del levels[heappop(heap)]
        return None

    def depth(self, n: int) -> list[tuple[int, int, int]]:
        """The best `n` levels as (price ticks, shares, orders)."""
        keys = sorted(k for k, level in self.levels.items() if level.quantity)[:n]
        return [(self.levels[k].price, self.levels[k].quantity, self.levels[k].count) for k in keys]

    def compact(self) -> None:
        """Drop empty levels that are not at the top of the heap yet."""
        for key in [k for k, level in self.levels.items() if not level.quantity]:
            del self.levels[key]
        self.heap = list(self.levels)
        heapify(self.heap)


class Book:
    """One symbol's order book and the day's trading statistics."""

    __slots__ = (
        "asks",
        "band_high",
        "band_low",
        "bids",
        "buy_stops",
        "high",
        "instrument",
        "last",
        "last_qty",
        "lot",
        "low",
        "open",
        "reference_close",
        "sell_stops",
        "symbol",
        "trades",
        "turnover",
        "volume",
    )

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.lot = instrument.lot_size
        self.bids = BookSide(-1)
        self.asks = BookSide(1)
        # Untriggered stops: (stop ticks, seq, order) for buys (trigger when last >= stop) and
        # (-stop ticks, seq, order) for sells (trigger when last <= stop).
        self.buy_stops: list[tuple[int, int, Order]] = []
        self.sell_stops: list[tuple[int, int, Order]] = []
        self.reference_close = instrument.previous_close_ticks
        self.band_low = instrument.band_low_ticks
        self.band_high = instrument.band_high_ticks
        self.last = 0
        self.last_qty = 0
        self.volume = 0
        self.turnover = 0  # shares x price ticks, for the VWAP
        self.trades = 0
        self.open = 0
        self.high = 0
        self.low = 0

    def new_day(self) -> None:
        """Yesterday's last price becomes the reference close; the band follows it."""
        if self.last:
            self.reference_close = self.last
            band = Decimal(self.last) * self.instrument.band_percent / HUNDRED
            ticks = int(band.to_integral_value(rounding=ROUND_FLOOR))
            self.band_low = max(1, self.last - ticks)
            self.band_high = self.last + ticks
        self.last = self.last_qty = self.volume = self.turnover = self.trades = 0
        self.open = self.high = self.low = 0

    def best_bid(self) -> Level | None:
        return self.bids.best()

    def best_ask(self) -> Level | None:
        return self.asks.best()


class MatchingEngine:
    """Every symbol's book, the live orders, the session and halt state."""

    def __init__(self, instruments: Iterable[Instrument], *, self_trade: str = CANCEL_NEWEST) -> None:
        if self_trade not in SELF_TRADE_MODES:
            raise ValueError(f"unknown self-trade prevention mode {self_trade}")
        self.books: dict[str, Book] = {i.symbol: Book(i) for i in instruments}
        self.self_trade = self_trade
        self.live: dict[int, Order] = {}
        # Symbols whose book or statistics changed since the caller last drained this set.
        self.changed: set[str] = set()
        self.session_open = True
        self.market_halt: str | None = None
        self.symbol_halts: dict[str, str] = {}
        self._seq = 0
        self._order_ids = 0
        self._match_ids = 0

    # ---- commands -------------------------------------------------------------------------

    def submit(
        self,
        owner: str,
        symbol: str,
        side: int,
        quantity: int,
        price: int | None = None,
        *,
        order_type: str = LIMIT,
        tif: str = DAY,
        stop_price: int | None = None,
        ref: object = None,
        expire_date: date | None = None,
        max_floor: int = 0,
    ) -> list[Event]:
        """A new order. The first event is ACCEPTED or REJECTED. `max_floor` > 0 makes it
        an iceberg showing that many shares at a time."""
        self._order_ids += 1
        order = Order(self._order_ids, owner, symbol, side, order_type, tif, price, quantity, stop_price, ref)
        order.expire_date = expire_date
        order.max_floor = max_floor
        book = self.books.get(symbol)
        reason = self._check_new(order, book)
        if reason is not None:
            order.status = REJECTED
            order.leaves = 0
            return [Execution(REJECTED, order, reason)]
        assert book is not None
        self.changed.add(symbol)
        if stop_price is not None:
            order.status = PENDING_TRIGGER
            events: list[Event] = [Execution(ACCEPTED, order)]
            self._park_stop(book, order)
        else:
            events = [Execution(ACCEPTED, order)]
            self._execute(book, order, events)
        if book.buy_stops or book.sell_stops:
            self._run_triggers(book, events)
        return events

    def reject(
        self,
        owner: str,
        symbol: str,
        side: int,
        reason: str,
        *,
        order_type: str = LIMIT,
        tif: str = DAY,
        quantity: int = 0,
        ref: object = None,
    ) -> Execution:
        """An order refused before it could be read in full (bad fields): it still gets an
        order id, so the refusal can be reported and looked up like any other order."""
        self._order_ids += 1
        order = Order(self._order_ids, owner, symbol, side, order_type, tif, None, quantity, None, ref)
        order.status = REJECTED
        order.leaves = 0
        return Execution(REJECTED, order, reason)

    def restore(self, order: Order) -> Order:
        """An order as it stood before a restart (its quantities and status set), under a
        new engine id. A working one goes back where it was — resting behind the orders
        restored before it, or waiting for its trigger — without matching: it did not cross
        the book when it was saved."""
        self._order_ids += 1
        order.order_id = self._order_ids
        # The engine compares statuses by identity: use its own constants, not a copy.
        order.status = _STATUSES[order.status]
        book = self.books.get(order.symbol)
        if order.status not in WORKING or book is None:
            return order
        self.changed.add(order.symbol)
        if order.status is PENDING_TRIGGER:
            self._park_stop(book, order)
        elif order.price is not None and order.leaves > 0:
            self._rest(book, order)
        return order

    def cancel(self, order_id: int, reason: str = Reason.CANCEL_REQUESTED) -> list[Event]:
        order = self.live.pop(order_id, None)
        if order is None:
            return [CancelRejected(None, Reason.UNKNOWN_ORDER)]
        if order.status is PENDING_TRIGGER:
            order.seq = -1
        else:
            _remove(order)
        order.leaves = 0
        order.status = CANCELLED
        self.changed.add(order.symbol)
        return [Execution(CANCELLED, order, reason)]

    def replace(
        self,
        order_id: int,
        quantity: int,
        price: int | None = None,
        stop_price: int | None = None,
        max_floor: int | None = None,
    ) -> list[Event]:
        """Change a working order's quantity, price, stop price or display quantity (None
        keeps it). It keeps its time priority only when nothing but a smaller quantity
        changes."""
        order = self.live.get(order_id)
        if order is None:
            return [CancelRejected(None, Reason.UNKNOWN_ORDER)]
        if max_floor is None:
            max_floor = order.max_floor
        book = self.books[order.symbol]
        reason = (
            self._check_halted(book.symbol)
            or self._check_terms(book, order.order_type, quantity, price, stop_price)
            or self._check_display(book, order.order_type, max_floor)
        )
        if reason is None and quantity <= order.cum:
            reason = Reason.QUANTITY_NOT_ABOVE_FILLED
        if reason is not None:
            return [CancelRejected(order, reason)]
        self.changed.add(order.symbol)
        new_leaves = quantity - order.cum
        events: list[Event]
        if order.status is PENDING_TRIGGER:
            order.quantity, order.leaves, order.price = quantity, new_leaves, price
            order.max_floor = max_floor
            if stop_price != order.stop_price:
                order.stop_price = stop_price
                self._park_stop(book, order)  # the old heap entry goes stale with the old seq
            events = [Execution(REPLACED, order)]
        elif price != order.price or quantity > order.quantity or max_floor != order.max_floor:
            _remove(order)
            del self.live[order_id]
            order.quantity, order.leaves, order.price = quantity, new_leaves, price
            order.max_floor = max_floor
            events = [Execution(REPLACED, order)]
            self._execute(book, order, events)
        else:
            # Smaller: what it shows shrinks only once the leaves fall below it.
            shown = min(order.shown, new_leaves)
            order.level.quantity += shown - order.shown  # type: ignore[union-attr]
            order.quantity, order.leaves, order.shown = quantity, new_leaves, shown
            events = [Execution(REPLACED, order)]
        if book.buy_stops or book.sell_stops:
            self._run_triggers(book, events)
        return events

    def expire_day_orders(self, trading_date: date | None = None) -> list[Event]:
        """At the close of `trading_date`: DAY orders expire, and GTD orders whose expire date
        it is (or has passed); GTC orders, and GTD orders of a later date, stay in the book."""
        events: list[Event] = []
        for order in sorted(self.live.values(), key=lambda o: o.order_id):
            if order.tif == GTC or (
                order.tif == GTD
                and order.expire_date is not None
                and (trading_date is None or order.expire_date > trading_date)
            ):
                continue
            del self.live[order.order_id]
            if order.status is PENDING_TRIGGER:
                order.seq = -1
            else:
                _remove(order)
            order.level = order.prev = order.next = None
            order.leaves = 0
            order.status = EXPIRED
            events.append(
                Execution(EXPIRED, order, Reason.END_OF_DAY if order.tif == DAY else Reason.EXPIRE_DATE)
            )
            self.changed.add(order.symbol)
        return events

    def new_day(self) -> None:
        for book in self.books.values():
            book.new_day()
            self.changed.add(book.symbol)

    def halt(self, symbol: str | None, reason: str) -> None:
        """Halt one symbol, or the whole market when `symbol` is None. Resting orders stay;
        new orders and replaces are rejected, cancels still work."""
        if symbol is None:
            self.market_halt = reason
        else:
            self.symbol_halts[symbol] = reason

    def resume(self, symbol: str | None) -> None:
        if symbol is None:
            self.market_halt = None
        else:
            self.symbol_halts.pop(symbol, None)

    def halt_reason(self, symbol: str) -> str | None:
        return self.market_halt if self.market_halt is not None else self.symbol_halts.get(symbol)

    def compact(self) -> None:
        for book in self.books.values():
            book.bids.compact()
            book.asks.compact()

    # ---- queries --------------------------------------------------------------------------

    def book(self, symbol: str) -> Book | None:
        return self.books.get(symbol)

    def depth(
        self, symbol: str, levels: int
    ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        book = self.books[symbol]
        return book.bids.depth(levels), book.asks.depth(levels)

    def drain_changed(self) -> set[str]:
        changed, self.changed = self.changed, set()
        return changed

    # ---- internals ------------------------------------------------------------------------

    def _check_halted(self, symbol: str) -> str | None:
        if not self.session_open:
            return Reason.MARKET_CLOSED
        if self.market_halt is not None or symbol in self.symbol_halts:
            return Reason.HALTED
        return None

    def _check_terms(
        self, book: Book, order_type: str, quantity: int, price: int | None, stop_price: int | None
    ) -> str | None:
        if quantity <= 0:
            return Reason.BAD_QUANTITY
        if quantity % book.lot:
            return Reason.NOT_LOT_MULTIPLE
        wants_price = order_type in (LIMIT, STOP_LIMIT)
        wants_stop = order_type in (STOP, STOP_LIMIT)
        if (price is not None) != wants_price or (stop_price is not None) != wants_stop:
            return Reason.BAD_ORDER
        if price is not None and not book.band_low <= price <= book.band_high:
            return Reason.OUTSIDE_BAND
        if stop_price is not None and not book.band_low <= stop_price <= book.band_high:
            return Reason.OUTSIDE_BAND
        return None

    @staticmethod
    def _check_display(book: Book, order_type: str, max_floor: int) -> str | None:
        """An iceberg's display: whole lots of a priced order. A display of the whole order
        or more just shows all of it."""
        if max_floor and (max_floor < 0 or max_floor % book.lot or order_type not in (LIMIT, STOP_LIMIT)):
            return Reason.BAD_DISPLAY_QUANTITY
        return None

    def _check_new(self, order: Order, book: Book | None) -> str | None:
        if book is None:
            return Reason.UNKNOWN_SYMBOL
        if order.order_type not in ORDER_TYPES or order.tif not in TIMES_IN_FORCE:
            return Reason.BAD_ORDER
        return (
            self._check_halted(book.symbol)
            or self._check_terms(book, order.order_type, order.quantity, order.price, order.stop_price)
            or self._check_display(book, order.order_type, order.max_floor)
        )

    def _execute(self, book: Book, order: Order, events: list[Event]) -> None:
        """Match an incoming (or repriced, or triggered) order, then rest or cancel what is left."""
        price = order.price
        if order.side == BUY:
            opposite = book.asks
            bound = _UNBOUNDED if price is None else price
        else:
            opposite = book.bids
            bound = _UNBOUNDED if price is None else -price
        if order.tif == FOK and self._fillable(opposite, bound, order) < order.leaves:
            self._kill(order, Reason.FOK_NOT_FILLABLE, events)
            return
        self._match(book, opposite, bound, order, events)
        if not order.leaves or order.status is CANCELLED:
            return
        if price is None:
            self._kill(order, Reason.NO_LIQUIDITY, events)
        elif order.tif not in RESTING_TIMES_IN_FORCE:
            self._kill(order, Reason.IOC_REMAINDER, events)
        else:
            self._rest(book, order)

    def _kill(self, order: Order, reason: str, events: list[Event]) -> None:
        order.leaves = 0
        order.status = CANCELLED
        events.append(Execution(CANCELLED, order, reason))

    def _match(self, book: Book, opposite: BookSide, bound: int, order: Order, events: list[Event]) -> None:
        heap, levels, live = opposite.heap, opposite.levels, self.live
        owner = order.owner
        leaves = order.leaves
        while leaves:
            while heap:
                key = heap[0]
                level = levels[key]
                if level.quantity:
                    break
                heappop(heap)
                del levels[key]
            else:
                break
            if key > bound:
                break
            price = level.price
            while leaves and level.quantity:
                resting = level.head
                assert resting is not None
                if resting.owner == owner:
                    order.leaves = leaves
                    if self._prevent_self_trade(level, resting, order, events):
                        return
                    continue
                fill = leaves if leaves < resting.shown else resting.shown
                self._match_ids += 1
                leaves -= fill
                level.quantity -= fill
                resting.shown -= fill
                resting.leaves -= fill
                resting.cum += fill
                resting.notional += fill * price
                if resting.leaves:
                    resting.status = PARTIALLY_FILLED
                    if not resting.shown:
                        # An iceberg's shown part is gone: refill it at the back of the level.
                        _remove(resting)
                        _append(level, resting)
                else:
                    resting.status = FILLED
                    # The head leaves its level (its shares are already counted out).
                    level.head = nxt = resting.next
                    if nxt is None:
                        level.tail = None
                    else:
                        nxt.prev = None
                    resting.level = resting.next = None
                    level.count -= 1
                    del live[resting.order_id]
                order.leaves = leaves
                order.cum += fill
                order.notional += fill * price
                order.status = PARTIALLY_FILLED if leaves else FILLED
                events.append(Execution(TRADE, order, None, fill, price, self._match_ids, True))
                events.append(Execution(TRADE, resting, None, fill, price, self._match_ids, False))
                book.last = price
                book.last_qty = fill
                book.volume += fill
                book.turnover += fill * price
                book.trades += 1
                if not book.open:
                    book.open = book.high = book.low = price
                elif price > book.high:
                    book.high = price
                elif price < book.low:
                    book.low = price

    def _prevent_self_trade(self, level: Level, resting: Order, order: Order, events: list[Event]) -> bool:
        """Apply the self-trade mode; True when the incoming order is done."""
        mode = self.self_trade
        if mode != CANCEL_NEWEST:
            _remove(resting)
            del self.live[resting.order_id]
            self._kill(resting, Reason.SELF_TRADE, events)
        if mode != CANCEL_OLDEST:
            self._kill(order, Reason.SELF_TRADE, events)
            return True
        return False

    def _fillable(self, opposite: BookSide, bound: int, order: Order) -> int:
        """Shares the order could take right now (for fill-or-kill)."""
        wanted, found = order.leaves, 0
        skip_own = self.self_trade == CANCEL_OLDEST
        for key in sorted(k for k, level in opposite.levels.items() if level.quantity and k <= bound):
            resting = opposite.levels[key].head
            while resting is not None:
                if resting.owner == order.owner:
                    if not skip_own:
                        return found
                    resting = resting.next
                    continue
                found += resting.leaves
                if found >= wanted:
                    return found
                resting = resting.next
        return found

    def _rest(self, book: Book, order: Order) -> None:
        side = book.bids if order.side == BUY else book.asks
        key = side.sign * order.price  # type: ignore[operator]
        level = side.levels.get(key)
        if level is None:
            level = side.levels[key] = Level(order.price)  # type: ignore[arg-type]
            heappush(side.heap, key)
        _append(level, order)
        self.live[order.order_id] = order

    def _park_stop(self, book: Book, order: Order) -> None:
        self._seq += 1
        order.seq = self._seq
        self.live[order.order_id] = order
        stop = order.stop_price
        assert stop is not None
        if order.side == BUY:
            heappush(book.buy_stops, (stop, self._seq, order))
        else:
            heappush(book.sell_stops, (-stop, self._seq, order))

    def _run_triggers(self, book: Book, events: list[Event]) -> None:
        """Fire stops whose stop price has traded; their trades may fire more."""
        while book.last:
            fired = _pop_triggered(book.buy_stops, book.last) or _pop_triggered(book.sell_stops, -book.last)
            if fired is None:
                return
            del self.live[fired.order_id]
            fired.seq = 0
            fired.status = NEW if not fired.cum else PARTIALLY_FILLED
            events.append(Execution(TRIGGERED, fired))
            self._execute(book, fired, events)


def _pop_triggered(stops: list[tuple[int, int, Order]], last_key: int) -> Order | None:
    while stops:
        key, seq, order = stops[0]
        if order.seq != seq or order.status is not PENDING_TRIGGER:
            heappop(stops)
            continue
        if key <= last_key:
            heappop(stops)
            return order
        return None
    return None

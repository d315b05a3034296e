"""The OMS's PostgreSQL store (schema `orders`), on raw asyncpg: the order path is hot.

Idempotency and exactly-once live in constraints (see migrations/001_orders.sql): a new
order is an INSERT … ON CONFLICT on (user, key); a fill is unique by exec id and by
(order, cumulative quantity); an event and an audit row are unique per order version. Every
change is written with its event, its outbox rows and its audit row in one transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any

import asyncpg

from svc_orders.app.ports import (
    AuditEntry,
    CommandKind,
    EventPosition,
    EventRecord,
    IntradayExposure,
    Oversold,
    ReportClaim,
    ReportEnvelope,
    ReportKey,
    Reservation,
    ReservationGuard,
    WorkingOrders,
)
from svc_orders.domain.limits import LimitSet
from svc_orders.domain.model import (
    Contingency,
    ExitTerms,
    Fill,
    FundsAction,
    Leg,
    Order,
    OrderType,
    PendingChange,
    Product,
    Side,
    Status,
    TimeInForce,
    Trail,
    Transition,
)
from svc_orders.domain.risk import RiskLimits, TradingControls
from svc_orders.transport import wire
from svc_runtime import outbox, pagination
from svc_runtime.batching import Coalescer
from svc_runtime.errors import Aborted, ResourceExhausted
from svc_runtime.ids import new_id
from svc_runtime.messaging import Topology
from svc_runtime.replica import ReplicaReads

log = logging.getLogger(__name__)

SCHEMA = "orders"

# New orders of distinct users in one statement, each atomic on its own (no transaction
# round trips): take one token of the user's order rate (a token bucket refilled by elapsed
# time) unless the key was used before, and record the order only if a token was taken.
# Rate-limited → nothing is written; a replay → no token is taken. Two attempts racing on
# one new key both take a token and one insert yields to the other (ON CONFLICT): a token
# lost, never a second order. The users' rate rows are locked in user order, so two
# statements never wait on each other in a cycle.
_RESERVE = """
WITH input AS MATERIALIZED (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::bigint[], $11::numeric[], $12::numeric[], $13::numeric[],
        $14::text[], $15::bigint[], $16::text[], $17::text[], $18::timestamptz[],
        $19::numeric[], $20::numeric[], $21::date[], $22::text[], $23::text[], $24::text[],
        $25::text[], $26::text[], $27::numeric[], $28::numeric[], $29::numeric[], $30::numeric[],
        $31::numeric[], $32::bigint[]
    ) WITH ORDINALITY AS t(
        order_id, user_id, client_order_id, fingerprint, symbol, side, order_type, time_in_force,
        product, quantity, limit_price, stop_price, protection_price, status, version,
        request_id, client_ip, create_time, burst, rate, expire_date, tag,
        leg, parent_order_id, oco_group, contingency, exit_target_price, exit_stop_price,
        exit_stop_protection, trail_amount, trail_percent, display_quantity, n)
), existing AS MATERIALIZED (
    SELECT i.user_id FROM input i
    WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = i.user_id AND o.client_order_id = i.client_order_id)
), token AS (
    INSERT INTO order_rate AS r (user_id, tokens, refilled_at)
    SELECT user_id, burst - 1, clock_timestamp() FROM input
    WHERE user_id NOT IN (SELECT user_id FROM existing) ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE
        SET tokens = LEAST(excluded.tokens + 1, r.tokens
                           + (SELECT rate FROM input WHERE input.user_id = r.user_id)
                           * GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - r.refilled_at))) - 1,
            refilled_at = clock_timestamp()
        WHERE LEAST(excluded.tokens + 1, r.tokens
                    + (SELECT rate FROM input WHERE input.user_id = r.user_id)
                    * GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - r.refilled_at))) >= 1
    RETURNING user_id
), inserted AS (
    INSERT INTO orders (
        order_id, user_id, client_order_id, fingerprint, symbol, side, order_type, time_in_force,
        product, quantity, limit_price, stop_price, protection_price, status, version,
        request_id, client_ip, create_time, update_time, expire_date, tag,
        leg, parent_order_id, oco_group, contingency, exit_target_price, exit_stop_price, exit_stop_protection,
        trail_amount, trail_percent, display_quantity)
    SELECT order_id, user_id, client_order_id, fingerprint, symbol, side, order_type, time_in_force,
           product, quantity, limit_price, stop_price, protection_price, status, version,
           request_id, client_ip, create_time, create_time, expire_date, tag,
           leg, parent_order_id, oco_group, contingency, exit_target_price, exit_stop_price,
           exit_stop_protection, trail_amount, trail_percent, display_quantity
    FROM input WHERE user_id IN (SELECT user_id FROM token) ORDER BY n
    ON CONFLICT (user_id, client_order_id) DO NOTHING
    RETURNING user_id
)
SELECT i.user_id IN (SELECT user_id FROM existing) AS existed,
       i.user_id IN (SELECT user_id FROM token) AS took_token,
       i.user_id IN (SELECT user_id FROM inserted) AS created
FROM input i ORDER BY i.n
"""

# An order the broker creates itself (a contingent leg): no rate token, no key of a client.
_INSERT_ORDER = """
INSERT INTO orders (
    order_id, user_id, client_order_id, fingerprint, symbol, side, order_type, time_in_force,
    product, quantity, limit_price, stop_price, protection_price, status, version,
    request_id, client_ip, create_time, update_time, expire_date, tag,
    leg, parent_order_id, oco_group, contingency, exit_target_price, exit_stop_price, exit_stop_protection,
    trail_amount, trail_percent, display_quantity)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18,
        $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30)
ON CONFLICT DO NOTHING
"""

# A reservation's parameters: the order's own columns, the rate's burst and refill, and its
# family columns (in `_RESERVE`'s column order).
_ReserveArgs = tuple[tuple[object, ...], Decimal, Decimal, tuple[object, ...]]
RESERVATIONS_PER_BATCH = 64


def _reserve_columns(batch: Sequence[_ReserveArgs]) -> list[list[object]]:
    """`_RESERVE`'s arrays: one per column, one element per reservation."""
    rows = [(*columns, burst, rate, *family) for columns, burst, rate, family in batch]
    return [list(column) for column in zip(*rows, strict=True)]


def _rounds(batch: Sequence[_ReserveArgs]) -> list[list[int]]:
    """The batch's positions in rounds of distinct users, each round in user order: a user's
    second reservation waits for the round after its first, which it then sees."""
    rounds: list[list[int]] = []
    taken: dict[object, int] = {}
    for k, (columns, _, _, _) in enumerate(batch):
        user = columns[1]
        index = taken.get(user, -1) + 1
        taken[user] = index
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(k)
    return [sorted(positions, key=lambda k: str(batch[k][0][1])) for positions in rounds]


_SECONDS_TO_NEXT_TOKEN = """
SELECT (1 - LEAST($2::numeric, tokens + $3::numeric
                  * GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - refilled_at)))) / $3::numeric
FROM order_rate WHERE user_id = $1
"""

# Changes in one round trip: each order (at the version it was read at, in its last state
# of the batch), and for every change its event (with its outbox row), its audit row, its
# fill and its executor command, if it has them, inserted in the order of the changes.
_SAVE_CHANGES = """
WITH change AS MATERIALIZED (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::numeric[], $7::numeric[],
        $8::numeric[], $9::bigint[], $10::numeric[], $11::text[], $12::text[], $13::bigint[],
        $14::boolean[], $15::text[], $16::text[], $17::timestamptz[], $18::text[], $19::text[],
        $20::bytea[], $21::text[], $22::text[], $23::text[], $24::text[], $25::text[], $26::text[],
        $27::numeric[], $28::numeric[], $29::numeric[], $30::text[], $31::text[], $32::text[],
        $33::text[], $34::text[], $35::text[], $36::text[], $37::bigint[], $38::numeric[],
        $39::bigint[], $40::timestamptz[], $41::text[], $42::text[], $43::bytea[], $44::text[]
    ) WITH ORDINALITY AS c(
        order_id, user_id, read_version, status, quantity, limit_price, stop_price,
        protection_price, filled_quantity, filled_value, exchange_order_id, status_reason, version,
        triggered, pending, resume_status, update_time, event_id, event_type,
        payload, action, actor, request_id, client_ip, from_status, exec_id,
        last_price, bid_price, ask_price, detail, subject, headers,
        fill_exec_id, symbol, side, product, fill_quantity, fill_price,
        fill_cumulative, fill_time, command_id, command_subject, command_payload, command_headers, n)
), final AS (
    SELECT DISTINCT ON (order_id) * FROM change ORDER BY order_id, n DESC
), updated AS (
    UPDATE orders o SET
        status = f.status, quantity = f.quantity, limit_price = f.limit_price,
        stop_price = f.stop_price, protection_price = f.protection_price,
        filled_quantity = f.filled_quantity, filled_value = f.filled_value,
        exchange_order_id = f.exchange_order_id, status_reason = f.status_reason,
        version = f.version, triggered = f.triggered, pending = f.pending::jsonb,
        resume_status = f.resume_status, update_time = f.update_time
    FROM final f
    WHERE o.user_id = ANY($45::text[]) AND o.user_id = f.user_id AND o.order_id = f.order_id
      AND o.version = f.read_version
    RETURNING o.order_id
), saved AS (
    SELECT c.* FROM change c JOIN updated u USING (order_id)
), event AS (
    INSERT INTO order_events (event_id, order_id, user_id, version, event_type, payload, event_time)
    SELECT event_id, order_id, user_id, version, event_type, payload, update_time FROM saved ORDER BY n
), audit AS (
    INSERT INTO audit_log (action, actor, request_id, client_ip, user_id, order_id, order_version,
                           from_status, to_status, exec_id, last_price, bid_price, ask_price, detail)
    SELECT action, actor, request_id, client_ip, user_id, order_id, version, from_status, status,
           exec_id, last_price, bid_price, ask_price, detail
    FROM saved ORDER BY n
), outboxed AS (
    -- Each change's event, then its command: the relay publishes rows in this order.
    INSERT INTO outbox (msg_id, subject, payload, headers)
    SELECT msg_id, subject, payload, headers::jsonb FROM (
        SELECT n, 0 AS part, event_id AS msg_id, subject, payload, headers FROM saved
        UNION ALL
        SELECT n, 1, command_id, command_subject, command_payload, command_headers
        FROM saved WHERE command_id IS NOT NULL
    ) AS message ORDER BY n, part
), fill AS (
    INSERT INTO trades (exec_id, order_id, user_id, symbol, side, product, quantity, price,
                        cumulative_quantity, execute_time)
    SELECT fill_exec_id, order_id, user_id, symbol, side, product, fill_quantity, fill_price,
           fill_cumulative, fill_time
    FROM saved WHERE fill_exec_id IS NOT NULL ORDER BY n
)
SELECT count(*) FROM updated
"""

# A lane's first statement: claim its reports' exec ids, lock their orders and say for each
# report whether a fill at its cumulative quantity is already recorded, in one round trip. An
# order is locked even for a repeated report: the lane's transaction holds only its own
# orders, so the lock costs nothing and keeps the statement single.
_CLAIM_REPORTS = """
WITH input AS MATERIALIZED (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
        WITH ORDINALITY AS t(exec_id, user_id, order_id, exec_type, cumulative, n)
), claim AS (
    INSERT INTO exec_reports (exec_id, user_id, order_id, exec_type, outcome)
    SELECT exec_id, user_id, order_id, exec_type, 'applied' FROM input ORDER BY n
    ON CONFLICT (user_id, exec_id) DO NOTHING
    RETURNING user_id, exec_id
), locked AS MATERIALIZED (
    SELECT * FROM orders
    WHERE user_id = ANY($6::text[]) AND (user_id, order_id) IN (SELECT user_id, order_id FROM input)
    ORDER BY order_id FOR UPDATE
)
SELECT EXISTS (SELECT 1 FROM claim c WHERE c.user_id = i.user_id AND c.exec_id = i.exec_id) AS claimed,
       i.cumulative > 0 AND EXISTS (
           SELECT 1 FROM trades t
           WHERE t.user_id = i.user_id AND t.order_id = i.order_id AND t.cumulative_quantity = i.cumulative
       ) AS fill_recorded,
       locked.*
FROM input i LEFT JOIN locked ON locked.user_id = i.user_id AND locked.order_id = i.order_id
ORDER BY i.n
"""

_INSERT_AUDIT = """
INSERT INTO audit_log (action, actor, request_id, client_ip, user_id, order_id, order_version,
                       from_status, to_status, exec_id, last_price, bid_price, ask_price, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
"""

_INSERT_FUNDS_ACTION = """
INSERT INTO funds_actions (action_id, order_id, user_id, kind, reason, quantity, price)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (action_id) DO NOTHING
"""


def _pending_to_json(pending: PendingChange | None) -> str | None:
    if pending is None:
        return None
    return json.dumps(
        {
            "kind": pending.kind,
            "request_id": pending.request_id,
            "quantity": pending.quantity,
            "limit_price": None if pending.limit_price is None else str(pending.limit_price),
            "stop_price": None if pending.stop_price is None else str(pending.stop_price),
            "protection_price": None if pending.protection_price is None else str(pending.protection_price),
            "block_raised": pending.block_raised,
        }
    )


def _pending_from_json(text: str | None) -> PendingChange | None:
    if not text:
        return None
    data = json.loads(text)

    def dec(key: str) -> Decimal | None:
        return None if data.get(key) is None else Decimal(data[key])

    return PendingChange(
        kind=data["kind"],
        request_id=data["request_id"],
        quantity=data.get("quantity"),
        limit_price=dec("limit_price"),
        stop_price=dec("stop_price"),
        protection_price=dec("protection_price"),
        block_raised=bool(data.get("block_raised")),
    )


def order_from_row(row: asyncpg.Record) -> Order:
    return Order(
        order_id=row["order_id"],
        user_id=row["user_id"],
        client_order_id=row["client_order_id"],
        fingerprint=row["fingerprint"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        type=OrderType(row["order_type"]),
        time_in_force=TimeInForce(row["time_in_force"]),
        product=Product(row["product"]),
        quantity=row["quantity"],
        limit_price=row["limit_price"],
        stop_price=row["stop_price"],
        protection_price=row["protection_price"],
        status=Status(row["status"]),
        create_time=row["create_time"],
        update_time=row["update_time"],
        filled_quantity=row["filled_quantity"],
        filled_value=row["filled_value"],
        exchange_order_id=row["exchange_order_id"],
        status_reason=row["status_reason"],
        version=row["version"],
        triggered=row["triggered"],
        pending=_pending_from_json(row["pending"]),
        resume_status=Status(row["resume_status"]) if row["resume_status"] else None,
        request_id=row["request_id"],
        client_ip=row["client_ip"],
        expire_date=row["expire_date"],
        tag=row["tag"],
        leg=Leg(row["leg"]),
        parent_order_id=row["parent_order_id"] or "",
        oco_group=row["oco_group"] or "",
        exit=ExitTerms(
            contingency=Contingency(row["contingency"]),
            target_price=row["exit_target_price"],
            stop_price=row["exit_stop_price"],
            stop_protection=row["exit_stop_protection"],
        ),
        trail=Trail(amount=row["trail_amount"], percent=row["trail_percent"])
        if row["trail_amount"] is not None or row["trail_percent"] is not None
        else None,
        display_quantity=row["display_quantity"],
    )


def _new_order_columns(order: Order) -> tuple[object, ...]:
    """A new order's own columns, in the order the inserts take them."""
    return (
        order.order_id,
        order.user_id,
        order.client_order_id,
        order.fingerprint,
        order.symbol,
        order.side.value,
        order.type.value,
        order.time_in_force.value,
        order.product.value,
        order.quantity,
        order.limit_price,
        order.stop_price,
        order.protection_price,
        order.status.value,
        order.version,
        order.request_id,
        order.client_ip,
        order.create_time,
    )


def _family_columns(order: Order) -> tuple[object, ...]:
    """The validity, tag, contingent, trailing and display columns, in the order the inserts
    take them."""
    return (
        order.expire_date,
        order.tag,
        order.leg.value,
        order.parent_order_id or None,
        order.oco_group or None,
        order.exit.contingency.value,
        order.exit.target_price,
        order.exit.stop_price,
        order.exit.stop_protection,
        order.trail.amount if order.trail else None,
        order.trail.percent if order.trail else None,
        order.display_quantity,
    )


def command_id(order: Order, kind: CommandKind) -> str:
    """One command per order version, so a command's id is derived, never random: a
    repeated write of the same change can never make a second command."""
    return f"{order.order_id}-v{order.version}-{kind.value}"


class PgUnitOfWork:
    """One transaction on one pooled connection."""

    def __init__(self, store: PostgresOrderStore) -> None:
        self.store = store
        self.conn: asyncpg.Connection | None = None
        self._tx: Any = None
        self._committed = False
        # Whose orders this transaction reached: their reads skip the replica until it has them.
        self._users: set[str] = set()

    async def __aenter__(self) -> PgUnitOfWork:
        self.conn = await self.store.pool.acquire()
        try:
            self._tx = self.conn.transaction()
            await self._tx.start()
        except BaseException:
            await self.store.pool.release(self.conn)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.conn is not None
        try:
            if not self._committed:
                await self._tx.rollback()
        finally:
            await self.store.pool.release(self.conn)

    @property
    def c(self) -> asyncpg.Connection:
        assert self.conn is not None, "unit of work not entered"
        return self.conn

    async def commit(self) -> None:
        await self._tx.commit()
        self._committed = True
        if self.store.reads is not None:
            self.store.reads.wrote(*self._users)

    async def lock_order(self, user_id: str, order_id: str, *, skip_locked: bool = False) -> Order | None:
        lock = "FOR UPDATE SKIP LOCKED" if skip_locked else "FOR UPDATE"
        row = await self.c.fetchrow(
            f"SELECT * FROM orders WHERE user_id = $1 AND order_id = $2 {lock}", user_id, order_id
        )
        if row is None:
            return None
        self._users.add(row["user_id"])
        return order_from_row(row)

    async def lock_orders(self, orders: Sequence[Order]) -> dict[str, Order]:
        # The users' ids route the statement to their partitions; the order ids pick the rows.
        rows = await self.c.fetch(
            "SELECT * FROM orders WHERE user_id = ANY($1::text[]) AND order_id = ANY($2::text[]) "
            "ORDER BY order_id FOR UPDATE",
            sorted({order.user_id for order in orders}),
            [order.order_id for order in orders],
        )
        self._users.update(row["user_id"] for row in rows)
        return {row["order_id"]: order_from_row(row) for row in rows}

    async def insert_order(self, order: Order) -> None:
        await self.c.execute(
            _INSERT_ORDER,
            *_new_order_columns(order),
            *_family_columns(order),
        )

    async def lock_group(self, oco_group: str) -> list[Order]:
        rows = await self.c.fetch(
            "SELECT * FROM orders WHERE oco_group = $1 ORDER BY order_id FOR UPDATE", oco_group
        )
        return [order_from_row(row) for row in rows]

    async def delete_reserved(self, user_id: str, order_id: str) -> None:
        await self.c.execute(
            "DELETE FROM orders WHERE user_id = $1 AND order_id = $2 AND status = 'FUNDS_PENDING'",
            user_id,
            order_id,
        )

    async def save(
        self, transition: Transition, audit: AuditEntry, *, command: CommandKind | None = None
    ) -> None:
        await self.save_changes([(transition, audit)], command=command)

    async def save_changes(
        self, changes: Sequence[tuple[Transition, AuditEntry]], *, command: CommandKind | None = None
    ) -> None:
        # An order changed twice is checked against the version its first change read.
        read_at: dict[str, int] = {}
        for transition, _ in changes:
            read_at.setdefault(transition.after.order_id, transition.before.version)
        rows = [
            self._change_row(transition, audit, command, read_at[transition.after.order_id])
            for transition, audit in changes
        ]
        users = sorted({t.after.user_id for t, _ in changes})
        self._users.update(users)
        updated = await self.c.fetchval(
            _SAVE_CHANGES, *(list(column) for column in zip(*rows, strict=True)), users
        )
        if updated != len(read_at):
            raise Aborted(
                f"{len(read_at) - updated} of orders {sorted(read_at)} changed concurrently",
                reason="CONCURRENT_MODIFICATION",
            )
        for transition, _ in changes:
            if transition.funds_action is not None:
                await self._insert_funds_action(transition.funds_action, transition.after)

    def _change_row(
        self, transition: Transition, audit: AuditEntry, command: CommandKind | None, read_version: int
    ) -> list[object]:
        """One change as `_SAVE_CHANGES`' columns."""
        before, order, fill = transition.before, transition.after, transition.fill
        assert transition.changed and transition.event is not None
        now = order.update_time
        event_id = new_id("evt")
        event = wire.event_to_proto(
            event_id=event_id,
            event=transition.event,
            order=order,
            fill=fill,
            when=now,
            request_id=audit.request_id,
        )
        snapshot = audit.snapshot
        subject = self.store.topology.order_event_subject(order.user_id)
        return [
            order.order_id,
            order.user_id,
            read_version,
            order.status.value,
            order.quantity,
            order.limit_price,
            order.stop_price,
            order.protection_price,
            order.filled_quantity,
            order.filled_value,
            order.exchange_order_id,
            order.status_reason,
            order.version,
            order.triggered,
            _pending_to_json(order.pending),
            order.resume_status.value if order.resume_status else None,
            now,
            event_id,
            transition.event.value,
            event.SerializeToString(),
            audit.action,
            audit.actor,
            audit.request_id,
            audit.client_ip,
            before.status.value,
            audit.exec_id,
            snapshot.last_price,
            snapshot.bid_price,
            snapshot.ask_price,
            audit.detail,
            subject,
            outbox.headers_json(event, event_id, subject),
            fill.exec_id if fill else None,
            order.symbol,
            order.side.value,
            order.product.value,
            fill.quantity if fill else None,
            fill.price if fill else None,
            fill.cumulative_quantity if fill else None,
            fill.execute_time if fill else None,
            *self._command_columns(order, command, audit.request_id),
        ]

    def _command_columns(self, order: Order, command: CommandKind | None, request_id: str) -> list[object]:
        if command is None:
            return [None, None, None, None]
        message = wire.command_for(order, command, order.update_time, request_id)
        message.command_id = command_id(order, command)
        subject = self.store.topology.order_command_subject(command.value)
        return [
            message.command_id,
            subject,
            message.SerializeToString(),
            outbox.headers_json(message, message.command_id, subject),
        ]

    async def _insert_funds_action(self, action: FundsAction, order: Order) -> None:
        await self.c.execute(
            _INSERT_FUNDS_ACTION,
            f"{order.order_id}-v{order.version}-{action.kind.lower()}",
            action.order_id,
            action.user_id,
            action.kind,
            action.reason,
            action.quantity,
            action.price,
        )

    async def _audit(
        self, audit: AuditEntry, order: Order | None, *, version: int | None, from_status: Status | None
    ) -> None:
        snapshot = audit.snapshot
        await self.c.execute(
            _INSERT_AUDIT,
            audit.action,
            audit.actor,
            audit.request_id,
            audit.client_ip,
            order.user_id if order else "",
            order.order_id if order else None,
            version,
            from_status.value if from_status else None,
            order.status.value if order else None,
            audit.exec_id,
            snapshot.last_price,
            snapshot.bid_price,
            snapshot.ask_price,
            audit.detail,
        )

    async def audit_only(self, order: Order, audit: AuditEntry) -> None:
        await self._audit(audit, order, version=None, from_status=order.status)

    async def claim_request(self, order: Order, request_id: str, kind: str, fingerprint: str) -> str | None:
        inserted = await self.c.fetchval(
            "INSERT INTO order_requests (user_id, order_id, request_id, kind, fingerprint) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, order_id, request_id) DO NOTHING RETURNING 1",
            order.user_id,
            order.order_id,
            request_id,
            kind,
            fingerprint,
        )
        if inserted:
            return None
        return await self.c.fetchval(
            "SELECT fingerprint FROM order_requests WHERE user_id = $1 AND order_id = $2 AND request_id = $3",
            order.user_id,
            order.order_id,
            request_id,
        )

    async def claim_reports_and_lock(self, reports: Sequence[ReportKey]) -> list[ReportClaim]:
        rows = await self.c.fetch(
            _CLAIM_REPORTS,
            [r.exec_id for r in reports],
            [r.user_id for r in reports],
            [r.order_id for r in reports],
            [r.exec_type for r in reports],
            [r.cumulative_quantity for r in reports],
            sorted({r.user_id for r in reports}),
        )
        return [
            ReportClaim(
                claimed=row["claimed"],
                order=order_from_row(row) if row["order_id"] is not None else None,
                fill_recorded=row["fill_recorded"],
            )
            for row in rows
        ]

    async def note_report_outcome(self, user_id: str, exec_id: str, outcome: str) -> None:
        await self.c.execute(
            "UPDATE exec_reports SET outcome = $3 WHERE user_id = $1 AND exec_id = $2",
            user_id,
            exec_id,
            outcome[:500],
        )

    async def record_unmatched(self, envelope: ReportEnvelope) -> None:
        await self.c.execute(
            "INSERT INTO unmatched_reports (exec_id, order_id, user_id, payload) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (exec_id) DO NOTHING",
            envelope.report.exec_id,
            envelope.order_id,
            envelope.user_id,
            envelope.payload,
        )


@dataclass(frozen=True)
class DueFundsAction:
    action_id: str
    action: FundsAction
    attempts: int


FundsActionHandler = Callable[[DueFundsAction], Awaitable[str | None]]


class PostgresOrderStore:
    def __init__(self, pool: asyncpg.Pool, topology: Topology, reads: ReplicaReads | None = None) -> None:
        self.pool = pool
        self.topology = topology
        # Order history and trades may come from a streaming replica (svc_runtime.replica).
        self.reads = reads
        # Reservations arriving while earlier ones are being written go together in the next
        # transaction (`_reserve_batch`).
        self._reservations: Coalescer[_ReserveArgs, asyncpg.Record] = Coalescer(
            self._reserve_batch, max_batch=RESERVATIONS_PER_BATCH, max_in_flight=2
        )

    def _read_pool(self, user_id: str | None) -> asyncpg.Pool:
        return self.pool if self.reads is None else self.reads.pool_for(user_id)

    def unit_of_work(self) -> PgUnitOfWork:
        return PgUnitOfWork(self)

    # --- placement ----------------------------------------------------------------------
    async def reserve(
        self, order: Order, limits: RiskLimits, guard: ReservationGuard | None = None
    ) -> Reservation:
        burst, rate = Decimal(limits.order_burst), limits.orders_per_second
        args: _ReserveArgs = (_new_order_columns(order), burst, rate, _family_columns(order))
        if guard is None:
            outcome = await self._reservations.submit(args)
        else:
            outcome = await self._reserve_guarded(order, args, guard)
        if outcome["created"]:
            if self.reads is not None:
                self.reads.wrote(order.user_id)
            return Reservation(order, created=True)
        if outcome["existed"] or outcome["took_token"]:
            existing = await self.find_by_key(order.user_id, order.client_order_id)
            if existing is None:  # the other attempt was refused and withdrew meanwhile
                raise Aborted("a concurrent attempt with this request_id just failed; retry", reason="RETRY")
            return Reservation(existing, created=False)
        wait = await self.pool.fetchval(_SECONDS_TO_NEXT_TOKEN, order.user_id, burst, rate)
        seconds = max(0.05, float(wait or 1))
        raise ResourceExhausted(
            f"too many orders: at most {limits.orders_per_second} per second; retry in {seconds:.2f}s",
            reason="ORDER_RATE_LIMITED",
            retry_after_seconds=seconds,
            metadata={"retry_after_seconds": f"{seconds:.3f}"},
        )

    async def _reserve_guarded(
        self, order: Order, args: _ReserveArgs, guard: ReservationGuard
    ) -> asyncpg.Record:
        async with self.pool.acquire() as conn, conn.transaction():
            # The user's guarded reservations one at a time, across replicas; other users'
            # go on. Each statement after the lock sees what the previous holder committed.
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LIMITS_LOCK, order.user_id)
            if not await conn.fetchval(_KEY_USED, order.user_id, order.client_order_id):
                guard(await _working_orders(conn, order.user_id, order.symbol, order.product.value))
            return (await conn.fetch(_RESERVE, *_reserve_columns([args])))[0]

    async def _reserve_batch(self, batch: list[_ReserveArgs]) -> list[asyncpg.Record | BaseException]:
        """Concurrent reservations in one statement: each its own outcome, one commit and one
        WAL flush for all. A user with several reservations in the batch has them in
        successive statements (`_rounds`), each its own transaction, so no statement holds
        a lock while it waits for another. If a statement fails (a deadlock with one outside
        the order path, say), nothing of it was written, and its reservations are made one
        by one instead."""
        outcomes: dict[int, asyncpg.Record | BaseException] = {}
        async with self.pool.acquire() as conn:
            for positions in _rounds(batch):
                records = await self._reserve_round(conn, [batch[k] for k in positions])
                outcomes.update(zip(positions, records, strict=True))
        return [outcomes[k] for k in range(len(batch))]

    async def _reserve_round(
        self, conn: asyncpg.Connection, round_: list[_ReserveArgs]
    ) -> list[asyncpg.Record | BaseException]:
        """One statement for reservations of distinct users; if it fails, one each."""
        try:
            return list(await conn.fetch(_RESERVE, *_reserve_columns(round_)))
        except asyncpg.PostgresError as error:
            if len(round_) == 1:
                return [error]
            log.warning("a batch of reservations failed; making them one by one", extra={"error": str(error)})
            return [(await self._reserve_round(conn, [args]))[0] for args in round_]

    async def find_by_key(self, user_id: str, client_order_id: str) -> Order | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM orders WHERE user_id = $1 AND client_order_id = $2", user_id, client_order_id
        )
        return order_from_row(row) if row else None

    async def get(self, user_id: str | None, order_id: str) -> Order | None:
        if user_id is None:
            # An operator's look-up by order id alone: off the hot path, it visits every partition.
            row = await self.pool.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
        else:
            row = await self.pool.fetchrow(
                "SELECT * FROM orders WHERE user_id = $1 AND order_id = $2", user_id, order_id
            )
        return order_from_row(row) if row else None

    # --- sweeper ------------------------------------------------------------------------
    async def intraday_exposure(self, since: datetime) -> IntradayExposure:
        rows = await self.pool.fetch(
            "SELECT user_id, order_id, symbol, side, status, filled_quantity FROM orders "
            "WHERE product = 'INTRADAY' AND create_time >= $1 ORDER BY create_time",
            since,
        )
        working: list[tuple[str, str, str]] = []
        net: dict[tuple[str, str], int] = {}
        for r in rows:
            if not Status(r["status"]).terminal:
                working.append((r["user_id"], r["order_id"], r["symbol"]))
            signed = r["filled_quantity"] if r["side"] == Side.BUY else -r["filled_quantity"]
            net[(r["user_id"], r["symbol"])] = net.get((r["user_id"], r["symbol"]), 0) + signed
        return IntradayExposure(working, net)

    # The background workers' scans below walk every user's orders on purpose: on a schema
    # distributed by user each runs per shard (docs/deployment.md, "Partitioning by user").
    async def stuck_orders(self, older_than: datetime, limit: int) -> list[Order]:
        rows = await self.pool.fetch(
            "SELECT * FROM orders WHERE status IN ('FUNDS_PENDING', 'PENDING_EXCHANGE') AND update_time < $1 "
            # Legs the broker made itself are sent on by the contingent worker.
            "AND NOT (status = 'FUNDS_PENDING' AND (parent_order_id IS NOT NULL OR leg = 'STOP_LOSS')) "
            "ORDER BY update_time LIMIT $2",
            older_than,
            limit,
        )
        return [order_from_row(r) for r in rows]

    async def trailing_stops(self, limit: int = 1000) -> list[Order]:
        """Trailing STOP orders still waiting for their trigger."""
        rows = await self.pool.fetch(
            "SELECT * FROM orders WHERE status = 'TRIGGER_PENDING' "
            "AND (trail_amount IS NOT NULL OR trail_percent IS NOT NULL) LIMIT $1",
            limit,
        )
        return [order_from_row(r) for r in rows]

    async def legs_to_send(self, limit: int) -> list[str]:
        """OCO groups with a leg the broker made that still waits to be sent (FUNDS_PENDING)."""
        rows = await self.pool.fetch(
            "SELECT DISTINCT oco_group FROM orders WHERE status = 'FUNDS_PENDING' "
            "AND (parent_order_id IS NOT NULL OR leg = 'STOP_LOSS') LIMIT $1",
            limit,
        )
        return [r["oco_group"] for r in rows]

    async def oversold_groups(self, limit: int) -> list[Oversold]:
        rows = await self.pool.fetch(_OVERSOLD_GROUPS, limit)
        return [
            Oversold(
                oco_group=r["oco_group"],
                user_id=r["user_id"],
                symbol=r["symbol"],
                product=r["product"],
                bought_back=int(r["bought_back"]),
                short=int(r["short"]),
            )
            for r in rows
        ]

    async def command_queued(self, order_id: str) -> bool:
        # The outbox only holds what is not yet published, so it stays small: a scan is cheap.
        return bool(
            await self.pool.fetchval(
                "SELECT 1 FROM outbox WHERE starts_with(msg_id, $1 || '-v') LIMIT 1", order_id
            )
        )

    # --- funds actions ------------------------------------------------------------------
    async def process_funds_actions(self, handler: FundsActionHandler, limit: int = 50) -> int:
        """Run due funds actions: each row is locked while its call runs (replicas skip
        it), deleted on success, rescheduled with backoff on failure."""
        done = 0
        async with self.pool.acquire() as conn, conn.transaction():
            # Every user's due actions: per shard on a schema distributed by user.
            rows = await conn.fetch(
                "SELECT * FROM funds_actions WHERE next_attempt_at <= now() ORDER BY next_attempt_at "
                "LIMIT $1 FOR UPDATE SKIP LOCKED",
                limit,
            )
            for row in rows:
                due = DueFundsAction(
                    action_id=row["action_id"],
                    action=FundsAction(
                        kind=row["kind"],
                        order_id=row["order_id"],
                        user_id=row["user_id"],
                        reason=row["reason"],
                        quantity=row["quantity"],
                        price=row["price"],
                    ),
                    attempts=row["attempts"],
                )
                error = await handler(due)
                if error is None:
                    await conn.execute(
                        "DELETE FROM funds_actions WHERE user_id = $1 AND action_id = $2",
                        due.action.user_id,
                        due.action_id,
                    )
                    done += 1
                else:
                    delay = min(60.0, 0.5 * 2 ** min(due.attempts, 7))
                    await conn.execute(
                        "UPDATE funds_actions SET attempts = attempts + 1, last_error = $2, "
                        "next_attempt_at = now() + make_interval(secs => $3) WHERE user_id = $4 AND action_id = $1",
                        due.action_id,
                        error[:500],
                        delay,
                        due.action.user_id,
                    )
        return done

    # --- streams ------------------------------------------------------------------------
    async def event_position(self, user_id: str, event_id: str) -> EventPosition | None:
        row = await self.pool.fetchrow(
            "SELECT seq, xid, running_xmin FROM order_events WHERE event_id = $1 AND user_id = $2",
            event_id,
            user_id,
        )
        return EventPosition(row["seq"], row["xid"], row["running_xmin"]) if row else None

    async def events_committed_late(self, user_id: str, after: EventPosition) -> list[EventRecord]:
        # Numbered before `after` by a transaction still running when it was written, other
        # than its own (which committed with it).
        rows = await self.pool.fetch(
            "SELECT event_id, payload FROM order_events WHERE user_id = $1 AND xid >= $2 "
            "AND xid <> $3 AND seq < $4 ORDER BY seq",
            user_id,
            after.running_xmin,
            after.xid,
            after.seq,
        )
        return [EventRecord(r["event_id"], bytes(r["payload"])) for r in rows]

    async def events_after(self, user_id: str, after_seq: int, limit: int) -> list[tuple[int, EventRecord]]:
        rows = await self.pool.fetch(
            "SELECT seq, event_id, payload FROM order_events WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            user_id,
            after_seq,
            limit,
        )
        return [(r["seq"], EventRecord(r["event_id"], bytes(r["payload"]))) for r in rows]

    # --- reads --------------------------------------------------------------------------
    async def list_orders(
        self,
        user_id: str | None,
        statuses: Sequence[Status],
        page_size: int,
        page_token: str,
        *,
        tag: str = "",
    ) -> tuple[list[Order], str]:
        query = ("orders", user_id, sorted(statuses), tag)
        cursor = pagination.decode_token(page_token, *query)
        status_values = [s.value for s in statuses]
        if Status.PENDING_EXCHANGE in statuses:
            status_values.append(Status.FUNDS_PENDING.value)
        rows = await self._read_pool(user_id).fetch(
            "SELECT * FROM orders WHERE ($1::text IS NULL OR user_id = $1) "
            "AND (cardinality($2::text[]) = 0 OR status = ANY($2::text[])) "
            "AND ($3::text IS NULL OR order_id < $3) AND ($5 = '' OR tag = $5) ORDER BY order_id DESC LIMIT $4",
            user_id,
            status_values,
            cursor,
            page_size + 1,
            tag,
        )
        orders = [order_from_row(r) for r in rows[:page_size]]
        token = pagination.encode_token(orders[-1].order_id, *query) if len(rows) > page_size else ""
        return orders, token

    async def list_trades(
        self, user_id: str | None, order_id: str, page_size: int, page_token: str, *, tag: str = ""
    ) -> tuple[list[tuple[Fill, Order]], str]:
        query = ("trades", user_id, order_id, tag)
        cursor = pagination.decode_token(page_token, *query)
        rows = await self._read_pool(user_id).fetch(
            "SELECT t.seq, t.exec_id, t.quantity AS fill_quantity, t.price, t.cumulative_quantity, t.execute_time, o.* "
            "FROM trades t JOIN orders o USING (order_id) "
            "WHERE ($1::text IS NULL OR t.user_id = $1) AND ($2 = '' OR t.order_id = $2) "
            "AND ($3::bigint IS NULL OR t.seq < $3) AND ($5 = '' OR o.tag = $5) ORDER BY t.seq DESC LIMIT $4",
            user_id,
            order_id,
            cursor,
            page_size + 1,
            tag,
        )
        trades = [
            (
                Fill(
                    exec_id=r["exec_id"],
                    order_id=r["order_id"],
                    quantity=r["fill_quantity"],
                    price=r["price"],
                    cumulative_quantity=r["cumulative_quantity"],
                    execute_time=r["execute_time"],
                ),
                order_from_row(r),
            )
            for r in rows[:page_size]
        ]
        token = pagination.encode_token(rows[page_size - 1]["seq"], *query) if len(rows) > page_size else ""
        return trades, token

    async def list_audit(
        self, user_id: str | None, order_id: str | None, page_size: int, page_token: str
    ) -> tuple[list[dict[str, Any]], str]:
        query = ("audit", user_id, order_id)
        cursor = pagination.decode_token(page_token, *query) or 0
        rows = await self.pool.fetch(
            "SELECT * FROM audit_log WHERE ($1::text IS NULL OR user_id = $1) "
            "AND ($2::text IS NULL OR order_id = $2) AND record_id > $3 ORDER BY record_id LIMIT $4",
            user_id,
            order_id,
            cursor,
            page_size + 1,
        )
        records = [dict(r) for r in rows[:page_size]]
        token = pagination.encode_token(records[-1]["record_id"], *query) if len(rows) > page_size else ""
        return records, token

    # --- trading controls ---------------------------------------------------------------
    async def load_controls(self) -> TradingControls:
        row = await self.pool.fetchrow("SELECT * FROM trading_controls")
        return _controls_from_row(row)

    async def update_controls(
        self, changes: dict[str, Any], request_id: str, audit: AuditEntry
    ) -> TradingControls:
        """Apply `changes` once per request id, with an audit row, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT * FROM trading_controls FOR UPDATE")
            if row["last_request_id"] == request_id:
                return _controls_from_row(row)
            current = _controls_from_row(row)
            halted = changes.get("trading_halted", current.trading_halted)
            reason = changes.get("halt_reason", current.halt_reason)
            symbols = sorted(changes.get("halted_symbols", current.halted_symbols))
            row = await conn.fetchrow(
                "UPDATE trading_controls SET trading_halted = $1, halt_reason = $2, halted_symbols = $3, "
                "version = version + 1, update_time = now(), last_request_id = $4 RETURNING *",
                halted,
                reason,
                symbols,
                request_id,
            )
            detail = json.dumps(
                {"trading_halted": halted, "halt_reason": reason, "halted_symbols": symbols}, sort_keys=True
            )
            await _audit_setting(conn, audit, detail)
        return _controls_from_row(row)

    async def outlived_validity(self, closed_at: datetime, closed_day: date) -> list[tuple[str, str, str]]:
        rows = await self.pool.fetch(
            "SELECT user_id, order_id, time_in_force, expire_date, status FROM orders "
            "WHERE (status NOT IN ('FILLED', 'CANCELLED', 'REJECTED', 'EXPIRED') AND create_time < $1 "
            "       AND (time_in_force = 'DAY' OR (time_in_force = 'GTD' AND expire_date <= $2))) "
            "   OR (time_in_force = 'GTC' AND status = 'EXPIRED')",
            closed_at,
            closed_day,
        )
        return [
            (
                r["user_id"],
                r["order_id"],
                f"{r['order_id']} ({r['time_in_force']}) expired though good till cancelled"
                if r["status"] == "EXPIRED"
                else f"{r['order_id']} ({r['time_in_force']}"
                + (f" until {r['expire_date']}" if r["expire_date"] else "")
                + f") is {r['status']} after the close of {closed_day}",
            )
            for r in rows
        ]

    # --- risk limits --------------------------------------------------------------------
    async def load_risk_limits(self) -> list[LimitSet]:
        return [_limits_from_row(r) for r in await self.pool.fetch("SELECT * FROM risk_limits")]

    async def update_risk_limits(
        self, scope: str, changes: dict[str, Any], request_id: str, audit: AuditEntry
    ) -> LimitSet:
        """Apply `changes` (column → value, names checked by the caller) to one scope's
        limits, once per request id, with an audit row, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO risk_limits (scope) VALUES ($1) ON CONFLICT DO NOTHING", scope)
            row = await conn.fetchrow("SELECT * FROM risk_limits WHERE scope = $1 FOR UPDATE", scope)
            if row["last_request_id"] == request_id:
                return _limits_from_row(row)
            assignments = "".join(f"{name} = ${k + 3}, " for k, name in enumerate(changes))
            row = await conn.fetchrow(
                f"UPDATE risk_limits SET {assignments}version = version + 1, update_time = now(), "
                "last_request_id = $2 WHERE scope = $1 RETURNING *",
                scope,
                request_id,
                *changes.values(),
            )
            detail = json.dumps(
                {"scope": scope} | {k: None if v is None else str(v) for k, v in changes.items()},
                sort_keys=True,
            )
            await _audit_setting(conn, audit, detail)
        return _limits_from_row(row)

    async def exposure(self, user_id: str, symbol: str, product: str) -> WorkingOrders:
        async with self.pool.acquire() as conn:
            return await _working_orders(conn, user_id, symbol, product)

    async def working_orders(self, user_id: str | None, product: str | None) -> list[Order]:
        """Every working order, of one user and one product when given, oldest first."""
        rows = await self.pool.fetch(
            f"SELECT * FROM orders WHERE {_WORKING} AND ($1::text IS NULL OR user_id = $1) "
            "AND ($2::text IS NULL OR product = $2) ORDER BY create_time, order_id",
            user_id,
            product,
        )
        return [order_from_row(r) for r in rows]

    # --- invariants (I4, I6) ------------------------------------------------------------
    async def check_invariants(self) -> tuple[list[tuple[str, str, str]], int]:
        violations: list[tuple[str, str, str]] = []
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            checked = await conn.fetchval("SELECT count(*) FROM orders")
            for r in await conn.fetch(
                "SELECT user_id, client_order_id, count(*) AS n FROM orders "
                "GROUP BY user_id, client_order_id HAVING count(*) > 1"
            ):
                violations.append(
                    (
                        "I4",
                        r["user_id"],
                        f"{r['n']} orders share the idempotency key {r['client_order_id']!r}",
                    )
                )
            for r in await conn.fetch(
                "SELECT exec_id, min(user_id) AS user_id, count(*) AS n FROM trades GROUP BY exec_id HAVING count(*) > 1"
            ):
                violations.append(("I4", r["user_id"], f"exec id {r['exec_id']} recorded as {r['n']} fills"))
            for r in await conn.fetch(
                "SELECT order_id, user_id, quantity, filled_quantity FROM orders "
                "WHERE filled_quantity > quantity OR filled_quantity < 0"
            ):
                violations.append(
                    ("I4", r["user_id"], f"{r['order_id']} filled {r['filled_quantity']} of {r['quantity']}")
                )
            for r in await conn.fetch(
                "SELECT o.order_id, o.user_id, o.filled_quantity, o.filled_value, "
                "       coalesce(t.qty, 0) AS qty, coalesce(t.value, 0) AS value "
                "FROM orders o LEFT JOIN (SELECT order_id, sum(quantity) AS qty, sum(quantity * price) AS value "
                "                         FROM trades GROUP BY order_id) t USING (order_id) "
                "WHERE o.filled_quantity <> coalesce(t.qty, 0) OR o.filled_value <> coalesce(t.value, 0)"
            ):
                violations.append(
                    (
                        "I4",
                        r["user_id"],
                        f"{r['order_id']} filled {r['filled_quantity']} (value {r['filled_value']}) "
                        f"but its fills sum to {r['qty']} (value {r['value']})",
                    )
                )
            for r in await conn.fetch(
                "SELECT o.order_id, o.user_id, o.version, coalesce(a.n, 0) AS audited, coalesce(a.distinct_n, 0) AS d "
                "FROM orders o LEFT JOIN (SELECT order_id, count(*) AS n, count(DISTINCT order_version) AS distinct_n "
                "                         FROM audit_log WHERE order_version IS NOT NULL GROUP BY order_id) a "
                "USING (order_id) "
                "WHERE coalesce(a.n, 0) <> o.version OR coalesce(a.distinct_n, 0) <> o.version"
            ):
                violations.append(
                    (
                        "I6",
                        r["user_id"],
                        f"{r['order_id']} is at version {r['version']} but has {r['audited']} audit rows "
                        f"for {r['d']} versions",
                    )
                )
            for r in await conn.fetch(
                "SELECT a.order_id, a.order_version FROM audit_log a JOIN orders o USING (order_id) "
                "WHERE a.order_version > o.version OR a.order_version < 1"
            ):
                violations.append(
                    (
                        "I6",
                        "",
                        f"audit row for {r['order_id']} version {r['order_version']} matches no version",
                    )
                )
            for r in await conn.fetch(
                "SELECT o.order_id, o.user_id, o.version, count(e.*) AS n FROM orders o "
                "LEFT JOIN order_events e USING (order_id) GROUP BY o.order_id, o.user_id, o.version "
                "HAVING count(e.*) <> o.version"
            ):
                violations.append(
                    (
                        "I6",
                        r["user_id"],
                        f"{r['order_id']} is at version {r['version']} but has {r['n']} events",
                    )
                )
            violations.extend(await _family_violations(conn))
        return violations, checked


async def _audit_setting(conn: asyncpg.Connection, audit: AuditEntry, detail: str) -> None:
    """The audit row of an operator's change to a setting (no order involved)."""
    await conn.execute(
        _INSERT_AUDIT,
        audit.action,
        audit.actor,
        audit.request_id,
        audit.client_ip,
        "",
        None,
        None,
        None,
        None,
        "",
        None,
        None,
        None,
        detail,
    )


# Orders not yet finished (the partial index orders_working_by_user covers it).
_WORKING = "status NOT IN ('FILLED', 'CANCELLED', 'REJECTED', 'EXPIRED')"

# The advisory lock class under which a user's placements meet the limits on working orders
# (the second key is the user's hash; other locks here use single bigint keys).
_LIMITS_LOCK = 19_001
_KEY_USED = "SELECT EXISTS (SELECT 1 FROM orders WHERE user_id = $1 AND client_order_id = $2)"


async def _working_orders(conn: asyncpg.Connection, user_id: str, symbol: str, product: str) -> WorkingOrders:
    """The user's working orders: how many (and in `product`), and the unfilled shares of
    those in `symbol` by side. FUNDS_PENDING ones count: they are being placed."""
    row = await conn.fetchrow(
        "SELECT count(*) AS open_orders, count(*) FILTER (WHERE product = $3) AS open_in_product, "
        "coalesce(sum(quantity - filled_quantity) FILTER (WHERE symbol = $2 AND side = 'BUY'), 0) "
        "AS open_buy, "
        "coalesce(sum(quantity - filled_quantity) FILTER (WHERE symbol = $2 AND side = 'SELL'), 0) "
        "AS open_sell "
        f"FROM orders WHERE user_id = $1 AND {_WORKING}",
        user_id,
        symbol,
        product,
    )
    return WorkingOrders(
        count=int(row["open_orders"]),
        in_product=int(row["open_in_product"]),
        open_buy=int(row["open_buy"]),
        open_sell=int(row["open_sell"]),
    )


def _limits_from_row(row: asyncpg.Record) -> LimitSet:
    return LimitSet(
        scope=row["scope"],
        max_order_value=row["max_order_value"],
        max_order_quantity=row["max_order_quantity"],
        max_open_orders=row["max_open_orders"],
        max_position_quantity=row["max_position_quantity"],
        max_daily_loss=row["max_daily_loss"],
        trading_halted=row["trading_halted"],
        version=row["version"],
        update_time=row["update_time"],
    )


# Contingent families (I7, I8). "Live": still able to trade and not being cancelled.
_ORPHAN_LEGS = """
SELECT o.order_id, o.user_id, o.leg, o.parent_order_id, o.oco_group FROM orders o
WHERE o.leg IN ('TARGET', 'STOP_LOSS') AND (
    (o.parent_order_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM orders p WHERE p.order_id = o.parent_order_id AND p.leg = 'ENTRY'))
    OR o.oco_group IS NULL
    OR NOT EXISTS (SELECT 1 FROM orders t WHERE t.order_id = o.oco_group AND t.leg = 'TARGET'))
"""
_LIVE_SIBLINGS = """
SELECT f.order_id AS filled, s.order_id AS sibling, s.user_id, s.status FROM orders f
JOIN orders s ON s.oco_group = f.oco_group AND s.order_id <> f.order_id
WHERE f.oco_group IS NOT NULL AND f.filled_quantity > 0
  AND s.status NOT IN ('FILLED', 'CANCELLED', 'REJECTED', 'EXPIRED', 'PENDING_CANCEL')
"""
# Groups where more than one leg traded and more was sold than the TARGET blocked, less the
# broker's buy-back orders (an order over counts what it bought, a working one what it asks).
_OVERSOLD_GROUPS = """
SELECT t.order_id AS oco_group, t.user_id, t.symbol, t.product, b.bought_back,
       s.sold - t.quantity - b.bought_back AS short
FROM orders t
CROSS JOIN LATERAL (
    SELECT sum(filled_quantity) AS sold, count(*) FILTER (WHERE filled_quantity > 0) AS traded
    FROM orders WHERE oco_group = t.order_id) s
CROSS JOIN LATERAL (
    SELECT coalesce(sum(CASE WHEN status IN ('CANCELLED', 'REJECTED', 'EXPIRED')
                             THEN filled_quantity ELSE quantity END), 0) AS bought_back
    FROM orders WHERE user_id = t.user_id AND client_order_id LIKE 'closeout-' || t.order_id || '-%') b
WHERE t.leg = 'TARGET' AND t.filled_quantity > 0 AND s.traded > 1
  AND s.sold - t.quantity - b.bought_back > 0
ORDER BY t.order_id LIMIT $1
"""
_ENTRIES_WITHOUT_EXITS = """
SELECT e.order_id, e.user_id, e.status FROM orders e
WHERE e.leg = 'ENTRY' AND e.filled_quantity > 0
  AND e.status IN ('FILLED', 'CANCELLED', 'REJECTED', 'EXPIRED')
  AND (SELECT count(*) FROM orders c WHERE c.parent_order_id = e.order_id) <> 2
"""


async def _family_violations(conn: asyncpg.Connection) -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    for r in await conn.fetch(_ORPHAN_LEGS):
        found.append(
            (
                "I8",
                r["user_id"],
                f"{r['leg']} {r['order_id']} has no parent entry {r['parent_order_id']!r} "
                f"or no group target {r['oco_group']!r}",
            )
        )
    for r in await conn.fetch(_LIVE_SIBLINGS):
        found.append(
            (
                "I9",
                r["user_id"],
                f"{r['sibling']} is {r['status']} though its OCO sibling {r['filled']} filled",
            )
        )
    for r in await conn.fetch(_ENTRIES_WITHOUT_EXITS):
        found.append(
            ("I8", r["user_id"], f"bracket entry {r['order_id']} is {r['status']} with fills but no exits")
        )
    return found


def _controls_from_row(row: asyncpg.Record) -> TradingControls:
    return TradingControls(
        trading_halted=row["trading_halted"],
        halt_reason=row["halt_reason"],
        halted_symbols=frozenset(row["halted_symbols"]),
        version=row["version"],
        update_time=row["update_time"],
    )

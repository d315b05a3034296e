-- svc_exec's durable state: the broker's orders as the executor knows them, every command
-- it recorded before sending (the ClOrdID ↔ order mapping), and how far the incoming FIX
-- sequence has been safely published.

CREATE TABLE orders (
    order_id          text PRIMARY KEY,
    user_id           text NOT NULL,
    request_id        text NOT NULL DEFAULT '',
    symbol            text NOT NULL,
    side              text NOT NULL,
    order_qty         bigint NOT NULL CHECK (order_qty >= 0),
    limit_price       numeric,
    -- Suffix of the latest ClOrdID issued for this order (0: the order id itself).
    cl_ord_counter    integer NOT NULL DEFAULT 0,
    exchange_order_id text NOT NULL DEFAULT '',
    -- What has been published to the broker so far (fills are exact: notional = Σ px × qty).
    cum_qty           bigint NOT NULL DEFAULT 0 CHECK (cum_qty >= 0),
    notional          numeric NOT NULL DEFAULT 0 CHECK (notional >= 0),
    ord_status        text NOT NULL DEFAULT 'A',
    -- The stuck-order sweeper asked about an order never received: it must never be sent.
    abandoned         boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Orders still working at the exchange, for reconciliation after a reconnect.
CREATE INDEX orders_working ON orders (created_at)
    WHERE ord_status NOT IN ('2', '4', '8', 'C') AND NOT abandoned;

CREATE TABLE commands (
    -- The command's id: a redelivered command finds its row and is never sent twice.
    command_id     text PRIMARY KEY,
    order_id       text NOT NULL REFERENCES orders (order_id),
    kind           text NOT NULL CHECK (kind IN ('new', 'cancel', 'replace')),
    -- FIX ClOrdID, unique forever; resolves every report to its order.
    cl_ord_id      text NOT NULL UNIQUE,
    cl_ord_seq     integer NOT NULL,
    orig_cl_ord_id text,
    -- recorded: committed before the FIX send; sent: quickfix has it in its message store.
    state          text NOT NULL DEFAULT 'recorded' CHECK (state IN ('recorded', 'sent')),
    -- The exchange refused this cancel or replace (OrderCancelReject): the chain skips it.
    refused        boolean NOT NULL DEFAULT false,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    UNIQUE (order_id, cl_ord_seq)
);

CREATE TABLE fix_sessions (
    session_id      text PRIMARY KEY,
    -- The first incoming sequence number not yet safely published to JetStream.
    next_target_seq bigint NOT NULL CHECK (next_target_seq >= 1),
    -- Which generation of the quickfix store that number belongs to.
    store_created   text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

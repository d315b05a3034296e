-- The OMS's tables. Idempotency and exactly-once are enforced here, by constraints, not by
-- reading before writing.

CREATE TABLE orders (
    order_id          text PRIMARY KEY,
    user_id           text        NOT NULL,
    -- The client's idempotency key (AIP-155 request id), unique per user.
    client_order_id   text        NOT NULL,
    -- Digest of the request's terms: same key + other terms is a conflict, not a retry.
    fingerprint       text        NOT NULL,
    symbol            text        NOT NULL,
    side              text        NOT NULL CHECK (side IN ('BUY', 'SELL')),
    order_type        text        NOT NULL CHECK (order_type IN ('MARKET', 'LIMIT', 'STOP', 'STOP_LIMIT')),
    time_in_force     text        NOT NULL CHECK (time_in_force IN ('DAY', 'IOC', 'FOK')),
    product           text        NOT NULL CHECK (product IN ('CNC', 'INTRADAY')),
    quantity          bigint      NOT NULL CHECK (quantity > 0),
    limit_price       numeric(18, 2) CHECK (limit_price > 0),
    stop_price        numeric(18, 2) CHECK (stop_price > 0),
    protection_price  numeric(18, 2) CHECK (protection_price > 0),
    status            text        NOT NULL,
    filled_quantity   bigint      NOT NULL DEFAULT 0,
    filled_value      numeric(28, 4) NOT NULL DEFAULT 0,
    exchange_order_id text        NOT NULL DEFAULT '',
    status_reason     text        NOT NULL DEFAULT '',
    version           bigint      NOT NULL DEFAULT 0,
    triggered         boolean     NOT NULL DEFAULT false,
    -- A cancel or modification waiting for the exchange, and the status to fall back to.
    pending           jsonb,
    resume_status     text,
    -- The placement's request context, for audit rows written later by the system.
    request_id        text        NOT NULL,
    client_ip         text        NOT NULL DEFAULT '',
    create_time       timestamptz NOT NULL,
    update_time       timestamptz NOT NULL,
    CONSTRAINT orders_one_per_key UNIQUE (user_id, client_order_id),
    CONSTRAINT orders_filled_within_quantity CHECK (filled_quantity >= 0 AND filled_quantity <= quantity)
);
CREATE INDEX orders_by_user ON orders (user_id, order_id DESC);
-- The sweeper's work list: orders the exchange has not taken yet.
CREATE INDEX orders_pre_exchange ON orders (update_time)
    WHERE status IN ('FUNDS_PENDING', 'PENDING_EXCHANGE');

-- One row per fill. The exec id is the exchange's unique id of the fill; the cumulative
-- quantity is unique per order too, which catches a fill reported twice under two ids.
CREATE TABLE trades (
    seq                 bigserial PRIMARY KEY,
    exec_id             text        NOT NULL,
    order_id            text        NOT NULL REFERENCES orders (order_id),
    user_id             text        NOT NULL,
    symbol              text        NOT NULL,
    side                text        NOT NULL,
    product             text        NOT NULL,
    quantity            bigint      NOT NULL CHECK (quantity > 0),
    price               numeric(18, 4) NOT NULL CHECK (price > 0),
    cumulative_quantity bigint      NOT NULL,
    execute_time        timestamptz NOT NULL,
    record_time         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT trades_one_per_exec_id UNIQUE (exec_id),
    CONSTRAINT trades_one_per_cumulative UNIQUE (order_id, cumulative_quantity)
);
CREATE INDEX trades_by_user ON trades (user_id, seq DESC);
CREATE INDEX trades_by_order ON trades (order_id, seq DESC);

-- Every execution report ever applied (or ignored), by exec id: the consumer's dedup key,
-- which outlives JetStream's two-minute dedup window.
CREATE TABLE exec_reports (
    exec_id     text PRIMARY KEY,
    order_id    text        NOT NULL,
    exec_type   text        NOT NULL,
    outcome     text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Reports naming an order this OMS does not have: kept for an operator, never dropped.
CREATE TABLE unmatched_reports (
    exec_id     text PRIMARY KEY,
    order_id    text        NOT NULL,
    user_id     text        NOT NULL,
    payload     bytea       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- One event per order version; the source of StreamOrderUpdates replays. `seq` orders
-- events by commit for resuming a stream.
CREATE TABLE order_events (
    seq        bigserial PRIMARY KEY,
    event_id   text        NOT NULL UNIQUE,
    order_id   text        NOT NULL REFERENCES orders (order_id),
    user_id    text        NOT NULL,
    version    bigint      NOT NULL,
    event_type text        NOT NULL,
    payload    bytea       NOT NULL,
    event_time timestamptz NOT NULL,
    CONSTRAINT order_events_one_per_version UNIQUE (order_id, version)
);
CREATE INDEX order_events_by_user ON order_events (user_id, seq);

-- Idempotency of cancel and modify requests (AIP-155), per order.
CREATE TABLE order_requests (
    order_id    text        NOT NULL REFERENCES orders (order_id),
    request_id  text        NOT NULL,
    kind        text        NOT NULL,
    fingerprint text        NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, request_id)
);

-- The append-only audit trail (invariant I6).
CREATE TABLE audit_log (
    record_id     bigserial PRIMARY KEY,
    record_time   timestamptz NOT NULL DEFAULT clock_timestamp(),
    action        text        NOT NULL,
    actor         text        NOT NULL,
    request_id    text        NOT NULL DEFAULT '',
    client_ip     text        NOT NULL DEFAULT '',
    user_id       text        NOT NULL DEFAULT '',
    order_id      text,
    order_version bigint,
    from_status   text,
    to_status     text,
    exec_id       text        NOT NULL DEFAULT '',
    last_price    numeric(18, 4),
    bid_price     numeric(18, 4),
    ask_price     numeric(18, 4),
    detail        text        NOT NULL DEFAULT ''
);
-- Exactly one record per order version.
CREATE UNIQUE INDEX audit_one_per_version ON audit_log (order_id, order_version)
    WHERE order_version IS NOT NULL;
CREATE INDEX audit_by_user ON audit_log (user_id, record_id);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

-- Calls svc_funds must make once a change commits (release a block, resize it), retried
-- until done. Written in the same transaction as the change that needs them.
CREATE TABLE funds_actions (
    action_id       text PRIMARY KEY,
    order_id        text        NOT NULL,
    user_id         text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('RELEASE', 'ADJUST')),
    reason          text        NOT NULL DEFAULT '',
    quantity        bigint,
    price           numeric(18, 2),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text        NOT NULL DEFAULT '',
    create_time     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX funds_actions_due ON funds_actions (next_attempt_at);

-- Per-user order rate: a token bucket, updated by one conditional statement.
CREATE TABLE order_rate (
    user_id     text PRIMARY KEY,
    tokens      numeric     NOT NULL,
    refilled_at timestamptz NOT NULL
);

-- The trading controls: one row.
CREATE TABLE trading_controls (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    trading_halted boolean     NOT NULL DEFAULT false,
    halt_reason    text        NOT NULL DEFAULT '',
    halted_symbols text[]      NOT NULL DEFAULT '{}',
    version        bigint      NOT NULL DEFAULT 0,
    update_time    timestamptz NOT NULL DEFAULT now(),
    last_request_id text       NOT NULL DEFAULT ''
);
INSERT INTO trading_controls DEFAULT VALUES;

-- Every replica refreshes its cached controls when they change.
CREATE FUNCTION trading_controls_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orders_trading_controls', NEW.version::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER trading_controls_notify AFTER UPDATE ON trading_controls
    FOR EACH ROW EXECUTE FUNCTION trading_controls_notify();

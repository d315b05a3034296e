-- GTT (good-till-triggered) orders: triggers the broker keeps until they fire, lapse or are
-- cancelled. ACTIVE → TRIGGERED is the one way to fire (a conditional UPDATE), so a GTT
-- fires once however many watchers, restarts or ticks see its price.
CREATE TABLE gtts (
    gtt_id             text PRIMARY KEY,
    user_id            text        NOT NULL,
    client_request_id  text        NOT NULL,
    symbol             text        NOT NULL,
    trigger_price      numeric(18, 2) NOT NULL CHECK (trigger_price > 0),
    direction          text        NOT NULL CHECK (direction IN ('RISES_TO', 'FALLS_TO')),
    side               text        NOT NULL CHECK (side IN ('BUY', 'SELL')),
    order_type         text        NOT NULL CHECK (order_type IN ('MARKET', 'LIMIT')),
    time_in_force      text        NOT NULL,
    product            text        NOT NULL,
    quantity           bigint      NOT NULL CHECK (quantity > 0),
    limit_price        numeric(18, 2) CHECK (limit_price > 0),
    status             text        NOT NULL
        CHECK (status IN ('ACTIVE', 'TRIGGERED', 'FAILED', 'CANCELLED', 'EXPIRED')),
    order_id           text        NOT NULL DEFAULT '',
    status_reason      text        NOT NULL DEFAULT '',
    create_time        timestamptz NOT NULL,
    expire_time        timestamptz NOT NULL,
    trigger_time       timestamptz,
    triggered_at_price numeric(18, 2),
    CONSTRAINT gtts_one_per_key UNIQUE (user_id, client_request_id),
    CONSTRAINT gtts_fired_with_a_time CHECK (status NOT IN ('TRIGGERED', 'FAILED') OR trigger_time IS NOT NULL)
);
CREATE INDEX gtts_by_user ON gtts (user_id, gtt_id DESC);
-- The watcher's work: triggers still watching, and fired ones whose order is not placed yet.
CREATE INDEX gtts_live ON gtts (symbol) WHERE status = 'ACTIVE' OR (status = 'TRIGGERED' AND order_id = '');

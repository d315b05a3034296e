-- Risk limits an operator set for one user (`users/{user}`) or one segment
-- (`segments/{product}`). NULL leaves a rule to the other scopes and the broker defaults.
CREATE TABLE risk_limits (
    scope                 text        PRIMARY KEY CHECK (scope ~ '^(users/[A-Za-z0-9_-]+|segments/(CNC|INTRADAY))$'),
    max_order_value       numeric(20, 2) CHECK (max_order_value >= 0),
    max_order_quantity    bigint      CHECK (max_order_quantity >= 0),
    max_open_orders       bigint      CHECK (max_open_orders >= 0),
    max_position_quantity bigint      CHECK (max_position_quantity >= 0),
    max_daily_loss        numeric(20, 2) CHECK (max_daily_loss >= 0),
    trading_halted        boolean     NOT NULL DEFAULT false,
    version               bigint      NOT NULL DEFAULT 0,
    update_time           timestamptz NOT NULL DEFAULT now(),
    last_request_id       text        NOT NULL DEFAULT ''
);

-- Working orders of a user, counted and summed by the limits on every placement.
CREATE INDEX orders_working_by_user ON orders (user_id, symbol)
    WHERE status NOT IN ('FILLED', 'CANCELLED', 'REJECTED', 'EXPIRED');

-- Replicas refresh their cached limits on the controls' channel.
CREATE FUNCTION risk_limits_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orders_trading_controls', 'risk_limits');
    RETURN NULL;
END;
$$;
CREATE TRIGGER risk_limits_notify AFTER INSERT OR UPDATE ON risk_limits
    FOR EACH ROW EXECUTE FUNCTION risk_limits_notify();

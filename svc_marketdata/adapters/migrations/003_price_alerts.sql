-- Users' price alerts. An alert fires once: the ACTIVE → FIRED update is conditional, and
-- the event it writes in the same transaction is unique per alert.
CREATE TABLE price_alerts (
    alert_id     text PRIMARY KEY,
    user_id      text        NOT NULL,
    request_id   text        NOT NULL,
    symbol       text        NOT NULL,
    condition    text        NOT NULL CHECK (condition IN
                     ('PRICE_ABOVE', 'PRICE_BELOW', 'CHANGE_PERCENT_ABOVE', 'CHANGE_PERCENT_BELOW')),
    threshold    numeric     NOT NULL,
    note         text        NOT NULL DEFAULT '',
    state        text        NOT NULL DEFAULT 'ACTIVE' CHECK (state IN ('ACTIVE', 'FIRED')),
    create_time  timestamptz NOT NULL DEFAULT now(),
    fire_time    timestamptz,
    fired_price  numeric,
    deleted      boolean     NOT NULL DEFAULT false,
    UNIQUE (user_id, request_id)
);
CREATE INDEX price_alerts_active ON price_alerts (symbol) WHERE state = 'ACTIVE' AND NOT deleted;
CREATE INDEX price_alerts_by_user ON price_alerts (user_id, create_time DESC);

-- Fired alerts, numbered: the notification streams replay from here.
CREATE TABLE price_alert_events (
    event_id  bigserial PRIMARY KEY,
    alert_id  text  NOT NULL UNIQUE REFERENCES price_alerts (alert_id),
    user_id   text  NOT NULL
);
CREATE INDEX price_alert_events_by_user ON price_alert_events (user_id, event_id);

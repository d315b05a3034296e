-- The instrument master, as last received from the exchange's SecurityList (35=y).
-- Kept so that a restarted service serves instruments before the exchange answers.
CREATE TABLE instruments (
    symbol          text PRIMARY KEY,
    company_name    text NOT NULL,
    sector          text NOT NULL DEFAULT '',
    tick_size       numeric NOT NULL CHECK (tick_size > 0),
    lot_size        bigint NOT NULL CHECK (lot_size > 0),
    previous_close  numeric CHECK (previous_close > 0),
    isin            text NOT NULL DEFAULT '',
    -- False once a later master no longer lists the symbol: kept for history, not served.
    listed          boolean NOT NULL DEFAULT true,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

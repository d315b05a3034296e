-- Candles built from the exchange's trades (svc_marketdata/domain/candles.py): written a
-- second behind the feed, upserted while a candle forms; the latest of each symbol and
-- interval is read back at start so a restarted service continues it.
CREATE TABLE candles (
    symbol      text NOT NULL,
    period      text NOT NULL CHECK (period IN ('1m', '5m', '15m', '1h', '1d')),
    start_time  timestamptz NOT NULL,
    open        numeric NOT NULL CHECK (open > 0),
    high        numeric NOT NULL CHECK (high >= open AND high >= close),
    low         numeric NOT NULL CHECK (low > 0 AND low <= open AND low <= close),
    close       numeric NOT NULL CHECK (close > 0),
    volume      bigint NOT NULL CHECK (volume >= 0),
    -- Listing pages walk this key backwards in time.
    PRIMARY KEY (symbol, period, start_time)
);

-- Realized P&L per user, trading day and symbol, written by the end-of-day run: the day's
-- round trips (positions' matched buys and sells) and its sales out of holdings.
CREATE TABLE realized_pnl_days (
    user_id      text    NOT NULL,
    trading_day  date    NOT NULL,
    symbol       text    NOT NULL,
    realized_pnl numeric NOT NULL,
    PRIMARY KEY (user_id, trading_day, symbol)
);

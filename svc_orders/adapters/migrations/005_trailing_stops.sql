-- Trailing stops: a STOP order's trail, by amount or by percent (one of the two). The stop
-- itself is the order's stop_price, moved by the broker as the price moves.
ALTER TABLE orders
    ADD COLUMN trail_amount  numeric(18, 2) CHECK (trail_amount > 0),
    ADD COLUMN trail_percent numeric(5, 2) CHECK (trail_percent > 0 AND trail_percent <= 50),
    ADD CONSTRAINT orders_one_trail CHECK (trail_amount IS NULL OR trail_percent IS NULL);
CREATE INDEX orders_trailing ON orders (symbol)
    WHERE status = 'TRIGGER_PENDING' AND (trail_amount IS NOT NULL OR trail_percent IS NOT NULL);

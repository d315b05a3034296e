-- Iceberg orders: the shares the exchange shows at a time (the disclosed quantity); 0 shows
-- the whole order. The rules (LIMIT only, in lots, at least 10 % of the quantity and below
-- it) are the order-type table's; the column only keeps the value sane.
ALTER TABLE orders
    ADD COLUMN display_quantity bigint NOT NULL DEFAULT 0
        CHECK (display_quantity = 0 OR display_quantity BETWEEN 1 AND quantity - 1);

-- GTC and GTD orders: they work across closes; a GTD order until the close of its date.
ALTER TABLE orders DROP CONSTRAINT orders_time_in_force_check;
ALTER TABLE orders
    ADD CONSTRAINT orders_time_in_force_check CHECK (time_in_force IN ('DAY', 'IOC', 'FOK', 'GTC', 'GTD')),
    ADD COLUMN expire_date date,
    ADD CONSTRAINT orders_expire_date_only_gtd CHECK ((expire_date IS NOT NULL) = (time_in_force = 'GTD'));

-- The square-off reads the day's INTRADAY orders before the close.
CREATE INDEX orders_intraday_by_time ON orders (create_time) WHERE product = 'INTRADAY';

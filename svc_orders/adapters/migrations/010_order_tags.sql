-- The client's optional label on an order (svc_runtime.tags), to list orders and trades by.
ALTER TABLE orders ADD COLUMN tag text NOT NULL DEFAULT '';
CREATE INDEX orders_by_tag ON orders (user_id, tag, order_id) WHERE tag <> '';

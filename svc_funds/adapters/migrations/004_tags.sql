-- Client tags: an order's label, kept on its block, its fills and its journal entries.
ALTER TABLE blocks ADD COLUMN tag text NOT NULL DEFAULT '';
ALTER TABLE fills ADD COLUMN tag text NOT NULL DEFAULT '';
ALTER TABLE journal ADD COLUMN tag text NOT NULL DEFAULT '';
ALTER TABLE entries ADD COLUMN tag text NOT NULL DEFAULT '';
CREATE INDEX fills_by_tag ON fills (user_id, tag, trading_day) WHERE tag <> '';

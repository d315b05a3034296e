-- Contingent orders: an order's role in a bracket or OCO family, its parent (the entry a
-- bracket's exits belong to), its OCO group (named by the group's TARGET), and the exit
-- terms carried by a bracket's entry or an OCO's target.
ALTER TABLE orders
    ADD COLUMN leg                   text NOT NULL DEFAULT 'SINGLE'
        CHECK (leg IN ('SINGLE', 'ENTRY', 'TARGET', 'STOP_LOSS')),
    ADD COLUMN parent_order_id       text REFERENCES orders (order_id),
    ADD COLUMN oco_group             text,
    ADD COLUMN contingency           text NOT NULL DEFAULT 'NONE'
        CHECK (contingency IN ('NONE', 'BRACKET', 'OCO')),
    ADD COLUMN exit_target_price     numeric(18, 2) CHECK (exit_target_price > 0),
    ADD COLUMN exit_stop_price       numeric(18, 2) CHECK (exit_stop_price > 0),
    ADD COLUMN exit_stop_protection  numeric(18, 2) CHECK (exit_stop_protection > 0);

-- A bracket's entry has one TARGET and one STOP_LOSS at most, however often a fill is
-- replayed; the legs of a group are found by the group.
CREATE UNIQUE INDEX orders_one_leg_per_parent ON orders (parent_order_id, leg) WHERE parent_order_id IS NOT NULL;
CREATE UNIQUE INDEX orders_one_leg_per_group ON orders (oco_group, leg) WHERE oco_group IS NOT NULL;

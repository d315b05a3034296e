-- Replaying a user's order events after a given event must not miss one that was numbered
-- before it but committed after it (two transactions of one user commit in either order).
-- Each event records its transaction and the oldest transaction still running when it was
-- written: a replay after event E also returns earlier-numbered events of transactions that
-- were still running when E was written.
ALTER TABLE order_events
    ADD COLUMN xid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    ADD COLUMN running_xmin bigint NOT NULL
        DEFAULT (pg_snapshot_xmin(pg_current_snapshot())::text::bigint);

CREATE INDEX order_events_by_user_xid ON order_events (user_id, xid);

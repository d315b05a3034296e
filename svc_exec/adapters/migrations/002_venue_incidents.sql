-- Everything the venue and svc_exec did not agree on, kept for operators: session-level
-- rejects sent or received (35=3), business rejects (35=j), reports svc_exec could not map,
-- status requests refused, orders the venue denies knowing. Never silently dropped.

CREATE TABLE venue_incidents (
    id            bigserial PRIMARY KEY,
    -- The same message raised again (a resend after a crash) is stored once.
    incident_key  text NOT NULL UNIQUE,
    venue         text NOT NULL,
    kind          text NOT NULL,
    reason        text NOT NULL,
    text          text NOT NULL DEFAULT '',
    raw           text NOT NULL DEFAULT '',
    cl_ord_id     text NOT NULL DEFAULT '',
    order_id      text NOT NULL DEFAULT '',
    ref_msg_type  text NOT NULL DEFAULT '',
    ref_seq       bigint,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX venue_incidents_order ON venue_incidents (order_id) WHERE order_id <> '';

-- Transactional outbox: a message is written in the same transaction as the state change
-- that causes it, and a relay publishes it to JetStream afterwards (at least once, with
-- Nats-Msg-Id = msg_id so that JetStream and consumers drop repeats).
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    msg_id     text        NOT NULL UNIQUE,
    subject    text        NOT NULL,
    payload    bytea       NOT NULL,
    headers    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Wake the relay at commit (notifications are delivered when the transaction commits).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox_' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

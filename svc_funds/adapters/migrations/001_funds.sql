-- The funds ledger: accounts, the double-entry journal, the balances it materializes,
-- blocks, fills and the portfolio. Money is NUMERIC with at most two fraction digits
-- (enforced: a value is never silently rounded), shares are integers.

CREATE TABLE accounts (
    user_id           text PRIMARY KEY,
    username          text        NOT NULL UNIQUE,
    display_name      text        NOT NULL,
    password_hash     text        NOT NULL,
    -- AIP-155 idempotency key of the CreateAccount call that opened it.
    create_request_id text UNIQUE,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- Materialized balances of a user's cash accounts (cash, cash_blocked, cash_dues).
CREATE TABLE cash_balances (
    user_id    text PRIMARY KEY REFERENCES accounts (user_id),
    available  numeric     NOT NULL DEFAULT 0 CHECK (available >= 0 AND available = round(available, 2)),
    blocked    numeric     NOT NULL DEFAULT 0 CHECK (blocked >= 0 AND blocked = round(blocked, 2)),
    -- What the user owes (never positive): a fill beyond its block and the available cash.
    dues       numeric     NOT NULL DEFAULT 0 CHECK (dues <= 0 AND dues = round(dues, 2)),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Materialized balances of a user's share accounts (shares:S, shares_blocked:S, shares_dues:S).
CREATE TABLE share_balances (
    user_id    text        NOT NULL REFERENCES accounts (user_id),
    symbol     text        NOT NULL,
    free       bigint      NOT NULL DEFAULT 0 CHECK (free >= 0),
    blocked    bigint      NOT NULL DEFAULT 0 CHECK (blocked >= 0),
    dues       bigint      NOT NULL DEFAULT 0 CHECK (dues <= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, symbol)
);

-- The broker's side of every movement: bank, exchange settlement, each charge.
CREATE TABLE house_balances (
    account    text PRIMARY KEY,
    unit       text        NOT NULL,
    balance    numeric     NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Journal and entry ids come from one sequence, taken by a batch after it holds the locks
-- of every account it posts to: per account, entry ids follow posting order.
CREATE SEQUENCE ledger_ids;

CREATE TABLE journal (
    txn_id      bigint PRIMARY KEY,
    kind        text        NOT NULL,
    user_id     text,
    order_id    text,
    exec_id     text,
    request_id  text,
    description text        NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX journal_by_order ON journal (order_id) WHERE order_id IS NOT NULL;

CREATE TABLE entries (
    entry_id      bigint PRIMARY KEY,
    txn_id        bigint      NOT NULL REFERENCES journal (txn_id),
    user_id       text,  -- NULL for house accounts
    account       text        NOT NULL,
    unit          text        NOT NULL,
    amount        numeric     NOT NULL CHECK (amount <> 0),
    balance_after numeric     NOT NULL,
    kind          text        NOT NULL,
    order_id      text,
    exec_id       text,
    request_id    text,
    description   text        NOT NULL,
    created_at    timestamptz NOT NULL,
    CHECK (unit <> 'INR' OR amount = round(amount, 2)),
    CHECK (unit = 'INR' OR amount = trunc(amount))
);
CREATE INDEX entries_by_user ON entries (user_id, entry_id) WHERE user_id IS NOT NULL;
CREATE INDEX entries_by_txn ON entries (txn_id);

-- The journal is append-only.
CREATE FUNCTION journal_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger journal is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION journal_is_append_only();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION journal_is_append_only();

-- Cash or shares set aside for one order; the order id is the idempotency key.
CREATE TABLE blocks (
    order_id           text PRIMARY KEY,
    user_id            text        NOT NULL REFERENCES accounts (user_id),
    kind               text        NOT NULL CHECK (kind IN ('CASH', 'SHARES')),
    side               text        NOT NULL CHECK (side IN ('BUY', 'SELL')),
    symbol             text        NOT NULL,
    product            text        NOT NULL,
    requested_quantity bigint      NOT NULL,
    requested_price    numeric,
    quantity           bigint      NOT NULL CHECK (quantity > 0),
    price              numeric,
    amount             numeric     NOT NULL CHECK (amount >= 0),
    remaining          numeric     NOT NULL CHECK (remaining >= 0),
    filled_quantity    bigint      NOT NULL DEFAULT 0 CHECK (filled_quantity >= 0),
    filled_value       numeric     NOT NULL DEFAULT 0,
    charges            numeric     NOT NULL DEFAULT 0,
    released           numeric     NOT NULL DEFAULT 0,
    terminal_quantity  bigint,
    terminal_reason    text,
    state              text        NOT NULL CHECK (state IN ('ACTIVE', 'CLOSED')),
    close_reason       text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    CHECK (state = 'ACTIVE' OR remaining = 0)
);
CREATE INDEX blocks_by_user ON blocks (user_id, order_id);
CREATE INDEX blocks_active ON blocks (order_id) WHERE state = 'ACTIVE';

-- Idempotency keys of deposits, withdrawals, share deposits and block adjustments, with the
-- first answer given for each.
CREATE TABLE requests (
    key         text PRIMARY KEY,
    user_id     text        NOT NULL,
    fingerprint text        NOT NULL,
    response    jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per applied fill: the exec id is unique, so a fill is settled once.
CREATE TABLE fills (
    exec_id      text PRIMARY KEY,
    order_id     text        NOT NULL,
    user_id      text        NOT NULL,
    symbol       text        NOT NULL,
    side         text        NOT NULL,
    product      text        NOT NULL,
    quantity     bigint      NOT NULL CHECK (quantity > 0),
    price        numeric     NOT NULL CHECK (price > 0),
    value        numeric     NOT NULL,
    charges      numeric     NOT NULL,
    trading_day  date        NOT NULL,
    executed_at  timestamptz NOT NULL,
    settled_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX fills_by_order ON fills (order_id);
CREATE INDEX fills_by_user ON fills (user_id, symbol);

-- Execution reports that could not be applied as they are (unknown user, a block of another
-- user or symbol, an unreadable message): kept, unique by exec id, for an operator.
CREATE TABLE parked_reports (
    exec_id    text PRIMARY KEY,
    order_id   text        NOT NULL,
    user_id    text        NOT NULL,
    reason     text        NOT NULL,
    report     bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Today's (unsettled) trading per user, day, symbol and product. Fills add to it with
-- commutative increments; the end-of-day run moves rows to settled_positions.
CREATE TABLE positions (
    user_id       text    NOT NULL,
    trading_day   date    NOT NULL,
    symbol        text    NOT NULL,
    product       text    NOT NULL,
    buy_quantity  bigint  NOT NULL DEFAULT 0,
    buy_value     numeric NOT NULL DEFAULT 0,
    sell_quantity bigint  NOT NULL DEFAULT 0,
    sell_value    numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, trading_day, symbol, product)
);

CREATE TABLE settled_positions (
    user_id       text        NOT NULL,
    trading_day   date        NOT NULL,
    symbol        text        NOT NULL,
    product       text        NOT NULL,
    buy_quantity  bigint      NOT NULL,
    buy_value     numeric     NOT NULL,
    sell_quantity bigint      NOT NULL,
    sell_value    numeric     NOT NULL,
    settled_by    date        NOT NULL,
    settled_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX settled_positions_by_user ON settled_positions (user_id, trading_day);

-- Settled shares: quantity and its cost basis (average cost = cost / quantity).
CREATE TABLE holdings (
    user_id      text        NOT NULL REFERENCES accounts (user_id),
    symbol       text        NOT NULL,
    quantity     bigint      NOT NULL CHECK (quantity >= 0),
    cost         numeric     NOT NULL CHECK (cost >= 0),
    realized_pnl numeric     NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, symbol)
);

-- One row per closed trading day: the end-of-day run is idempotent.
CREATE TABLE eod_runs (
    trading_day       date PRIMARY KEY,
    positions_settled integer     NOT NULL,
    ran_at            timestamptz NOT NULL DEFAULT now()
);

INSERT INTO house_balances (account, unit) VALUES ('house:bank', 'INR'), ('house:exchange_cash', 'INR');

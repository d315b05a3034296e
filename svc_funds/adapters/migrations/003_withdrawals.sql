-- Registered bank accounts (one per user: where withdrawals are paid), withdrawals, and the
-- simulated bank's own book of payouts.
CREATE TABLE bank_accounts (
    user_id        text PRIMARY KEY REFERENCES accounts (user_id),
    account_number text        NOT NULL,
    ifsc           text        NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- A withdrawal is HELD (cash moved to house:payouts) until the bank pays it out (PAID) or
-- refuses it (RETURNED). Written only by the ledger engine, with its journal entries.
CREATE TABLE withdrawals (
    withdrawal_id  text PRIMARY KEY,
    user_id        text        NOT NULL REFERENCES accounts (user_id),
    request_id     text        NOT NULL,
    amount         numeric     NOT NULL CHECK (amount > 0 AND amount = round(amount, 2)),
    account_number text        NOT NULL,
    ifsc           text        NOT NULL,
    state          text        NOT NULL CHECK (state IN ('HELD', 'PAID', 'RETURNED')),
    failure        text        NOT NULL DEFAULT '',
    bank_reference text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    UNIQUE (user_id, request_id)
);
CREATE INDEX withdrawals_by_user ON withdrawals (user_id, created_at DESC, withdrawal_id DESC);
CREATE INDEX withdrawals_held ON withdrawals (created_at) WHERE state = 'HELD';

-- The simulated bank: the payouts it was asked to make, keyed by the broker's withdrawal id
-- (as a real bank's API is idempotent by the sender's reference), and when each settles.
CREATE TABLE bank_sim_payouts (
    withdrawal_id  text PRIMARY KEY,
    account_number text        NOT NULL,
    amount         numeric     NOT NULL,
    succeeds       boolean     NOT NULL,
    settles_at     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

INSERT INTO house_balances (account, unit) VALUES ('house:payouts', 'INR') ON CONFLICT DO NOTHING;

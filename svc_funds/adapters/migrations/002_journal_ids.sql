-- Journal transaction ids are made by svc_funds (time-ordered text ids) and entry ids by an
-- identity column in insertion order, so a batch writes its journal without first asking
-- the database for ids. The audit checks that every entry's transaction exists and
-- balances; the per-row foreign-key check is dropped from the hottest insert.
ALTER TABLE entries DROP CONSTRAINT entries_txn_id_fkey;
DROP INDEX entries_by_txn;
ALTER TABLE journal ALTER COLUMN txn_id TYPE text USING txn_id::text;
ALTER TABLE entries ALTER COLUMN txn_id TYPE text USING txn_id::text;
ALTER TABLE entries ALTER COLUMN entry_id ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('entries', 'entry_id'), coalesce(max(entry_id), 0) + 1, false) FROM entries;
DROP SEQUENCE ledger_ids;

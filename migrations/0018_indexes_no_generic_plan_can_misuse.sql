-- Two indexes led with the tenant without serving any query by it, and each was a trap for
-- generic plans. A plan made while a table is nearly empty (a fresh database, or statistics
-- never gathered) costs every index that matches the tenant condition about the same, may pick
-- the wrong one, and keeps it on that connection: from then on each lookup scans the tenant's
-- rows. `auto_explain` caught both under webhook load.

-- `message (tenant_id, id)` was declared UNIQUE like every tenant table's, but no foreign key
-- refers to it and every lookup by id uses the primary key. The redelivery check by
-- (tenant, inbox, wamid) was planned through it and read 86,000 buffers for one webhook batch.
-- It also cost an index entry per message.
ALTER TABLE message DROP CONSTRAINT message_tenant_id_key;

-- `contact (tenant_id, account_id)` serves the contacts of one account (and the foreign key's
-- ON DELETE SET NULL when an account goes), which the account id alone finds. Lookups of a
-- contact by id were planned through its tenant column and walked every contact of the tenant.
DROP INDEX contact_account_idx;
CREATE INDEX contact_account_idx ON contact (account_id) WHERE account_id IS NOT NULL;

-- Tenant closure (RET-2): the owner closes the tenant, which keeps its data for a grace period
-- (60 days) while the owner may export it or reopen; then a purge deletes every row of the
-- tenant in every table, audit log and PII vault included, and a non-tenant table keeps the
-- fact of the deletion: the tenant's id, its dates and how many rows went from which table.

ALTER TABLE tenant
    ADD COLUMN status text NOT NULL DEFAULT 'active'
        CONSTRAINT tenant_status_known CHECK (status IN ('active', 'closing')),
    ADD COLUMN closed_at timestamptz,
    ADD COLUMN closed_by uuid,
    ADD COLUMN purge_after timestamptz,
    -- A closing tenant says when and by whom, and when it goes; an active one says none of it.
    ADD CONSTRAINT tenant_closure_complete CHECK (
        (status = 'closing') = (closed_at IS NOT NULL)
        AND (closed_at IS NULL) = (purge_after IS NULL)
        AND (closed_at IS NULL) = (closed_by IS NULL));
-- The purge looks for closing tenants past their grace period.
CREATE INDEX tenant_purge_due_idx ON tenant (purge_after) WHERE status = 'closing';

-- A whole-tenant export: every table of the tenant as JSON and CSV in one zip, written by a job.
-- Like a contact's export it is kept seven days at most (DSR-7), then retention deletes it.
CREATE TABLE tenant_export (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    requested_by  text NOT NULL,
    status        text NOT NULL DEFAULT 'queued' CONSTRAINT tenant_export_status_known
                  CHECK (status IN ('queued', 'running', 'done', 'failed')),
    -- Progress in tables: each one read moves it on, and the zip is the last step.
    steps_total   integer NOT NULL DEFAULT 1,
    steps_done    integer NOT NULL DEFAULT 0,
    counts        jsonb NOT NULL DEFAULT '{}',
    bytes         bigint NOT NULL DEFAULT 0,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    expires_at    timestamptz NOT NULL,
    CONSTRAINT tenant_export_tenant_id_key UNIQUE (tenant_id, id)
);
CREATE INDEX tenant_export_list_idx ON tenant_export (tenant_id, created_at DESC);

CREATE TABLE tenant_export_chunk (
    tenant_id  uuid NOT NULL,
    export_id  uuid NOT NULL,
    ordinal    integer NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (export_id, ordinal),
    CONSTRAINT tenant_export_chunk_export_fkey FOREIGN KEY (tenant_id, export_id)
        REFERENCES tenant_export (tenant_id, id) ON DELETE CASCADE
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenant_export', 'tenant_export_chunk']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_tenant_id())'
                       ' WITH CHECK (tenant_id = current_tenant_id())', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_export, tenant_export_chunk TO custodian_app;

-- What is left of a purged tenant: its id, its dates and the rows deleted per table. Not a
-- tenant table (nothing of the tenant's data is in it, and the tenant is gone), so no RLS;
-- the application role cannot read or write it, only the purge function (as the owner) does.
-- Its key is not named tenant_id: no tenant owns the row, and the tenant tables are those with
-- a tenant_id column (`tenant_tables()`, row-level security, the isolation tests).
CREATE TABLE tenant_deletion (
    deleted_tenant_id  uuid PRIMARY KEY,
    closed_at    timestamptz NOT NULL,
    purge_after  timestamptz NOT NULL,
    purged_at    timestamptz NOT NULL DEFAULT now(),
    row_counts   jsonb NOT NULL
);

-- The tenant's tables, from the catalog: every table of this schema with a tenant_id column.
-- A table added later is found here without a change to the purge.
CREATE FUNCTION tenant_tables() RETURNS SETOF text
    LANGUAGE sql STABLE
AS $$
    SELECT c.relname::text
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
    ORDER BY 1
$$;

-- The only way a closed tenant's data goes, audit rows included (AUD-3). Deletes every row of
-- the tenant in every table from `tenant_tables()`, then the tenant row, and records the
-- deletion in `tenant_deletion` in the same transaction: no purge goes unrecorded, and its record
-- holds counts only. Refuses a tenant that is not closing, one still within its grace period
-- (`p_now` lets tests and the scheduler say what "now" is), and one under an active legal hold.
--
-- The order of deletes follows from the schema rather than a list: a table whose rows are still
-- referenced (a foreign key, or a trigger that refuses, e.g. a decided review's approvals before
-- the review) fails inside its own subtransaction and is tried again in the next pass, after
-- what referenced it went. Deletes that re-create rows elsewhere (the inbox tallies a
-- conversation's deletion updates) are caught by the same passes. Counts are taken before any
-- delete, so cascades do not hide rows from the table they were in.
CREATE FUNCTION tenant_purge(p_tenant_id uuid, p_now timestamptz)
    RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    t record;
    tables text[];
    counts jsonb := '{}';
    n bigint;
    left_over bigint;
    pass integer := 0;
    last_error text;
BEGIN
    -- The owner may itself be subject to the forced policies: act as the tenant.
    PERFORM set_config('app.tenant_id', p_tenant_id::text, true);
    SELECT * INTO t FROM tenant WHERE id = p_tenant_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant % does not exist', p_tenant_id USING ERRCODE = 'no_data_found';
    END IF;
    IF t.status <> 'closing' OR t.purge_after > p_now THEN
        RAISE EXCEPTION 'tenant % is not due for purge', p_tenant_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenant_purge_not_due';
    END IF;
    IF EXISTS (SELECT 1 FROM legal_hold WHERE tenant_id = p_tenant_id AND released_at IS NULL) THEN
        RAISE EXCEPTION 'tenant % has data under a legal hold', p_tenant_id
            USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'legal_hold_blocks_delete';
    END IF;

    SELECT array_agg(x) INTO tables FROM tenant_tables() x;
    FOR i IN 1 .. cardinality(tables) LOOP
        EXECUTE format('SELECT count(*) FROM %I WHERE tenant_id = $1', tables[i])
            INTO n USING p_tenant_id;
        counts := counts || jsonb_build_object(tables[i], n);
    END LOOP;

    -- Lets the audit log's guard pass these deletes, as it does retention's.
    PERFORM set_config('custodian.audit_purge', 'on', true);
    LOOP
        pass := pass + 1;
        left_over := 0;
        FOR i IN 1 .. cardinality(tables) LOOP
            BEGIN
                EXECUTE format('DELETE FROM %I WHERE tenant_id = $1', tables[i]) USING p_tenant_id;
            EXCEPTION WHEN OTHERS THEN
                last_error := tables[i] || ': ' || SQLERRM;
            END;
        END LOOP;
        FOR i IN 1 .. cardinality(tables) LOOP
            EXECUTE format('SELECT count(*) FROM %I WHERE tenant_id = $1', tables[i])
                INTO n USING p_tenant_id;
            left_over := left_over + n;
        END LOOP;
        EXIT WHEN left_over = 0;
        IF pass > cardinality(tables) THEN
            RAISE EXCEPTION 'tenant % could not be purged: %', p_tenant_id, last_error;
        END IF;
    END LOOP;
    PERFORM set_config('custodian.audit_purge', 'off', true);

    -- The tenant row goes too, rather than stay as a tombstone: its name and slug are the
    -- tenant's data, and `tenant_deletion` keeps the id and dates the deletion must be proven by.
    DELETE FROM tenant WHERE id = p_tenant_id;
    counts := counts || jsonb_build_object('tenant', 1);
    INSERT INTO tenant_deletion (deleted_tenant_id, closed_at, purge_after, purged_at, row_counts)
    VALUES (p_tenant_id, t.closed_at, t.purge_after, now(), counts);
    RETURN counts;
END
$$;
REVOKE ALL ON FUNCTION tenant_purge(uuid, timestamptz) FROM PUBLIC;

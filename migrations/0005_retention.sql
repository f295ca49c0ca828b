-- Governance: retention policies, legal holds and audit-log exports (RET-1, AGT-9, DSR-7, AUD-4).

-- One row per tenant that changed anything; a missing row means the defaults. The bounds are
-- promises (PROMISES.md), so the database refuses values outside them as well as the API.
CREATE TABLE retention_policy (
    tenant_id                  uuid PRIMARY KEY REFERENCES tenant (id) ON DELETE CASCADE,
    -- AGT-9: 180 days, tenants may only raise it.
    agent_executions_days      integer NOT NULL DEFAULT 180
                               CONSTRAINT retention_policy_executions_bounds
                               CHECK (agent_executions_days BETWEEN 180 AND 3650),
    -- RET-1: the security log (the whole audit chain) is kept at least twelve months.
    audit_log_days             integer NOT NULL DEFAULT 365
                               CONSTRAINT retention_policy_audit_bounds
                               CHECK (audit_log_days BETWEEN 365 AND 3650),
    -- NULL: the content of closed conversations is kept.
    closed_conversations_days  integer
                               CONSTRAINT retention_policy_conversations_bounds
                               CHECK (closed_conversations_days BETWEEN 1 AND 3650),
    -- DSR-7: exports are kept seven days at most.
    exports_days               integer NOT NULL DEFAULT 7
                               CONSTRAINT retention_policy_exports_bounds
                               CHECK (exports_days BETWEEN 1 AND 7),
    -- RET-1 "request logs 30 days": finished job rows are our request log.
    finished_jobs_days         integer NOT NULL DEFAULT 30
                               CONSTRAINT retention_policy_jobs_bounds
                               CHECK (finished_jobs_days BETWEEN 1 AND 30),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

-- A legal hold keeps a contact's or a conversation's data out of every purge until released.
-- Released holds stay as history.
CREATE TABLE legal_hold (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    entity_type  text NOT NULL CONSTRAINT legal_hold_entity_type_known
                 CHECK (entity_type IN ('contact', 'conversation')),
    entity_id    uuid NOT NULL,
    reason       text NOT NULL CONSTRAINT legal_hold_reason_length CHECK (length(reason) BETWEEN 1 AND 2000),
    created_by   uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz,
    released_by  uuid,
    CONSTRAINT legal_hold_creator_fkey FOREIGN KEY (tenant_id, created_by) REFERENCES member (tenant_id, id),
    CONSTRAINT legal_hold_releaser_fkey FOREIGN KEY (tenant_id, released_by) REFERENCES member (tenant_id, id),
    CONSTRAINT legal_hold_release_complete CHECK ((released_at IS NULL) = (released_by IS NULL))
);
CREATE INDEX legal_hold_active_idx ON legal_hold (tenant_id, entity_type, entity_id) WHERE released_at IS NULL;

-- When a conversation was resolved: closed-conversation retention counts from here. Kept by a
-- trigger so that every path that resolves or reopens a conversation keeps it right.
ALTER TABLE conversation ADD COLUMN resolved_at timestamptz;
UPDATE conversation SET resolved_at = updated_at WHERE status = 'resolved';
CREATE INDEX conversation_resolved_idx ON conversation (tenant_id, resolved_at) WHERE resolved_at IS NOT NULL;

CREATE FUNCTION conversation_resolved_at() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.status = 'resolved' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'resolved') THEN
        NEW.resolved_at := now();
    ELSIF NEW.status <> 'resolved' THEN
        NEW.resolved_at := NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER conversation_resolved_at
    BEFORE INSERT OR UPDATE OF status ON conversation
    FOR EACH ROW EXECUTE FUNCTION conversation_resolved_at();

-- An export of the audit log (AUD-4), written by a job in batches. The filters are a snapshot
-- of the request, and through_seq bounds it to the chain as it stood when it was asked for.
CREATE TABLE audit_export (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    requested_by  text NOT NULL,
    format        text NOT NULL CONSTRAINT audit_export_format_known CHECK (format IN ('csv', 'json')),
    filters       jsonb NOT NULL DEFAULT '{}',
    through_seq   bigint NOT NULL,
    status        text NOT NULL DEFAULT 'queued' CONSTRAINT audit_export_status_known
                  CHECK (status IN ('queued', 'running', 'done', 'failed', 'expired')),
    rows_total    bigint,
    rows_done     bigint NOT NULL DEFAULT 0,
    -- The last audit sequence number written: a retried job resumes after it.
    last_seq      bigint,
    bytes         bigint NOT NULL DEFAULT 0,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    expires_at    timestamptz NOT NULL,
    -- Set when retention deleted the content; the record stays as history (DSR-7).
    purged_at     timestamptz,
    CONSTRAINT audit_export_tenant_id_key UNIQUE (tenant_id, id)
);
CREATE INDEX audit_export_list_idx ON audit_export (tenant_id, created_at DESC);
CREATE INDEX audit_export_expiry_idx ON audit_export (tenant_id, expires_at) WHERE purged_at IS NULL;

-- The file, in ordered chunks: each batch of the job appends one.
CREATE TABLE audit_export_chunk (
    tenant_id  uuid NOT NULL,
    export_id  uuid NOT NULL,
    ordinal    integer NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (export_id, ordinal),
    CONSTRAINT audit_export_chunk_export_fkey FOREIGN KEY (tenant_id, export_id)
        REFERENCES audit_export (tenant_id, id) ON DELETE CASCADE
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['retention_policy', 'legal_hold', 'audit_export', 'audit_export_chunk']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_tenant_id())'
                       ' WITH CHECK (tenant_id = current_tenant_id())', t);
    END LOOP;
END
$$;

-- The app role reads and writes policies and holds (a hold is released, never deleted) and
-- writes exports; only retention, running as the owner, deletes anything here.
GRANT SELECT, INSERT, UPDATE ON retention_policy, legal_hold, audit_export TO custodian_app;
GRANT SELECT, INSERT ON audit_export_chunk TO custodian_app;

-- A contact's access and portability export (DSR-1): everything held about one person, as JSON
-- and CSV in one zip, written by a job with visible progress. Owned by the privacy domain.
-- Kept for the tenant's export period (seven days at most, DSR-7); then retention deletes the
-- row and the file alike: unlike an audit export, the file is the person's data, and the
-- record of who asked for it and who downloaded it stays in the audit log.
CREATE TABLE contact_export (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    contact_id    uuid NOT NULL,
    -- The access or portability request (DSR-6) it answers, when one was named.
    request_id    uuid,
    requested_by  text NOT NULL,
    status        text NOT NULL DEFAULT 'queued' CONSTRAINT contact_export_status_known
                  CHECK (status IN ('queued', 'running', 'done', 'failed')),
    -- Progress in data classes: each one gathered moves it on.
    steps_total   integer NOT NULL,
    steps_done    integer NOT NULL DEFAULT 0,
    -- Rows written per data class, once done.
    counts        jsonb NOT NULL DEFAULT '{}',
    bytes         bigint NOT NULL DEFAULT 0,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    expires_at    timestamptz NOT NULL,
    CONSTRAINT contact_export_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT contact_export_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contact (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT contact_export_request_fkey FOREIGN KEY (tenant_id, request_id)
        REFERENCES privacy_request (tenant_id, id) ON DELETE SET NULL (request_id)
);
CREATE INDEX contact_export_contact_idx ON contact_export (tenant_id, contact_id);
CREATE INDEX contact_export_expiry_idx ON contact_export (tenant_id, expires_at);

-- The zip, in ordered chunks (a large export stays clear of one huge bytea value).
CREATE TABLE contact_export_chunk (
    tenant_id  uuid NOT NULL,
    export_id  uuid NOT NULL,
    ordinal    integer NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (export_id, ordinal),
    CONSTRAINT contact_export_chunk_export_fkey FOREIGN KEY (tenant_id, export_id)
        REFERENCES contact_export (tenant_id, id) ON DELETE CASCADE
);

ALTER TABLE contact_export ENABLE ROW LEVEL SECURITY;
ALTER TABLE contact_export FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON contact_export USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());
ALTER TABLE contact_export_chunk ENABLE ROW LEVEL SECURITY;
ALTER TABLE contact_export_chunk FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON contact_export_chunk USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());

-- The application deletes a contact's exports when the contact is erased (DSR-3), and a retried
-- job its own partial file; retention deletes expired ones on the owner pool.
GRANT SELECT, INSERT, UPDATE, DELETE ON contact_export, contact_export_chunk TO custodian_app;

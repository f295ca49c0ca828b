-- The request log (RET-1 "request logs 30 days"): one row per authenticated API request, who
-- made it, which route (its template, never the raw path with ids), the answer and how long it
-- took. No bodies. Written in batches by the server (as the owner, across tenants), read by
-- admins and auditors through the API, purged by retention after at most 30 days.
CREATE TABLE request_log (
    -- UUIDv7: time-ordered, the API's cursor.
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    -- History: no foreign keys, a deleted member's requests stay attributed.
    member_id     uuid NOT NULL,
    api_token_id  uuid,
    method        text NOT NULL CONSTRAINT request_log_method_length CHECK (length(method) BETWEEN 1 AND 16),
    route         text NOT NULL CONSTRAINT request_log_route_length CHECK (length(route) BETWEEN 1 AND 300),
    status        smallint NOT NULL CONSTRAINT request_log_status CHECK (status BETWEEN 100 AND 599),
    duration_ms   real NOT NULL,
    ip            text,
    user_agent    text CONSTRAINT request_log_user_agent_length CHECK (length(user_agent) <= 512),
    request_id    text CONSTRAINT request_log_request_id_length CHECK (length(request_id) <= 128),
    occurred_at   timestamptz NOT NULL
);
CREATE INDEX request_log_time_idx ON request_log (tenant_id, occurred_at);
CREATE INDEX request_log_member_idx ON request_log (tenant_id, member_id, id);

ALTER TABLE request_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE request_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON request_log USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());
-- Read-only for the app role: the log is written by the server as the owner and deleted only
-- by retention, so no request can rewrite what was logged about it.
GRANT SELECT ON request_log TO custodian_app;

-- RET-1: request logs are kept 30 days at most; a tenant may only lower it.
ALTER TABLE retention_policy ADD COLUMN request_log_days integer NOT NULL DEFAULT 30
    CONSTRAINT retention_policy_request_log_bounds CHECK (request_log_days BETWEEN 1 AND 30);

COMMENT ON COLUMN retention_policy.finished_jobs_days IS
    'Finished (done or dead) job rows: outbound sends and agent runs with their payloads and last errors. Not the request log (request_log_days).';

-- Canned replies: a team's recurring answers, each under a shortcut typed after `/` in the
-- composer. Owned by the conversations domain. The checks repeat the handlers' so that no other
-- path can store what the API refuses.
CREATE TABLE canned_reply (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    shortcut    text NOT NULL CONSTRAINT canned_reply_shortcut_format CHECK (shortcut ~ '^[a-z0-9][a-z0-9_-]{0,39}$'),
    title       text NOT NULL CONSTRAINT canned_reply_title_length CHECK (length(title) BETWEEN 1 AND 200),
    body        text NOT NULL CONSTRAINT canned_reply_body_length CHECK (length(body) BETWEEN 1 AND 4096),
    -- The member who wrote it; kept when they leave.
    created_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT canned_reply_shortcut_key UNIQUE (tenant_id, shortcut)
);

ALTER TABLE canned_reply ENABLE ROW LEVEL SECURITY;
ALTER TABLE canned_reply FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON canned_reply USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON canned_reply TO custodian_app;

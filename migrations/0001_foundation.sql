-- Foundation: tenants, members, credentials and the hash-chained audit log.
--
-- Two database roles are involved:
--   * the owner (the DATABASE_URL user) runs migrations and the few system lookups that must
--     find a credential's tenant before a tenant is known; it owns every table;
--   * custodian_app, a non-superuser without BYPASSRLS, serves requests. Every tenant table has
--     row-level security FORCEd with a policy keyed on the transaction-local setting
--     app.tenant_id, so a query that forgets its tenant filter still sees nothing foreign.

CREATE EXTENSION IF NOT EXISTS vector;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'custodian_app') THEN
        CREATE ROLE custodian_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION
    -- Several databases of one cluster may migrate at the same moment (tests do).
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO custodian_app;

-- The tenant of the current transaction, or NULL when none was set (which matches no row).
CREATE FUNCTION current_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE
AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

CREATE TABLE tenant (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL CONSTRAINT tenant_slug_key UNIQUE
                CONSTRAINT tenant_slug_format CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name        text NOT NULL CONSTRAINT tenant_name_length CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE partner_org (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    name        text NOT NULL CONSTRAINT partner_org_name_length CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT partner_org_tenant_id_key UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX partner_org_name_key ON partner_org (tenant_id, lower(name));

CREATE TABLE member (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    email               text NOT NULL,
    display_name        text NOT NULL,
    password_hash       text NOT NULL,
    role                text NOT NULL CONSTRAINT member_role_known
                        CHECK (role IN ('owner', 'admin', 'agent', 'reviewer', 'auditor', 'partner')),
    partner_org_id      uuid,
    status              text NOT NULL DEFAULT 'active' CONSTRAINT member_status_known
                        CHECK (status IN ('active', 'disabled')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT member_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT member_partner_org_fkey FOREIGN KEY (tenant_id, partner_org_id)
        REFERENCES partner_org (tenant_id, id),
    -- A partner always belongs to exactly one partner organisation; nobody else does.
    CONSTRAINT member_partner_org_required CHECK ((role = 'partner') = (partner_org_id IS NOT NULL))
);
CREATE UNIQUE INDEX member_email_key ON member (tenant_id, lower(email));

CREATE TABLE invitation (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    email           text NOT NULL,
    role            text NOT NULL CONSTRAINT invitation_role_known
                    CHECK (role IN ('owner', 'admin', 'agent', 'reviewer', 'auditor', 'partner')),
    partner_org_id  uuid,
    token_hash      bytea NOT NULL CONSTRAINT invitation_token_hash_key UNIQUE,
    invited_by      uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    accepted_at     timestamptz,
    revoked_at      timestamptz,
    CONSTRAINT invitation_inviter_fkey FOREIGN KEY (tenant_id, invited_by) REFERENCES member (tenant_id, id),
    CONSTRAINT invitation_partner_org_fkey FOREIGN KEY (tenant_id, partner_org_id)
        REFERENCES partner_org (tenant_id, id),
    CONSTRAINT invitation_partner_org_required CHECK ((role = 'partner') = (partner_org_id IS NOT NULL))
);

CREATE TABLE session (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    member_id   uuid NOT NULL,
    token_hash  bytea NOT NULL CONSTRAINT session_token_hash_key UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    ip          text,
    user_agent  text,
    CONSTRAINT session_member_fkey FOREIGN KEY (tenant_id, member_id)
        REFERENCES member (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT session_lifetime CHECK (expires_at <= created_at + interval '30 days')
);
CREATE INDEX session_member_idx ON session (tenant_id, member_id);

CREATE TABLE api_token (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    created_by   uuid NOT NULL,
    name         text NOT NULL CONSTRAINT api_token_name_length CHECK (length(name) BETWEEN 1 AND 100),
    role         text NOT NULL CONSTRAINT api_token_role_known
                 CHECK (role IN ('admin', 'agent', 'reviewer', 'auditor', 'partner')),
    token_hash   bytea NOT NULL CONSTRAINT api_token_token_hash_key UNIQUE,
    prefix       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT api_token_creator_fkey FOREIGN KEY (tenant_id, created_by)
        REFERENCES member (tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX api_token_name_key ON api_token (tenant_id, lower(name)) WHERE revoked_at IS NULL;

-- ---------------------------------------------------------------------------------------------
-- Audit: append-only, hash-chained per tenant.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE audit_event (
    tenant_id    uuid NOT NULL,
    seq          bigint NOT NULL,
    id           uuid NOT NULL CONSTRAINT audit_event_id_key UNIQUE,
    occurred_at  timestamptz NOT NULL,
    actor_type   text NOT NULL,
    actor_id     text,
    action       text NOT NULL,
    entity_type  text NOT NULL,
    entity_id    text,
    before       jsonb,
    after        jsonb,
    ip           text,
    user_agent   text,
    request_id   text,
    execution_id uuid,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_event_time_idx ON audit_event (tenant_id, occurred_at);
CREATE INDEX audit_event_entity_idx ON audit_event (tenant_id, entity_type, entity_id);
CREATE INDEX audit_event_action_idx ON audit_event (tenant_id, action);

-- The newest link of each tenant's chain. Locking this row serialises appends per tenant, so
-- concurrent transactions can never fork the chain.
CREATE TABLE audit_chain_head (
    tenant_id  uuid PRIMARY KEY,
    seq        bigint NOT NULL,
    hash       bytea NOT NULL
);

-- Where verification starts once retention has purged the oldest rows: the first retained
-- sequence number and the hash of the last purged row, which that row must name as prev_hash.
CREATE TABLE audit_chain_anchor (
    tenant_id  uuid PRIMARY KEY,
    first_seq  bigint NOT NULL,
    prev_hash  bytea NOT NULL,
    purged_at  timestamptz NOT NULL DEFAULT now()
);

-- The canonical bytes a row's hash covers. jsonb renders keys in a fixed order, and the
-- timestamp is rendered in UTC explicitly so the session's TimeZone cannot change the bytes.
CREATE FUNCTION audit_canonical(e audit_event) RETURNS bytea
    LANGUAGE sql STABLE
AS $$
    SELECT convert_to(jsonb_build_object(
        'tenant_id', e.tenant_id,
        'seq', e.seq,
        'id', e.id,
        'occurred_at', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'actor_type', e.actor_type,
        'actor_id', e.actor_id,
        'action', e.action,
        'entity_type', e.entity_type,
        'entity_id', e.entity_id,
        'before', e.before,
        'after', e.after,
        'ip', e.ip,
        'user_agent', e.user_agent,
        'request_id', e.request_id,
        'execution_id', e.execution_id,
        'prev_hash', encode(e.prev_hash, 'hex')
    )::text, 'UTF8')
$$;

-- Appends one event to the tenant's chain inside the caller's transaction, so the event
-- commits or rolls back with the change it describes.
CREATE FUNCTION audit_append(
    p_tenant_id uuid, p_actor_type text, p_actor_id text, p_action text,
    p_entity_type text, p_entity_id text, p_before jsonb, p_after jsonb,
    p_ip text, p_user_agent text, p_request_id text, p_execution_id uuid
) RETURNS bigint
    LANGUAGE plpgsql
AS $$
DECLARE
    e audit_event;
    head_seq bigint;
    head_hash bytea;
BEGIN
    INSERT INTO audit_chain_head (tenant_id, seq, hash)
    VALUES (p_tenant_id, 0, '\x0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT (tenant_id) DO NOTHING;

    SELECT seq, hash INTO head_seq, head_hash
    FROM audit_chain_head WHERE tenant_id = p_tenant_id FOR UPDATE;

    e.tenant_id := p_tenant_id;
    e.seq := head_seq + 1;
    e.id := gen_random_uuid();
    e.occurred_at := clock_timestamp();
    e.actor_type := p_actor_type;
    e.actor_id := p_actor_id;
    e.action := p_action;
    e.entity_type := p_entity_type;
    e.entity_id := p_entity_id;
    e.before := p_before;
    e.after := p_after;
    e.ip := p_ip;
    e.user_agent := p_user_agent;
    e.request_id := p_request_id;
    e.execution_id := p_execution_id;
    e.prev_hash := head_hash;
    e.hash := sha256(head_hash || audit_canonical(e));

    INSERT INTO audit_event VALUES (e.*);
    UPDATE audit_chain_head SET seq = e.seq, hash = e.hash WHERE tenant_id = p_tenant_id;
    RETURN e.seq;
END
$$;

CREATE FUNCTION audit_event_guard() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('custodian.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_event is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_event_append_only
    BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_guard();

CREATE TRIGGER audit_event_no_truncate
    BEFORE TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_guard();

-- The only way rows leave the audit log: retention. Deletes the oldest rows of one tenant up to
-- a cutoff (always a prefix of the chain), moves the anchor so verification starts at the
-- oldest retained link, and records the purge itself as an audit event.
CREATE FUNCTION audit_purge(p_tenant_id uuid, p_cutoff timestamptz, p_limit integer)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    last_seq bigint;
    last_hash bytea;
    purged bigint;
BEGIN
    -- The owner may itself be subject to the forced policies: act as the tenant.
    PERFORM set_config('app.tenant_id', p_tenant_id::text, true);
    -- Hold the chain head so no append interleaves with the purge.
    PERFORM 1 FROM audit_chain_head WHERE tenant_id = p_tenant_id FOR UPDATE;

    SELECT seq, hash INTO last_seq, last_hash FROM (
        SELECT seq, hash FROM audit_event
        WHERE tenant_id = p_tenant_id AND occurred_at < p_cutoff
        ORDER BY seq LIMIT p_limit
    ) doomed ORDER BY seq DESC LIMIT 1;
    IF last_seq IS NULL THEN
        RETURN 0;
    END IF;

    PERFORM set_config('custodian.audit_purge', 'on', true);
    DELETE FROM audit_event WHERE tenant_id = p_tenant_id AND seq <= last_seq;
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config('custodian.audit_purge', 'off', true);

    INSERT INTO audit_chain_anchor (tenant_id, first_seq, prev_hash, purged_at)
    VALUES (p_tenant_id, last_seq + 1, last_hash, now())
    ON CONFLICT (tenant_id) DO UPDATE
        SET first_seq = EXCLUDED.first_seq, prev_hash = EXCLUDED.prev_hash, purged_at = now();

    PERFORM audit_append(p_tenant_id, 'system', NULL, 'audit.purged', 'audit_event', NULL, NULL,
        jsonb_build_object('count', purged, 'cutoff', p_cutoff, 'through_seq', last_seq),
        NULL, NULL, NULL, NULL);
    RETURN purged;
END
$$;
REVOKE ALL ON FUNCTION audit_purge(uuid, timestamptz, integer) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Row-level security and grants.
-- ---------------------------------------------------------------------------------------------

ALTER TABLE tenant ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant
    USING (id = current_tenant_id()) WITH CHECK (id = current_tenant_id());

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['partner_org', 'member', 'invitation', 'session', 'api_token',
                             'audit_event', 'audit_chain_head', 'audit_chain_anchor']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_tenant_id())'
                       ' WITH CHECK (tenant_id = current_tenant_id())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE ON tenant TO custodian_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON partner_org, member, invitation, session, api_token
    TO custodian_app;
GRANT SELECT, INSERT ON audit_event TO custodian_app;
GRANT SELECT, INSERT, UPDATE ON audit_chain_head TO custodian_app;
GRANT SELECT ON audit_chain_anchor TO custodian_app;

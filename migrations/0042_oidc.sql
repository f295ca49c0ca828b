-- Single sign-on through OpenID Connect (issue #19 item 4). Owned by the auth domain.

-- A tenant's identity provider. The client secret is sealed (SEC-10) under the tenant's own
-- record and never answered. `allowed_domains` are the e-mail domains (lower case) whose
-- verified addresses may sign in; `join_mode` says whether an unknown address of those domains
-- becomes a member with `default_role` (just in time) or is refused (invited members only).
-- Owners are never made by a sign-in, nor partners (who need a partner organisation).
CREATE TABLE oidc_provider (
    tenant_id               uuid PRIMARY KEY REFERENCES tenant (id) ON DELETE CASCADE,
    issuer                  text NOT NULL,
    client_id               text NOT NULL,
    sealed_client_secret    bytea NOT NULL,
    allowed_domains         text[] NOT NULL CONSTRAINT oidc_provider_domains_present
                            CHECK (cardinality(allowed_domains) BETWEEN 1 AND 50),
    default_role            text NOT NULL CONSTRAINT oidc_provider_default_role_known
                            CHECK (default_role IN ('admin', 'agent', 'reviewer', 'auditor')),
    join_mode               text NOT NULL CONSTRAINT oidc_provider_join_mode_known
                            CHECK (join_mode IN ('just_in_time', 'invited_only')),
    password_sign_in        boolean NOT NULL DEFAULT true,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- A sign-in under way, from the redirect to the provider to its return: the state (only its
-- hash), the browser that started it (a cookie's hash, so a link carrying someone else's code and
-- state signs nobody in), the nonce the ID token must carry and the PKCE verifier. Single use and
-- short-lived.
CREATE TABLE oidc_login (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    state_hash      bytea NOT NULL CONSTRAINT oidc_login_state_hash_key UNIQUE,
    browser_hash    bytea NOT NULL,
    nonce           text NOT NULL,
    pkce_verifier   text NOT NULL,
    redirect_uri    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    CONSTRAINT oidc_login_lifetime CHECK (expires_at <= created_at + interval '10 minutes')
);
CREATE INDEX oidc_login_tenant_idx ON oidc_login (tenant_id, created_at);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['oidc_provider', 'oidc_login']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_tenant_id())'
                       ' WITH CHECK (tenant_id = current_tenant_id())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON oidc_provider, oidc_login TO custodian_app;

-- Two-factor sign-in with TOTP (RFC 6238) and recovery codes (SEC-7). Owned by the auth domain.

-- Whether a tenant makes two-factor sign-in mandatory: for nobody (no row, or 'none'), for
-- owners and admins, or for every member.
CREATE TABLE mfa_policy (
    tenant_id   uuid PRIMARY KEY REFERENCES tenant (id) ON DELETE CASCADE,
    required    text NOT NULL CONSTRAINT mfa_policy_required_known
                CHECK (required IN ('none', 'admins', 'everyone')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A member's authenticator. The secret is sealed (SEC-10) under the member's own record; it is
-- in use once confirmed with a first code. `last_step` is the TOTP time step of the last code
-- accepted: a code of that step or an earlier one is refused, so no code works twice. A reset
-- by an administrator clears the secret and leaves `reset_at`, so the member is told.
CREATE TABLE member_mfa (
    tenant_id       uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    member_id       uuid NOT NULL,
    sealed_secret   bytea,
    confirmed_at    timestamptz,
    last_step       bigint,
    reset_at        timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT member_mfa_pkey PRIMARY KEY (tenant_id, member_id),
    CONSTRAINT member_mfa_member_fkey FOREIGN KEY (tenant_id, member_id)
        REFERENCES member (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT member_mfa_confirmed_has_secret
        CHECK (confirmed_at IS NULL OR sealed_secret IS NOT NULL)
);

-- Ten single-use recovery codes per confirmed enrolment, stored as SHA-256 hashes (each code
-- is 60 random bits, so a hash is enough; guessing is throttled like passwords).
CREATE TABLE mfa_recovery_code (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    member_id   uuid NOT NULL,
    code_hash   bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    used_at     timestamptz,
    CONSTRAINT mfa_recovery_code_member_fkey FOREIGN KEY (tenant_id, member_id)
        REFERENCES member (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX mfa_recovery_code_member_idx ON mfa_recovery_code (tenant_id, member_id);

-- The second step of a sign-in: the password was right, a code is still owed. Short-lived,
-- single-use, and dead after a few wrong codes. Only the token's hash is kept.
CREATE TABLE mfa_challenge (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    member_id   uuid NOT NULL,
    token_hash  bytea NOT NULL CONSTRAINT mfa_challenge_token_hash_key UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    failures    integer NOT NULL DEFAULT 0,
    CONSTRAINT mfa_challenge_member_fkey FOREIGN KEY (tenant_id, member_id)
        REFERENCES member (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT mfa_challenge_lifetime CHECK (expires_at <= created_at + interval '15 minutes')
);
CREATE INDEX mfa_challenge_member_idx ON mfa_challenge (tenant_id, member_id);

-- When the session's member last proved a second factor (its sign-in, or a later check):
-- creating an API token needs a recent one.
ALTER TABLE session ADD COLUMN mfa_verified_at timestamptz;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['mfa_policy', 'member_mfa', 'mfa_recovery_code', 'mfa_challenge']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_tenant_id())'
                       ' WITH CHECK (tenant_id = current_tenant_id())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON mfa_policy, member_mfa, mfa_recovery_code, mfa_challenge
    TO custodian_app;

-- Consents (DSR-5): what a contact agreed to, for which purpose, on which legal basis, when,
-- through what, and the text version they saw. A revocation closes the record and keeps it; a
-- new grant is a new record, so the history is the table. Owned by the privacy domain.
CREATE TABLE consent (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    contact_id         uuid NOT NULL,
    purpose            text NOT NULL CONSTRAINT consent_purpose_known
                       CHECK (purpose IN ('ai_processing', 'marketing', 'surveys', 'analytics')),
    -- LGPD Art. 7 / GDPR Art. 6.
    legal_basis        text NOT NULL CONSTRAINT consent_legal_basis_known
                       CHECK (legal_basis IN ('consent', 'contract', 'legal_obligation',
                           'legitimate_interests', 'vital_interests', 'public_interest')),
    source             text NOT NULL CONSTRAINT consent_source_known
                       CHECK (source IN ('member', 'api', 'web_chat', 'whatsapp', 'form', 'import')),
    text_version       text CONSTRAINT consent_text_version_length
                       CHECK (length(text_version) BETWEEN 1 AND 200),
    granted_at         timestamptz NOT NULL DEFAULT now(),
    -- The member (or token's member) who recorded it; NULL when a channel recorded it.
    granted_by         uuid,
    revoked_at         timestamptz,
    revoked_by         uuid,
    revocation_source  text CONSTRAINT consent_revocation_source_known
                       CHECK (revocation_source IN ('member', 'api', 'web_chat', 'whatsapp', 'form', 'import')),
    CONSTRAINT consent_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT consent_revocation_complete CHECK ((revoked_at IS NULL) = (revocation_source IS NULL)),
    CONSTRAINT consent_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contact (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT consent_granter_fkey FOREIGN KEY (tenant_id, granted_by) REFERENCES member (tenant_id, id),
    CONSTRAINT consent_revoker_fkey FOREIGN KEY (tenant_id, revoked_by) REFERENCES member (tenant_id, id)
);
-- One standing consent per contact and purpose: the check every sender makes reads it.
CREATE UNIQUE INDEX consent_active_key ON consent (tenant_id, contact_id, purpose) WHERE revoked_at IS NULL;
CREATE INDEX consent_contact_idx ON consent (tenant_id, contact_id, id DESC);

ALTER TABLE consent ENABLE ROW LEVEL SECURITY;
ALTER TABLE consent FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON consent USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());
-- A consent is revoked, never deleted (it goes with its contact).
GRANT SELECT, INSERT, UPDATE ON consent TO custodian_app;

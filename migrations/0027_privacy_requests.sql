-- Data-subject requests (DSR-6): what a person asked of the tenant under LGPD Art. 18 / GDPR
-- Art. 15-22, who asked, how their identity was checked, when the answer is due, and where it
-- stands. Owned by the privacy domain.

-- One row per tenant that changed anything; a missing row means the defaults. LGPD Art. 19
-- gives 15 days for a full answer, GDPR a month (extendable): a tenant may choose within 1-90.
CREATE TABLE privacy_settings (
    tenant_id         uuid PRIMARY KEY REFERENCES tenant (id) ON DELETE CASCADE,
    request_due_days  integer NOT NULL DEFAULT 15
                      CONSTRAINT privacy_settings_due_days CHECK (request_due_days BETWEEN 1 AND 90),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE privacy_request (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    kind              text NOT NULL CONSTRAINT privacy_request_kind_known CHECK (kind IN (
                          'confirmation', 'access', 'portability', 'correction', 'erasure',
                          'anonymisation', 'restriction', 'objection', 'consent_revocation',
                          'sharing_information')),
    -- The person the request is about. Kept when the contact is erased (the request and its
    -- answer are the proof the tenant owes): the link is cleared, the request stays.
    contact_id        uuid,
    requester         text NOT NULL CONSTRAINT privacy_request_requester_known
                      CHECK (requester IN ('data_subject', 'representative', 'authority')),
    requester_name    text CONSTRAINT privacy_request_requester_name_length
                      CHECK (length(requester_name) BETWEEN 1 AND 200),
    identity_check    text NOT NULL CONSTRAINT privacy_request_identity_check_known
                      CHECK (identity_check IN ('channel_identity', 'signed_in', 'document',
                          'email_confirmation', 'phone_confirmation', 'in_person', 'other')),
    status            text NOT NULL DEFAULT 'received'
                      CONSTRAINT privacy_request_status_known CHECK (status IN (
                          'received', 'in_progress', 'waiting_on_subject', 'done', 'refused')),
    -- A refusal must say why (LGPD Art. 18 §4): the reason goes with `refused` and only with it.
    refusal_reason    text CONSTRAINT privacy_request_refusal_reason_length
                      CHECK (length(refusal_reason) BETWEEN 1 AND 2000),
    due_at            timestamptz NOT NULL,
    closed_at         timestamptz,
    created_by        uuid NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT privacy_request_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT privacy_request_refusal_reason_iff_refused
        CHECK ((status = 'refused') = (refusal_reason IS NOT NULL)),
    CONSTRAINT privacy_request_closed_iff_final
        CHECK ((status IN ('done', 'refused')) = (closed_at IS NOT NULL)),
    CONSTRAINT privacy_request_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contact (tenant_id, id) ON DELETE SET NULL (contact_id),
    CONSTRAINT privacy_request_creator_fkey FOREIGN KEY (tenant_id, created_by)
        REFERENCES member (tenant_id, id)
);
-- The list: newest first, filtered by status; the overdue count reads the open ones by due date.
CREATE INDEX privacy_request_list_idx ON privacy_request (tenant_id, id DESC);
CREATE INDEX privacy_request_open_due_idx ON privacy_request (tenant_id, due_at)
    WHERE status NOT IN ('done', 'refused');
CREATE INDEX privacy_request_contact_idx ON privacy_request (tenant_id, contact_id);

-- Notes on a request, in order; a note is never edited or removed (the trail is the proof).
CREATE TABLE privacy_request_note (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    request_id  uuid NOT NULL,
    body        text NOT NULL CONSTRAINT privacy_request_note_body_length
                CHECK (length(body) BETWEEN 1 AND 4000),
    author_id   uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT privacy_request_note_request_fkey FOREIGN KEY (tenant_id, request_id)
        REFERENCES privacy_request (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT privacy_request_note_author_fkey FOREIGN KEY (tenant_id, author_id)
        REFERENCES member (tenant_id, id)
);
CREATE INDEX privacy_request_note_request_idx ON privacy_request_note (tenant_id, request_id, id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['privacy_settings', 'privacy_request', 'privacy_request_note']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_tenant_id())'
                       ' WITH CHECK (tenant_id = current_tenant_id())', t);
    END LOOP;
END
$$;

-- A request is answered, never deleted; notes are only added.
GRANT SELECT, INSERT, UPDATE ON privacy_settings, privacy_request TO custodian_app;
GRANT SELECT, INSERT ON privacy_request_note TO custodian_app;

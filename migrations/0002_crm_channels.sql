-- CRM core, channels, conversations and the durable work queue.

CREATE TABLE account (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    name            text NOT NULL CONSTRAINT account_name_length CHECK (length(name) BETWEEN 1 AND 200),
    domain          text,
    attributes      jsonb NOT NULL DEFAULT '{}'
                    CONSTRAINT account_attributes_object CHECK (jsonb_typeof(attributes) = 'object'),
    -- Shared with one partner organisation, whose partners may then see it (SEC-2).
    partner_org_id  uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT account_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT account_partner_org_fkey FOREIGN KEY (tenant_id, partner_org_id)
        REFERENCES partner_org (tenant_id, id) ON DELETE SET NULL (partner_org_id)
);
CREATE INDEX account_name_idx ON account (tenant_id, lower(name));

CREATE TABLE contact (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    account_id      uuid,
    name            text CONSTRAINT contact_name_length CHECK (length(name) <= 200),
    email           text CONSTRAINT contact_email_length CHECK (length(email) <= 254),
    -- E.164, validated at the edge.
    phone           text CONSTRAINT contact_phone_e164 CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    whatsapp_id     text,
    -- The tenant's own id for this person (web chat identity verification).
    external_id     text CONSTRAINT contact_external_id_length CHECK (length(external_id) <= 200),
    attributes      jsonb NOT NULL DEFAULT '{}'
                    CONSTRAINT contact_attributes_object CHECK (jsonb_typeof(attributes) = 'object'),
    -- Data-subject restriction: the agent runtime never processes this contact (DSR-4).
    restricted      boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contact_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT contact_account_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES account (tenant_id, id) ON DELETE SET NULL (account_id)
);
CREATE UNIQUE INDEX contact_email_key ON contact (tenant_id, lower(email)) WHERE email IS NOT NULL;
CREATE UNIQUE INDEX contact_whatsapp_key ON contact (tenant_id, whatsapp_id) WHERE whatsapp_id IS NOT NULL;
CREATE UNIQUE INDEX contact_external_key ON contact (tenant_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX contact_account_idx ON contact (tenant_id, account_id);

-- One inbox per channel: a WhatsApp number or a web chat. Non-secret settings are plain JSON;
-- secrets (tokens, app secrets, identity keys) are one AES-256-GCM sealed blob (SEC-10).
CREATE TABLE inbox (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    name        text NOT NULL CONSTRAINT inbox_name_length CHECK (length(name) BETWEEN 1 AND 100),
    channel     text NOT NULL CONSTRAINT inbox_channel_known CHECK (channel IN ('whatsapp', 'webchat')),
    settings    jsonb NOT NULL DEFAULT '{}',
    secrets     bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inbox_tenant_id_key UNIQUE (tenant_id, id)
);
-- A WhatsApp number is served by exactly one inbox on the platform.
CREATE UNIQUE INDEX inbox_phone_number_key ON inbox ((settings ->> 'phone_number_id'))
    WHERE channel = 'whatsapp';

CREATE TABLE conversation (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    inbox_id          uuid NOT NULL,
    contact_id        uuid NOT NULL,
    status            text NOT NULL DEFAULT 'open' CONSTRAINT conversation_status_known
                      CHECK (status IN ('open', 'pending', 'snoozed', 'resolved')),
    handler           text NOT NULL DEFAULT 'ai' CONSTRAINT conversation_handler_known
                      CHECK (handler IN ('ai', 'human')),
    assignee_id       uuid,
    labels            text[] NOT NULL DEFAULT '{}',
    snoozed_until     timestamptz,
    last_message_at   timestamptz NOT NULL DEFAULT now(),
    -- The customer's last message: WhatsApp's 24-hour service window runs from here.
    last_inbound_at   timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversation_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT conversation_inbox_fkey FOREIGN KEY (tenant_id, inbox_id)
        REFERENCES inbox (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT conversation_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contact (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT conversation_assignee_fkey FOREIGN KEY (tenant_id, assignee_id)
        REFERENCES member (tenant_id, id) ON DELETE SET NULL (assignee_id)
);
-- At most one unresolved conversation per contact and inbox: inbound messages join it.
CREATE UNIQUE INDEX conversation_active_key ON conversation (inbox_id, contact_id)
    WHERE status <> 'resolved';
CREATE INDEX conversation_list_idx ON conversation (tenant_id, last_message_at DESC, id DESC);
CREATE INDEX conversation_labels_idx ON conversation USING gin (labels);

CREATE TABLE message (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    conversation_id     uuid NOT NULL,
    inbox_id            uuid NOT NULL,
    direction           text NOT NULL CONSTRAINT message_direction_known
                        CHECK (direction IN ('inbound', 'outbound')),
    author_kind         text NOT NULL CONSTRAINT message_author_known
                        CHECK (author_kind IN ('customer', 'member', 'ai', 'system')),
    author_id           uuid,
    content_type        text NOT NULL DEFAULT 'text',
    body                text NOT NULL DEFAULT '',
    attachments         jsonb NOT NULL DEFAULT '[]',
    -- Private notes are for members only and never leave the platform.
    private             boolean NOT NULL DEFAULT false,
    provider_message_id text,
    delivery_status     text CONSTRAINT message_delivery_known
                        CHECK (delivery_status IN ('queued', 'sent', 'delivered', 'read', 'failed')),
    delivery_error      jsonb,
    provider_timestamp  timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    delivered_at        timestamptz,
    read_at             timestamptz,
    failed_at           timestamptz,
    CONSTRAINT message_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT message_conversation_fkey FOREIGN KEY (tenant_id, conversation_id)
        REFERENCES conversation (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT message_private_is_a_note CHECK (NOT private OR (direction = 'outbound' AND author_kind = 'member'))
);
-- A provider's redelivery of the same message is a no-op.
CREATE UNIQUE INDEX message_provider_key ON message (inbox_id, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX message_thread_idx ON message (conversation_id, created_at, id);

-- A web chat visitor's session: the token (stored hashed) resumes the same contact and
-- conversation from the same browser.
CREATE TABLE webchat_session (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    inbox_id      uuid NOT NULL,
    contact_id    uuid NOT NULL,
    token_hash    bytea NOT NULL CONSTRAINT webchat_session_token_hash_key UNIQUE,
    verified      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    CONSTRAINT webchat_session_inbox_fkey FOREIGN KEY (tenant_id, inbox_id)
        REFERENCES inbox (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT webchat_session_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contact (tenant_id, id) ON DELETE CASCADE
);

-- Durable work: outbound sends, agent runs. At-least-once: a claimed job whose lease runs out
-- (its worker died) is claimed again; the idempotency key makes enqueueing the same work twice
-- a no-op.
CREATE TABLE job (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    kind             text NOT NULL,
    payload          jsonb NOT NULL DEFAULT '{}',
    idempotency_key  text NOT NULL CONSTRAINT job_idempotency_key UNIQUE,
    status           text NOT NULL DEFAULT 'queued' CONSTRAINT job_status_known
                     CHECK (status IN ('queued', 'running', 'done', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 8,
    run_at           timestamptz NOT NULL DEFAULT now(),
    locked_until     timestamptz,
    locked_by        text,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX job_ready_idx ON job (run_at) WHERE status = 'queued';
CREATE INDEX job_lease_idx ON job (locked_until) WHERE status = 'running';
CREATE INDEX job_tenant_idx ON job (tenant_id, status, created_at DESC);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['account', 'contact', 'inbox', 'conversation', 'message', 'webchat_session', 'job']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_tenant_id())'
                       ' WITH CHECK (tenant_id = current_tenant_id())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON account, contact, inbox, conversation, message, webchat_session
    TO custodian_app;
GRANT SELECT, INSERT, UPDATE ON job TO custodian_app;

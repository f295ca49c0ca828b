-- The agent may leave private notes too (a draft it was not sure enough to send).
ALTER TABLE message DROP CONSTRAINT message_private_is_a_note;
ALTER TABLE message ADD CONSTRAINT message_private_is_a_note
    CHECK (NOT private OR (direction = 'outbound' AND author_kind IN ('member', 'ai', 'system')));

-- The agent runtime: per-tenant settings, the knowledge base in pgvector, each conversation's
-- PII vault (sealed), the execution audit, tenant-defined actions, review items and tickets.

CREATE TABLE agent_settings (
    tenant_id             uuid PRIMARY KEY REFERENCES tenant (id) ON DELETE CASCADE,
    -- NULL: no provider configured, the built-in offline responder answers.
    provider_base_url     text,
    -- Sealed with the tenant-secrets key, bound to "agent:<tenant_id>" (SEC-10).
    provider_api_key      bytea,
    chat_model            text NOT NULL DEFAULT 'gpt-4o-mini',
    embedding_model       text NOT NULL DEFAULT 'text-embedding-3-small',
    -- Dimensions of the knowledge vectors; the offline embedder uses 384.
    embedding_dims        integer NOT NULL DEFAULT 384
                          CONSTRAINT agent_settings_dims_known CHECK (embedding_dims IN (384, 768, 1024, 1536)),
    temperature           real NOT NULL DEFAULT 0.2
                          CONSTRAINT agent_settings_temperature CHECK (temperature BETWEEN 0 AND 2),
    timeout_ms            integer NOT NULL DEFAULT 20000
                          CONSTRAINT agent_settings_timeout CHECK (timeout_ms BETWEEN 1000 AND 120000),
    max_retries           integer NOT NULL DEFAULT 3
                          CONSTRAINT agent_settings_retries CHECK (max_retries BETWEEN 0 AND 10),
    -- Below this the draft is not sent: a human gets it as a suggestion (AGT-5).
    confidence_threshold  real NOT NULL DEFAULT 0.6
                          CONSTRAINT agent_settings_threshold CHECK (confidence_threshold BETWEEN 0 AND 1),
    weight_self           real NOT NULL DEFAULT 0.4,
    weight_logprob        real NOT NULL DEFAULT 0.2,
    weight_retrieval      real NOT NULL DEFAULT 0.4,
    -- Guardrail configuration of the tenant (rules, PII options, safe replies), as JSON.
    guardrails            jsonb NOT NULL DEFAULT '{}',
    -- Bumped on every change: compiled policies are cached per (tenant, version).
    config_version        bigint NOT NULL DEFAULT 1,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE knowledge_article (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    title             text NOT NULL CONSTRAINT knowledge_article_title CHECK (length(title) BETWEEN 1 AND 300),
    body              text NOT NULL CONSTRAINT knowledge_article_body CHECK (length(body) <= 200000),
    tags              text[] NOT NULL DEFAULT '{}',
    status            text NOT NULL DEFAULT 'published'
                      CONSTRAINT knowledge_article_status CHECK (status IN ('draft', 'published', 'archived')),
    embedding_status  text NOT NULL DEFAULT 'pending'
                      CONSTRAINT knowledge_article_embedding CHECK (embedding_status IN ('pending', 'ready', 'failed')),
    embedding_error   text,
    -- Bumped on every edit, so a stale embedding job can tell it is stale.
    revision          integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT knowledge_article_tenant_id_key UNIQUE (tenant_id, id)
);
CREATE INDEX knowledge_article_list_idx ON knowledge_article (tenant_id, id DESC);

CREATE TABLE knowledge_chunk (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    article_id  uuid NOT NULL,
    ordinal     integer NOT NULL,
    content     text NOT NULL,
    dims        integer NOT NULL,
    -- Dimensions vary by tenant (embedding model); each supported size has its own HNSW
    -- index over a typed cast, used by queries that filter on the same size.
    embedding   vector NOT NULL CONSTRAINT knowledge_chunk_dims CHECK (vector_dims(embedding) = dims),
    model       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT knowledge_chunk_article_fkey FOREIGN KEY (tenant_id, article_id)
        REFERENCES knowledge_article (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX knowledge_chunk_article_idx ON knowledge_chunk (article_id);
CREATE INDEX knowledge_chunk_hnsw_384 ON knowledge_chunk
    USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE dims = 384;
CREATE INDEX knowledge_chunk_hnsw_768 ON knowledge_chunk
    USING hnsw ((embedding::vector(768)) vector_cosine_ops) WHERE dims = 768;
CREATE INDEX knowledge_chunk_hnsw_1024 ON knowledge_chunk
    USING hnsw ((embedding::vector(1024)) vector_cosine_ops) WHERE dims = 1024;
CREATE INDEX knowledge_chunk_hnsw_1536 ON knowledge_chunk
    USING hnsw ((embedding::vector(1536)) vector_cosine_ops) WHERE dims = 1536;

-- Each conversation's PII vault: placeholders issued to the model and the values behind them,
-- sealed with the tenant-secrets key and bound to the conversation.
CREATE TABLE conversation_vault (
    conversation_id  uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    sealed           bytea NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversation_vault_conversation_fkey FOREIGN KEY (tenant_id, conversation_id)
        REFERENCES conversation (tenant_id, id) ON DELETE CASCADE
);

-- One agent execution: everything that went in and came out (AGT-8), which provider and model
-- saw the tenant's data (AGT-10). Linked into the hash-chained audit by its execution id.
CREATE TABLE agent_execution (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    conversation_id     uuid NOT NULL,
    contact_id          uuid NOT NULL,
    trigger_message_id  uuid,
    provider            text NOT NULL,
    model               text NOT NULL,
    offline             boolean NOT NULL,
    outcome             text NOT NULL DEFAULT 'running'
                        CONSTRAINT agent_execution_outcome CHECK (outcome IN
                            ('running', 'replied', 'handed_off', 'blocked', 'pending_review', 'failed')),
    confidence          real,
    record              jsonb NOT NULL DEFAULT '{}',
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    CONSTRAINT agent_execution_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT agent_execution_conversation_fkey FOREIGN KEY (tenant_id, conversation_id)
        REFERENCES conversation (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX agent_execution_conversation_idx ON agent_execution (tenant_id, conversation_id, started_at DESC);
CREATE INDEX agent_execution_contact_idx ON agent_execution (tenant_id, contact_id, started_at DESC);
CREATE INDEX agent_execution_time_idx ON agent_execution (tenant_id, started_at);

-- HTTP actions a tenant lets the agent call (refund, look up an order...).
CREATE TABLE tenant_action (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    name               text NOT NULL CONSTRAINT tenant_action_name CHECK (name ~ '^[a-z][a-z0-9_]{1,63}$'),
    description        text NOT NULL,
    parameters         jsonb NOT NULL DEFAULT '{"type":"object","properties":{}}',
    target_url         text NOT NULL,
    -- HMAC key for the request signature, sealed (SEC-10).
    secret             bytea NOT NULL,
    -- Material effect: never executed without a reviewer's approval (AGT-6).
    requires_approval  boolean NOT NULL DEFAULT true,
    kind               text CONSTRAINT tenant_action_kind CHECK (kind IN ('refund', 'discount', 'exchange', 'escalation')),
    amount_field       text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_action_tenant_id_key UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX tenant_action_name_key ON tenant_action (tenant_id, name);

-- Something a person must decide: a material action, a low-confidence draft, a guardrail flag
-- or a request for human review.
CREATE TABLE review_item (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    kind              text NOT NULL CONSTRAINT review_item_kind CHECK (kind IN
                          ('action', 'low_confidence', 'guardrail_flag', 'human_review')),
    status            text NOT NULL DEFAULT 'pending' CONSTRAINT review_item_status CHECK (status IN
                          ('pending', 'approved', 'rejected', 'expired', 'executed', 'failed')),
    conversation_id   uuid,
    execution_id      uuid,
    action_id         uuid,
    proposal          jsonb NOT NULL DEFAULT '{}',
    confidence        real,
    findings          jsonb NOT NULL DEFAULT '[]',
    requested_by      text NOT NULL,
    -- Execution after approval happens once: the action is called with this key.
    idempotency_key   text NOT NULL CONSTRAINT review_item_idempotency_key UNIQUE,
    decided_by        uuid,
    decision_reason   text,
    result            jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    decided_at        timestamptz,
    executed_at       timestamptz,
    CONSTRAINT review_item_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT review_item_conversation_fkey FOREIGN KEY (tenant_id, conversation_id)
        REFERENCES conversation (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX review_item_queue_idx ON review_item (tenant_id, status, created_at);

CREATE TABLE ticket (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    contact_id       uuid,
    conversation_id  uuid,
    subject          text NOT NULL CONSTRAINT ticket_subject CHECK (length(subject) BETWEEN 1 AND 300),
    description      text NOT NULL DEFAULT '',
    status           text NOT NULL DEFAULT 'open'
                     CONSTRAINT ticket_status CHECK (status IN ('open', 'pending', 'solved', 'closed')),
    priority         text NOT NULL DEFAULT 'normal'
                     CONSTRAINT ticket_priority CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ticket_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT ticket_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contact (tenant_id, id) ON DELETE SET NULL (contact_id),
    CONSTRAINT ticket_conversation_fkey FOREIGN KEY (tenant_id, conversation_id)
        REFERENCES conversation (tenant_id, id) ON DELETE SET NULL (conversation_id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agent_settings', 'knowledge_article', 'knowledge_chunk', 'conversation_vault',
                             'agent_execution', 'tenant_action', 'review_item', 'ticket']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_tenant_id())'
                       ' WITH CHECK (tenant_id = current_tenant_id())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON agent_settings, knowledge_article, knowledge_chunk,
    conversation_vault, tenant_action, review_item, ticket TO custodian_app;
-- Executions are an audit record: written and read, never rewritten by the app but to finish.
GRANT SELECT, INSERT, UPDATE ON agent_execution TO custodian_app;

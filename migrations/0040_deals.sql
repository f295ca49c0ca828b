-- Deals and pipelines (#17 item 3), owned by the cs domain. A pipeline is the tenant's ordered
-- list of stages, each with a probability; a deal sits in one stage of one pipeline until it is
-- won or lost. Every time a deal enters a stage, a deal_stage_change row says so, so stage
-- durations and conversion are computed from facts, not from the deal's present state.

CREATE TABLE pipeline (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    name        text NOT NULL CONSTRAINT pipeline_name_length CHECK (length(name) BETWEEN 1 AND 100),
    -- The one a tenant starts with (made on first use); at most one per tenant, so two first
    -- uses at once make one.
    is_default  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pipeline_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT pipeline_name_key UNIQUE (tenant_id, name)
);
CREATE UNIQUE INDEX pipeline_one_default_idx ON pipeline (tenant_id) WHERE is_default;

CREATE TABLE pipeline_stage (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    pipeline_id  uuid NOT NULL,
    name         text NOT NULL CONSTRAINT pipeline_stage_name_length CHECK (length(name) BETWEEN 1 AND 100),
    position     integer NOT NULL CONSTRAINT pipeline_stage_position CHECK (position >= 0),
    probability  integer NOT NULL CONSTRAINT pipeline_stage_probability CHECK (probability BETWEEN 0 AND 100),
    CONSTRAINT pipeline_stage_tenant_id_key UNIQUE (tenant_id, id),
    -- What a deal's (pipeline, stage) pair references: the stage is one of that pipeline's.
    CONSTRAINT pipeline_stage_of_pipeline_key UNIQUE (tenant_id, pipeline_id, id),
    -- Deferred: a reorder or a swap of names passes through duplicates inside its transaction.
    CONSTRAINT pipeline_stage_position_key UNIQUE (pipeline_id, position) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT pipeline_stage_name_key UNIQUE (pipeline_id, name) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT pipeline_stage_pipeline_fkey FOREIGN KEY (tenant_id, pipeline_id)
        REFERENCES pipeline (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE deal (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    name               text NOT NULL CONSTRAINT deal_name_length CHECK (length(name) BETWEEN 1 AND 300),
    -- Integer minor units (cents), never a float; the currency an ISO 4217 code.
    value_minor        bigint NOT NULL CONSTRAINT deal_value CHECK (value_minor BETWEEN 0 AND 1000000000000000),
    currency           text NOT NULL CONSTRAINT deal_currency CHECK (currency ~ '^[A-Z]{3}$'),
    expected_close_on  date,
    owner_id           uuid,
    account_id         uuid,
    pipeline_id        uuid NOT NULL,
    stage_id           uuid NOT NULL,
    -- When the deal entered its present stage.
    stage_entered_at   timestamptz NOT NULL DEFAULT now(),
    status             text NOT NULL DEFAULT 'open' CONSTRAINT deal_status CHECK (status IN ('open', 'won', 'lost')),
    lost_reason        text CONSTRAINT deal_lost_reason_length CHECK (length(lost_reason) BETWEEN 1 AND 1000),
    closed_at          timestamptz,
    closed_by          uuid,
    -- Shown to the partner organisation its account is shared with (SEC-2); off by default.
    shared             boolean NOT NULL DEFAULT false,
    created_by         uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deal_closed CHECK ((status = 'open') = (closed_at IS NULL)),
    CONSTRAINT deal_lost_reason CHECK ((status = 'lost') = (lost_reason IS NOT NULL)),
    CONSTRAINT deal_tenant_id_key UNIQUE (tenant_id, id),
    -- No cascade: a stage that holds deals cannot be removed.
    CONSTRAINT deal_stage_fkey FOREIGN KEY (tenant_id, pipeline_id, stage_id)
        REFERENCES pipeline_stage (tenant_id, pipeline_id, id),
    CONSTRAINT deal_owner_fkey FOREIGN KEY (tenant_id, owner_id)
        REFERENCES member (tenant_id, id) ON DELETE SET NULL (owner_id),
    CONSTRAINT deal_account_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES account (tenant_id, id) ON DELETE SET NULL (account_id),
    CONSTRAINT deal_closer_fkey FOREIGN KEY (tenant_id, closed_by)
        REFERENCES member (tenant_id, id) ON DELETE SET NULL (closed_by),
    CONSTRAINT deal_creator_fkey FOREIGN KEY (tenant_id, created_by)
        REFERENCES member (tenant_id, id) ON DELETE SET NULL (created_by)
);
CREATE INDEX deal_list_idx ON deal (tenant_id, id DESC);
CREATE INDEX deal_board_idx ON deal (tenant_id, pipeline_id, stage_id) WHERE status = 'open';
CREATE INDEX deal_owner_idx ON deal (tenant_id, owner_id, id DESC);
CREATE INDEX deal_account_idx ON deal (tenant_id, account_id, created_at);

-- The people a deal is with.
CREATE TABLE deal_contact (
    tenant_id   uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    deal_id     uuid NOT NULL,
    contact_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, deal_id, contact_id),
    CONSTRAINT deal_contact_deal_fkey FOREIGN KEY (tenant_id, deal_id)
        REFERENCES deal (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT deal_contact_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contact (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX deal_contact_by_contact_idx ON deal_contact (tenant_id, contact_id);

-- Each entry of a deal into a stage: its creation (from NULL) and every move. The stage names
-- are copied so the history still reads after a stage is renamed or removed.
CREATE TABLE deal_stage_change (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    deal_id          uuid NOT NULL,
    from_stage_id    uuid,
    from_stage_name  text,
    to_stage_id      uuid,
    to_stage_name    text NOT NULL,
    changed_at       timestamptz NOT NULL DEFAULT now(),
    changed_by       uuid,
    CONSTRAINT deal_stage_change_deal_fkey FOREIGN KEY (tenant_id, deal_id)
        REFERENCES deal (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT deal_stage_change_from_fkey FOREIGN KEY (tenant_id, from_stage_id)
        REFERENCES pipeline_stage (tenant_id, id) ON DELETE SET NULL (from_stage_id),
    CONSTRAINT deal_stage_change_to_fkey FOREIGN KEY (tenant_id, to_stage_id)
        REFERENCES pipeline_stage (tenant_id, id) ON DELETE SET NULL (to_stage_id),
    CONSTRAINT deal_stage_change_by_fkey FOREIGN KEY (tenant_id, changed_by)
        REFERENCES member (tenant_id, id) ON DELETE SET NULL (changed_by)
);
CREATE INDEX deal_stage_change_deal_idx ON deal_stage_change (tenant_id, deal_id, changed_at);
CREATE INDEX deal_stage_change_to_idx ON deal_stage_change (tenant_id, to_stage_id);

-- Tasks may be about a deal.
ALTER TABLE task
    ADD COLUMN deal_id uuid,
    ADD CONSTRAINT task_deal_fkey FOREIGN KEY (tenant_id, deal_id)
        REFERENCES deal (tenant_id, id) ON DELETE SET NULL (deal_id);
CREATE INDEX task_deal_idx ON task (tenant_id, deal_id) WHERE deal_id IS NOT NULL;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['pipeline', 'pipeline_stage', 'deal', 'deal_contact', 'deal_stage_change']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_tenant_id())'
                       ' WITH CHECK (tenant_id = current_tenant_id())', t);
    END LOOP;
END
$$;

-- A partner (SEC-2) sees the deals marked shared of the accounts shared with its organisation,
-- and their contacts and history; the pipelines and stages it may read, to name the columns.
CREATE POLICY partner_shared ON deal AS RESTRICTIVE USING (
    current_partner_org_id() IS NULL
    OR (shared AND EXISTS (SELECT 1 FROM account a
                           WHERE a.tenant_id = deal.tenant_id AND a.id = deal.account_id
                             AND a.partner_org_id = current_partner_org_id())));
CREATE POLICY partner_shared ON deal_contact AS RESTRICTIVE USING (
    current_partner_org_id() IS NULL
    OR EXISTS (SELECT 1 FROM deal d WHERE d.tenant_id = deal_contact.tenant_id AND d.id = deal_contact.deal_id));
CREATE POLICY partner_shared ON deal_stage_change AS RESTRICTIVE USING (
    current_partner_org_id() IS NULL
    OR EXISTS (SELECT 1 FROM deal d WHERE d.tenant_id = deal_stage_change.tenant_id AND d.id = deal_stage_change.deal_id));

GRANT SELECT, INSERT, UPDATE, DELETE ON pipeline, pipeline_stage, deal, deal_contact, deal_stage_change TO custodian_app;

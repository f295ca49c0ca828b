-- Customer-success work objects, part 1 (#17): tickets grow from the agent's follow-up notes
-- into the team's queue, with comments, linked conversations and SLA targets; tasks are the
-- team's to-dos. Owned by the cs domain. Both carry account_id and created_at, indexed
-- together, so an account's timeline reads them by account in time order.

-- Statuses of the new vocabulary. Until now only the agent wrote tickets and nobody could read
-- them, so every open one is untriaged: it is `new`.
ALTER TABLE ticket DROP CONSTRAINT ticket_status;
UPDATE ticket SET status = 'new' WHERE status = 'open';
ALTER TABLE ticket ADD CONSTRAINT ticket_status
    CHECK (status IN ('new', 'open', 'pending', 'on_hold', 'solved', 'closed'));
ALTER TABLE ticket ALTER COLUMN status SET DEFAULT 'new';

ALTER TABLE ticket
    ADD COLUMN kind              text NOT NULL DEFAULT 'question'
                                 CONSTRAINT ticket_kind CHECK (kind IN ('question', 'incident', 'problem', 'task')),
    ADD COLUMN assignee_id       uuid,
    ADD COLUMN account_id        uuid,
    ADD COLUMN tags              text[] NOT NULL DEFAULT '{}'
                                 CONSTRAINT ticket_tags CHECK (cardinality(tags) <= 20),
    ADD COLUMN due_at            timestamptz,
    -- Who opened it: a member on their own, a member from a conversation, or the AI agent.
    ADD COLUMN origin            text NOT NULL DEFAULT 'member'
                                 CONSTRAINT ticket_origin CHECK (origin IN ('member', 'conversation', 'agent')),
    ADD COLUMN author_id         uuid,
    -- Shown to the partner organisation its account is shared with (SEC-2); off by default.
    ADD COLUMN shared            boolean NOT NULL DEFAULT false,
    -- The SLA clocks stop here: the first public answer, and solved (cleared on reopening).
    ADD COLUMN first_response_at timestamptz,
    ADD COLUMN solved_at         timestamptz,
    ADD CONSTRAINT ticket_assignee_fkey FOREIGN KEY (tenant_id, assignee_id)
        REFERENCES member (tenant_id, id) ON DELETE SET NULL (assignee_id),
    ADD CONSTRAINT ticket_account_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES account (tenant_id, id) ON DELETE SET NULL (account_id),
    ADD CONSTRAINT ticket_author_fkey FOREIGN KEY (tenant_id, author_id)
        REFERENCES member (tenant_id, id) ON DELETE SET NULL (author_id);

UPDATE ticket SET origin = 'agent' WHERE created_by LIKE 'agent:%';
UPDATE ticket t SET account_id = c.account_id
    FROM contact c WHERE c.tenant_id = t.tenant_id AND c.id = t.contact_id;
UPDATE ticket SET solved_at = updated_at WHERE status IN ('solved', 'closed');

CREATE INDEX ticket_list_idx ON ticket (tenant_id, id DESC);
CREATE INDEX ticket_status_idx ON ticket (tenant_id, status, id DESC);
CREATE INDEX ticket_assignee_idx ON ticket (tenant_id, assignee_id, id DESC);
CREATE INDEX ticket_account_idx ON ticket (tenant_id, account_id, created_at);
CREATE INDEX ticket_contact_idx ON ticket (tenant_id, contact_id);

-- The conversations a ticket is about; the one it was opened from among them.
CREATE TABLE ticket_conversation (
    tenant_id        uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    ticket_id        uuid NOT NULL,
    conversation_id  uuid NOT NULL,
    linked_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, ticket_id, conversation_id),
    CONSTRAINT ticket_conversation_ticket_fkey FOREIGN KEY (tenant_id, ticket_id)
        REFERENCES ticket (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT ticket_conversation_conversation_fkey FOREIGN KEY (tenant_id, conversation_id)
        REFERENCES conversation (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX ticket_conversation_by_conversation_idx ON ticket_conversation (tenant_id, conversation_id);
INSERT INTO ticket_conversation (tenant_id, ticket_id, conversation_id, linked_at)
    SELECT tenant_id, id, conversation_id, created_at FROM ticket WHERE conversation_id IS NOT NULL;

-- A comment: internal (members only) or public, in which case it went to the customer as a
-- message of `conversation_id` and `message_id` is that message.
CREATE TABLE ticket_comment (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    ticket_id        uuid NOT NULL,
    author_id        uuid,
    body             text NOT NULL CONSTRAINT ticket_comment_body CHECK (length(body) BETWEEN 1 AND 4096),
    public           boolean NOT NULL,
    conversation_id  uuid,
    message_id       uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ticket_comment_public_sent CHECK (public = (message_id IS NOT NULL)),
    CONSTRAINT ticket_comment_ticket_fkey FOREIGN KEY (tenant_id, ticket_id)
        REFERENCES ticket (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT ticket_comment_author_fkey FOREIGN KEY (tenant_id, author_id)
        REFERENCES member (tenant_id, id) ON DELETE SET NULL (author_id),
    CONSTRAINT ticket_comment_conversation_fkey FOREIGN KEY (tenant_id, conversation_id)
        REFERENCES conversation (tenant_id, id) ON DELETE SET NULL (conversation_id)
);
CREATE INDEX ticket_comment_ticket_idx ON ticket_comment (tenant_id, ticket_id, id);

-- SLA targets per priority; a missing row means the built-in default for that priority.
CREATE TABLE ticket_sla (
    tenant_id               uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    priority                text NOT NULL CONSTRAINT ticket_sla_priority CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    first_response_minutes  integer NOT NULL CONSTRAINT ticket_sla_first_response CHECK (first_response_minutes BETWEEN 1 AND 525600),
    resolution_minutes      integer NOT NULL CONSTRAINT ticket_sla_resolution CHECK (resolution_minutes BETWEEN 1 AND 525600),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, priority)
);

CREATE TABLE task (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    title         text NOT NULL CONSTRAINT task_title CHECK (length(title) BETWEEN 1 AND 300),
    notes         text NOT NULL DEFAULT '' CONSTRAINT task_notes CHECK (length(notes) <= 10000),
    due_at        timestamptz,
    assignee_id   uuid,
    account_id    uuid,
    contact_id    uuid,
    ticket_id     uuid,
    shared        boolean NOT NULL DEFAULT false,
    completed_at  timestamptz,
    completed_by  uuid,
    created_by    uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT task_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT task_assignee_fkey FOREIGN KEY (tenant_id, assignee_id)
        REFERENCES member (tenant_id, id) ON DELETE SET NULL (assignee_id),
    CONSTRAINT task_account_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES account (tenant_id, id) ON DELETE SET NULL (account_id),
    CONSTRAINT task_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contact (tenant_id, id) ON DELETE SET NULL (contact_id),
    CONSTRAINT task_ticket_fkey FOREIGN KEY (tenant_id, ticket_id)
        REFERENCES ticket (tenant_id, id) ON DELETE SET NULL (ticket_id),
    CONSTRAINT task_completer_fkey FOREIGN KEY (tenant_id, completed_by)
        REFERENCES member (tenant_id, id) ON DELETE SET NULL (completed_by),
    CONSTRAINT task_creator_fkey FOREIGN KEY (tenant_id, created_by)
        REFERENCES member (tenant_id, id) ON DELETE SET NULL (created_by)
);
CREATE INDEX task_list_idx ON task (tenant_id, id DESC);
CREATE INDEX task_open_due_idx ON task (tenant_id, due_at) WHERE completed_at IS NULL;
CREATE INDEX task_assignee_idx ON task (tenant_id, assignee_id, id DESC);
CREATE INDEX task_account_idx ON task (tenant_id, account_id, created_at);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ticket_conversation', 'ticket_comment', 'ticket_sla', 'task']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_tenant_id())'
                       ' WITH CHECK (tenant_id = current_tenant_id())', t);
    END LOOP;
END
$$;

-- A partner's transaction names its organisation (`app.partner_org_id`): then only the
-- tickets and tasks marked shared, of accounts shared with that organisation, exist (SEC-2).
-- Restrictive, so it narrows the tenant policy and never widens it.
CREATE FUNCTION current_partner_org_id() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('app.partner_org_id', true), '')::uuid $$;

CREATE POLICY partner_shared ON ticket AS RESTRICTIVE USING (
    current_partner_org_id() IS NULL
    OR (shared AND EXISTS (SELECT 1 FROM account a
                           WHERE a.tenant_id = ticket.tenant_id AND a.id = ticket.account_id
                             AND a.partner_org_id = current_partner_org_id())));
CREATE POLICY partner_shared ON task AS RESTRICTIVE USING (
    current_partner_org_id() IS NULL
    OR (shared AND EXISTS (SELECT 1 FROM account a
                           WHERE a.tenant_id = task.tenant_id AND a.id = task.account_id
                             AND a.partner_org_id = current_partner_org_id())));
-- A partner reads the public side of a shared ticket only.
CREATE POLICY partner_shared ON ticket_comment AS RESTRICTIVE USING (
    current_partner_org_id() IS NULL
    OR (public AND EXISTS (SELECT 1 FROM ticket t
                           WHERE t.tenant_id = ticket_comment.tenant_id AND t.id = ticket_comment.ticket_id)));
CREATE POLICY partner_shared ON ticket_conversation AS RESTRICTIVE USING (current_partner_org_id() IS NULL);

GRANT SELECT, INSERT, UPDATE, DELETE ON ticket_conversation, ticket_comment, ticket_sla, task TO custodian_app;
GRANT EXECUTE ON FUNCTION current_partner_org_id() TO custodian_app;

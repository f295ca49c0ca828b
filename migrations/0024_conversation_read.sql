-- How far each member has read each conversation: the inbox marks a conversation unread for a
-- member while the customer has written since that member last opened it. Owned by the
-- conversations domain; goes with its conversation and its member.
CREATE TABLE conversation_read (
    tenant_id       uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL,
    member_id       uuid NOT NULL,
    read_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversation_read_pkey PRIMARY KEY (conversation_id, member_id),
    CONSTRAINT conversation_read_conversation_fkey FOREIGN KEY (tenant_id, conversation_id)
        REFERENCES conversation (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT conversation_read_member_fkey FOREIGN KEY (tenant_id, member_id)
        REFERENCES member (tenant_id, id) ON DELETE CASCADE
);

ALTER TABLE conversation_read ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversation_read FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON conversation_read USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT, INSERT, UPDATE ON conversation_read TO custodian_app;

-- The inbox page shows, on every view, how many conversations are in each status, how many are
-- open per inbox, and which labels are in use. Counting those from the conversations scanned
-- all of a tenant's conversations three times per page view (about 15 ms of a 20 ms budget at
-- 10,000 conversations). Triggers keep the counts instead, in the same transaction as every
-- change to a conversation, so no code path can forget them and they are never stale.
--
-- Each count is spread over eight slots (by conversation id) so that webhooks opening new
-- conversations of one inbox at once do not all wait on one row's lock; readers sum the slots.
-- Owned by the conversations domain.
CREATE TABLE conversation_tally (
    tenant_id   uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    inbox_id    uuid NOT NULL,
    status      text NOT NULL,
    handler     text NOT NULL,
    assignee_id uuid,
    slot        smallint NOT NULL,
    n           bigint NOT NULL
);
CREATE UNIQUE INDEX conversation_tally_key
    ON conversation_tally (tenant_id, inbox_id, status, handler, assignee_id, slot) NULLS NOT DISTINCT;

CREATE TABLE conversation_label_tally (
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    label     text NOT NULL,
    slot      smallint NOT NULL,
    n         bigint NOT NULL,
    CONSTRAINT conversation_label_tally_pkey PRIMARY KEY (tenant_id, label, slot)
);

-- Runs as the owner: the app role reads the tallies but never writes them, so only the triggers
-- can. A decrement only updates (the row exists: its conversation was counted); when a tenant
-- is deleted its tallies are already gone, and nothing is inserted for it again.
CREATE FUNCTION conversation_tally_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE conversation_tally SET n = n - 1
        WHERE tenant_id = OLD.tenant_id AND inbox_id = OLD.inbox_id AND status = OLD.status
          AND handler = OLD.handler AND assignee_id IS NOT DISTINCT FROM OLD.assignee_id
          AND slot = (hashtext(OLD.id::text) & 7);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO conversation_tally AS t (tenant_id, inbox_id, status, handler, assignee_id, slot, n)
        VALUES (NEW.tenant_id, NEW.inbox_id, NEW.status, NEW.handler, NEW.assignee_id,
                hashtext(NEW.id::text) & 7, 1)
        ON CONFLICT (tenant_id, inbox_id, status, handler, assignee_id, slot)
        DO UPDATE SET n = t.n + 1;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION conversation_tally_change() FROM PUBLIC;

CREATE FUNCTION conversation_label_tally_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    old_labels text[] := CASE WHEN TG_OP = 'INSERT' THEN '{}' ELSE OLD.labels END;
    new_labels text[] := CASE WHEN TG_OP = 'DELETE' THEN '{}' ELSE NEW.labels END;
    row_id uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
    row_tenant uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
BEGIN
    UPDATE conversation_label_tally SET n = n - 1
    WHERE tenant_id = row_tenant AND slot = (hashtext(row_id::text) & 7)
      AND label IN (SELECT DISTINCT unnest(old_labels) EXCEPT SELECT unnest(new_labels));
    INSERT INTO conversation_label_tally AS t (tenant_id, label, slot, n)
    SELECT row_tenant, l, hashtext(row_id::text) & 7, 1
    FROM (SELECT DISTINCT unnest(new_labels) EXCEPT SELECT unnest(old_labels)) AS added (l)
    ON CONFLICT (tenant_id, label, slot) DO UPDATE SET n = t.n + 1;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION conversation_label_tally_change() FROM PUBLIC;

CREATE TRIGGER conversation_tally_insert_delete AFTER INSERT OR DELETE ON conversation
    FOR EACH ROW EXECUTE FUNCTION conversation_tally_change();
-- Only when a counted column changes: the many updates that move last_message_at stay cheap.
CREATE TRIGGER conversation_tally_update AFTER UPDATE ON conversation
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.handler IS DISTINCT FROM NEW.handler
          OR OLD.assignee_id IS DISTINCT FROM NEW.assignee_id OR OLD.inbox_id IS DISTINCT FROM NEW.inbox_id
          OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION conversation_tally_change();
CREATE TRIGGER conversation_label_tally_insert_delete AFTER INSERT OR DELETE ON conversation
    FOR EACH ROW EXECUTE FUNCTION conversation_label_tally_change();
CREATE TRIGGER conversation_label_tally_update AFTER UPDATE ON conversation
    FOR EACH ROW WHEN (OLD.labels IS DISTINCT FROM NEW.labels)
    EXECUTE FUNCTION conversation_label_tally_change();

INSERT INTO conversation_tally (tenant_id, inbox_id, status, handler, assignee_id, slot, n)
SELECT tenant_id, inbox_id, status, handler, assignee_id, hashtext(id::text) & 7, count(*)
FROM conversation GROUP BY 1, 2, 3, 4, 5, 6;
INSERT INTO conversation_label_tally (tenant_id, label, slot, n)
SELECT c.tenant_id, l.label, hashtext(c.id::text) & 7, count(*)
FROM conversation c, LATERAL (SELECT DISTINCT unnest(c.labels)) AS l (label)
GROUP BY 1, 2, 3;

-- Forced after the tallies are filled (the owner fills them, outside any tenant): from now on
-- the triggers, running as the owner, write only the tenant in whose context the conversation
-- changed, as the app role would.
ALTER TABLE conversation_tally ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversation_tally FORCE ROW LEVEL SECURITY;
ALTER TABLE conversation_label_tally ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversation_label_tally FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON conversation_tally USING (tenant_id = current_tenant_id());
CREATE POLICY tenant_isolation ON conversation_label_tally USING (tenant_id = current_tenant_id());
GRANT SELECT ON conversation_tally, conversation_label_tally TO custodian_app;

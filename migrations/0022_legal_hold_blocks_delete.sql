-- No delete reaches data under a legal hold. Until now only the retention purge asked
-- `legal_hold_covers`; a member deleting a contact, an inbox or an account took the held
-- conversations and messages with them (the cascades). The database now refuses any such delete,
-- whichever path issues it: a route, a cascade, a future erasure that forgets to ask. The error
-- names the constraint `legal_hold_blocks_delete`, which the API answers with 409 `legal_hold`.

CREATE FUNCTION refuse_delete_under_legal_hold() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    held boolean;
BEGIN
    -- One branch per table: a trigger's OLD has only its own table's columns.
    IF TG_TABLE_NAME = 'contact' THEN
        held := legal_hold_covers(OLD.tenant_id, OLD.id, NULL);
    ELSIF TG_TABLE_NAME = 'conversation' THEN
        held := legal_hold_covers(OLD.tenant_id, OLD.contact_id, OLD.id);
    ELSE
        -- An account: deleting it detaches its contacts, and a held contact keeps its account.
        held := EXISTS (
            SELECT 1 FROM contact c
            WHERE c.tenant_id = OLD.tenant_id AND c.account_id = OLD.id
              AND legal_hold_covers(c.tenant_id, c.id, NULL));
    END IF;
    IF held THEN
        RAISE EXCEPTION 'this % is under a legal hold', TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'legal_hold_blocks_delete';
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER contact_legal_hold BEFORE DELETE ON contact
    FOR EACH ROW EXECUTE FUNCTION refuse_delete_under_legal_hold();
CREATE TRIGGER conversation_legal_hold BEFORE DELETE ON conversation
    FOR EACH ROW EXECUTE FUNCTION refuse_delete_under_legal_hold();
CREATE TRIGGER account_legal_hold BEFORE DELETE ON account
    FOR EACH ROW EXECUTE FUNCTION refuse_delete_under_legal_hold();

-- Messages go in bulk (the retention purge): one check per statement, joining what went with
-- the few active holds, instead of a look-up per row.
CREATE FUNCTION refuse_message_delete_under_legal_hold() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM gone g
        JOIN legal_hold h ON h.tenant_id = g.tenant_id AND h.released_at IS NULL
        LEFT JOIN conversation c ON c.tenant_id = g.tenant_id AND c.id = g.conversation_id
        WHERE (h.entity_type = 'conversation' AND h.entity_id = g.conversation_id)
           OR (h.entity_type = 'contact' AND h.entity_id = c.contact_id))
    THEN
        RAISE EXCEPTION 'a message under a legal hold cannot be deleted'
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'legal_hold_blocks_delete';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER message_legal_hold AFTER DELETE ON message
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_message_delete_under_legal_hold();

-- An edit withdraws the approvals given to an item before it (each approver approves exactly
-- what will execute, #15): the app role deletes approvals, but only of an item that still
-- waits. The audit entry of the edit names whose approvals were withdrawn.
GRANT DELETE ON review_approval TO custodian_app;

CREATE FUNCTION review_approval_withdrawn() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- A cascade (an item, a member or a tenant going) runs below another trigger; only a
    -- direct deletion is a withdrawal.
    IF pg_trigger_depth() = 1 AND EXISTS (
        SELECT 1 FROM review_item WHERE id = OLD.review_item_id AND status <> 'pending'
    ) THEN
        RAISE EXCEPTION 'review item % is decided: its approvals stay', OLD.review_item_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'review_approval_withdrawn';
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER review_approval_withdrawn
    BEFORE DELETE ON review_approval
    FOR EACH ROW EXECUTE FUNCTION review_approval_withdrawn();

-- Review governance (issue #6): a decision is final in the database, not only in code; a
-- human-review request or a guardrail flag ends `resolved` (decided, nothing to execute); and
-- retention can blank a decided item's content while the fact and the decision stay.

ALTER TABLE review_item DROP CONSTRAINT review_item_status;
ALTER TABLE review_item ADD CONSTRAINT review_item_status CHECK (status IN
    ('pending', 'approved', 'executing', 'executed', 'failed', 'rejected', 'resolved'));

-- Set when retention blanked the item's content (the customer's words, the draft, the
-- arguments, the endpoint's answer): what was decided, by whom, when and why stays.
ALTER TABLE review_item ADD COLUMN content_purged_at timestamptz;
CREATE INDEX review_item_decided_idx ON review_item (tenant_id, decided_at)
    WHERE content_purged_at IS NULL;

-- Rejected (expired included), executed, failed and resolved items are final: their status
-- and decision never change again, whoever writes (the app role has UPDATE on the table for
-- the steps before). Only content may still go (retention), and the member columns that a
-- member's deletion clears.
CREATE FUNCTION review_item_final() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF OLD.status IN ('rejected', 'executed', 'failed', 'resolved') AND (
           NEW.status IS DISTINCT FROM OLD.status
        OR NEW.expired IS DISTINCT FROM OLD.expired
        OR NEW.decided_by IS DISTINCT FROM OLD.decided_by
        OR NEW.decision_reason IS DISTINCT FROM OLD.decision_reason
        OR NEW.decided_at IS DISTINCT FROM OLD.decided_at
        OR NEW.executed_at IS DISTINCT FROM OLD.executed_at
        OR NEW.kind IS DISTINCT FROM OLD.kind
        OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id
        OR NEW.conversation_id IS DISTINCT FROM OLD.conversation_id
        OR NEW.execution_id IS DISTINCT FROM OLD.execution_id
        OR NEW.action_id IS DISTINCT FROM OLD.action_id
        OR NEW.requested_by IS DISTINCT FROM OLD.requested_by
        OR NEW.required_role IS DISTINCT FROM OLD.required_role
        OR NEW.approvals_required IS DISTINCT FROM OLD.approvals_required
        OR NEW.policy IS DISTINCT FROM OLD.policy
        OR NEW.idempotency_key IS DISTINCT FROM OLD.idempotency_key
        OR NEW.created_at IS DISTINCT FROM OLD.created_at
        -- Content may be blanked by retention, never rewritten.
        OR (NEW.content_purged_at IS NULL AND (
               NEW.proposal IS DISTINCT FROM OLD.proposal
            OR NEW.approved_proposal IS DISTINCT FROM OLD.approved_proposal
            OR NEW.request_note IS DISTINCT FROM OLD.request_note
            OR NEW.findings IS DISTINCT FROM OLD.findings
            OR NEW.result IS DISTINCT FROM OLD.result))
        OR (OLD.content_purged_at IS NOT NULL AND NEW.content_purged_at IS DISTINCT FROM OLD.content_purged_at)
    ) THEN
        RAISE EXCEPTION 'review item % is % and final: its decision cannot change', OLD.id, OLD.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'review_item_final';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER review_item_final
    BEFORE UPDATE ON review_item
    FOR EACH ROW EXECUTE FUNCTION review_item_final();

-- A decision is history: the app role no longer deletes items (a conversation's or the
-- tenant's deletion still cascades, as the table owner).
REVOKE DELETE ON review_item FROM custodian_app;

-- The review queue (issue #6): who must approve what, four-eyes, expiry that fails closed,
-- and exactly-once execution of approved actions.

-- 'executing' sits between the approval and the action's answer, so a retried job knows the
-- endpoint may already have been called (it is called again only with the same idempotency key).
-- An expired item is rejected (fail closed) with `expired` set; 'expired' is no longer a status.
ALTER TABLE review_item
    -- The member who asked for it (four-eyes: they cannot approve it); NULL when the agent did.
    ADD COLUMN requested_by_member uuid,
    -- Why it was opened: the customer's words, a member's note.
    ADD COLUMN request_note text CONSTRAINT review_item_request_note CHECK (length(request_note) <= 4000),
    ADD COLUMN assignee_id uuid,
    -- From the tenant's approval policy when the item was opened.
    ADD COLUMN required_role text NOT NULL DEFAULT 'reviewer'
        CONSTRAINT review_item_required_role CHECK (required_role IN ('reviewer', 'admin', 'owner')),
    ADD COLUMN approvals_required integer NOT NULL DEFAULT 1
        CONSTRAINT review_item_approvals_required CHECK (approvals_required BETWEEN 1 AND 5),
    ADD COLUMN policy jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN due_at timestamptz,
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN expired boolean NOT NULL DEFAULT false,
    -- What a reviewer approved when it differs from the proposal (edit then approve).
    ADD COLUMN approved_proposal jsonb,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT review_item_requester_fkey FOREIGN KEY (tenant_id, requested_by_member)
        REFERENCES member (tenant_id, id) ON DELETE SET NULL (requested_by_member),
    ADD CONSTRAINT review_item_assignee_fkey FOREIGN KEY (tenant_id, assignee_id)
        REFERENCES member (tenant_id, id) ON DELETE SET NULL (assignee_id),
    ADD CONSTRAINT review_item_rejection_reason CHECK (status <> 'rejected' OR decision_reason IS NOT NULL);

ALTER TABLE review_item DROP CONSTRAINT review_item_status;
UPDATE review_item SET status = 'rejected', expired = true, decision_reason = coalesce(decision_reason, 'expired')
    WHERE status = 'expired';
ALTER TABLE review_item ADD CONSTRAINT review_item_status CHECK (status IN
    ('pending', 'approved', 'executing', 'executed', 'failed', 'rejected'));

CREATE INDEX review_item_expiry_idx ON review_item (expires_at) WHERE status = 'pending';

-- One row per approval; a member approves an item at most once.
CREATE TABLE review_approval (
    review_item_id  uuid NOT NULL,
    tenant_id       uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    member_id       uuid NOT NULL,
    role            text NOT NULL,
    note            text CONSTRAINT review_approval_note CHECK (length(note) <= 4000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (review_item_id, member_id),
    CONSTRAINT review_approval_item_fkey FOREIGN KEY (tenant_id, review_item_id)
        REFERENCES review_item (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT review_approval_member_fkey FOREIGN KEY (tenant_id, member_id)
        REFERENCES member (tenant_id, id) ON DELETE CASCADE
);

ALTER TABLE review_approval ENABLE ROW LEVEL SECURITY;
ALTER TABLE review_approval FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON review_approval USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT, INSERT ON review_approval TO custodian_app;

-- The tenant's approval policy (thresholds, roles, approvals, expiry, SLA, customer wording).
ALTER TABLE agent_settings ADD COLUMN review_policy jsonb NOT NULL DEFAULT '{}';

-- Filters more than one query must agree on, kept in one place.
--
-- The audit search filter: the API's listing, the export's count and the export's
-- batches all read through it. A single-SELECT SQL function is inlined by the planner, so the
-- callers' seq ranges and ordering still use the indexes; it runs as the caller (row-level
-- security applies as to any query of the app role).
CREATE FUNCTION audit_search(
    p_tenant_id uuid, p_actor_type text, p_actor_id text, p_entity_type text, p_entity_id text,
    p_action text, p_action_prefix text, p_execution_id uuid, p_from timestamptz, p_to timestamptz)
    RETURNS SETOF audit_event
    LANGUAGE sql STABLE
AS $$
    SELECT * FROM audit_event
    WHERE tenant_id = p_tenant_id
      AND (p_actor_type IS NULL OR actor_type = p_actor_type)
      AND (p_actor_id IS NULL OR actor_id = p_actor_id)
      AND (p_entity_type IS NULL OR entity_type = p_entity_type)
      AND (p_entity_id IS NULL OR entity_id = p_entity_id)
      AND (p_action IS NULL OR action = p_action)
      AND (p_action_prefix IS NULL OR starts_with(action, p_action_prefix))
      AND (p_execution_id IS NULL OR execution_id = p_execution_id)
      AND (p_from IS NULL OR occurred_at >= p_from)
      AND (p_to IS NULL OR occurred_at < p_to)
$$;

-- Whether an active legal hold covers a contact or one of its conversations. The retention
-- preview and the purge both ask it, so what the preview promises is what the purge keeps.
CREATE FUNCTION legal_hold_covers(p_tenant_id uuid, p_contact_id uuid, p_conversation_id uuid)
    RETURNS boolean
    LANGUAGE sql STABLE
AS $$
    SELECT EXISTS (
        SELECT 1 FROM legal_hold h
        WHERE h.tenant_id = p_tenant_id AND h.released_at IS NULL
          AND ((h.entity_type = 'contact' AND h.entity_id = p_contact_id)
            OR (h.entity_type = 'conversation' AND h.entity_id = p_conversation_id)))
$$;

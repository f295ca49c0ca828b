-- Agent runtime hardening (issue #5 audit): abandoned attempts, immutable execution records,
-- the embedding processor per run, optional embedding dimensions, the retrieval scale of the
-- confidence formula, and material kinds that always need approval.

-- An attempt superseded by a newer attempt for the same message (its worker crashed or lost
-- its lease). Its row stays as evidence of what it sent; it never posts anything.
ALTER TABLE agent_execution DROP CONSTRAINT agent_execution_outcome;
ALTER TABLE agent_execution ADD CONSTRAINT agent_execution_outcome CHECK (outcome IN
    ('running', 'replied', 'handed_off', 'blocked', 'pending_review', 'failed', 'abandoned'));

-- AGT-10: the embeddings API sees the (masked) customer message too, so it is a processor of
-- the contact's data like the chat model. NULL: the built-in embedder (nothing left the
-- platform), or a run recorded before this column existed.
ALTER TABLE agent_execution ADD COLUMN embedding_provider text;
ALTER TABLE agent_execution ADD COLUMN embedding_model text;

-- A finished execution is history: its record is covered by the SHA-256 digest in its
-- `agent.executed` audit entry, and no one rewrites it (the app role has UPDATE on the table
-- only to finish a running row). The retention purge deletes rows, which stays possible.
CREATE FUNCTION agent_execution_final() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF OLD.finished_at IS NOT NULL THEN
        RAISE EXCEPTION 'agent execution % is finished: its record cannot change', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'agent_execution_final';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER agent_execution_final
    BEFORE UPDATE ON agent_execution
    FOR EACH ROW EXECUTE FUNCTION agent_execution_final();

-- Embedding dimensions are sent only when a tenant sets them: vLLM and ada-002 refuse the
-- `dimensions` parameter. NULL: the model's own size. The offline responder ignores the
-- setting, so rows without a provider that carry the old default lose it.
ALTER TABLE agent_settings ALTER COLUMN embedding_dims DROP NOT NULL;
ALTER TABLE agent_settings ALTER COLUMN embedding_dims DROP DEFAULT;
UPDATE agent_settings SET embedding_dims = NULL WHERE provider_base_url IS NULL AND embedding_dims = 384;

-- How retrieval similarity maps into the confidence formula: min(1, similarity × scale).
-- NULL: the embedder's default (2 for the built-in lexical embedder, whose similarities run
-- low; 1 for a provider's embeddings).
ALTER TABLE agent_settings ADD COLUMN retrieval_scale real
    CONSTRAINT agent_settings_retrieval_scale CHECK (retrieval_scale > 0 AND retrieval_scale <= 10);

-- AGT-6: refunds, discounts, exchanges and escalations always need a reviewer, whatever the
-- tenant asked for; the stored flag says so too.
UPDATE tenant_action SET requires_approval = true WHERE kind IS NOT NULL AND NOT requires_approval;
ALTER TABLE tenant_action ADD CONSTRAINT tenant_action_material_kind_approved
    CHECK (kind IS NULL OR requires_approval);

-- Search reads only the vectors of the tenant's current embedding model.
CREATE INDEX knowledge_chunk_tenant_model_idx ON knowledge_chunk (tenant_id, dims, model);
DROP INDEX knowledge_chunk_tenant_dims_idx;

-- Erasure and anonymisation of a contact (DSR-3) with an audit chain that survives it (AUD-3).
--
-- Until now each audit row's hash covered its payload (before/after) itself, so erasing a
-- person's values from the log would have broken the chain. From here each row stores a digest
-- of its payload and the hash covers the digest: the payload can be erased (set to NULL, the row
-- marked `erased_at`) while the digest, the link and the order stay checkable. The verifier
-- reports erased payloads as erased, and still catches a payload that was changed but not
-- marked erased (its digest no longer matches).

ALTER TABLE audit_event ADD COLUMN payload_digest bytea;
ALTER TABLE audit_event ADD COLUMN erased_at timestamptz;

-- The digest of a payload. jsonb renders keys in a fixed order, so the bytes are stable.
CREATE FUNCTION audit_payload_digest(p_before jsonb, p_after jsonb) RETURNS bytea
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT sha256(convert_to(jsonb_build_object('before', p_before, 'after', p_after)::text, 'UTF8'))
$$;

-- The canonical bytes a row's hash covers: everything but the payload, which enters through
-- its digest, and but `erased_at`, which an erasure sets later.
CREATE OR REPLACE FUNCTION audit_canonical(e audit_event) RETURNS bytea
    LANGUAGE sql STABLE
AS $$
    SELECT convert_to(jsonb_build_object(
        'tenant_id', e.tenant_id,
        'seq', e.seq,
        'id', e.id,
        'occurred_at', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'actor_type', e.actor_type,
        'actor_id', e.actor_id,
        'action', e.action,
        'entity_type', e.entity_type,
        'entity_id', e.entity_id,
        'payload_digest', encode(e.payload_digest, 'hex'),
        'ip', e.ip,
        'user_agent', e.user_agent,
        'request_id', e.request_id,
        'execution_id', e.execution_id,
        'prev_hash', encode(e.prev_hash, 'hex')
    )::text, 'UTF8')
$$;

CREATE OR REPLACE FUNCTION audit_append(
    p_tenant_id uuid, p_actor_type text, p_actor_id text, p_action text,
    p_entity_type text, p_entity_id text, p_before jsonb, p_after jsonb,
    p_ip text, p_user_agent text, p_request_id text, p_execution_id uuid
) RETURNS bigint
    LANGUAGE plpgsql
AS $$
DECLARE
    e audit_event;
    head_seq bigint;
    head_hash bytea;
BEGIN
    INSERT INTO audit_chain_head (tenant_id, seq, hash)
    VALUES (p_tenant_id, 0, '\x0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT (tenant_id) DO NOTHING;

    SELECT seq, hash INTO head_seq, head_hash
    FROM audit_chain_head WHERE tenant_id = p_tenant_id FOR UPDATE;

    e.tenant_id := p_tenant_id;
    e.seq := head_seq + 1;
    e.id := gen_random_uuid();
    e.occurred_at := clock_timestamp();
    e.actor_type := p_actor_type;
    e.actor_id := p_actor_id;
    e.action := p_action;
    e.entity_type := p_entity_type;
    e.entity_id := p_entity_id;
    e.before := p_before;
    e.after := p_after;
    e.ip := p_ip;
    e.user_agent := p_user_agent;
    e.request_id := p_request_id;
    e.execution_id := p_execution_id;
    e.prev_hash := head_hash;
    e.payload_digest := audit_payload_digest(p_before, p_after);
    e.erased_at := NULL;
    e.hash := sha256(head_hash || audit_canonical(e));

    INSERT INTO audit_event VALUES (e.*);
    UPDATE audit_chain_head SET seq = e.seq, hash = e.hash WHERE tenant_id = p_tenant_id;
    RETURN e.seq;
END
$$;

-- Recomputing every existing chain under the new scheme. No installation runs in production yet
-- (issue #16), so rewriting history here hides nothing from anyone: it is the same events,
-- re-linked. A chain that retention has cut keeps its anchor: the first retained row still names
-- the anchor's hash as its prev_hash.
ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only;
DO $$
DECLARE
    r record;
    cur_tenant uuid := NULL;
    prev bytea;
    new_hash bytea;
BEGIN
    FOR r IN SELECT tenant_id, seq FROM audit_event ORDER BY tenant_id, seq LOOP
        IF cur_tenant IS DISTINCT FROM r.tenant_id THEN
            IF cur_tenant IS NOT NULL THEN
                UPDATE audit_chain_head SET hash = prev WHERE tenant_id = cur_tenant;
            END IF;
            cur_tenant := r.tenant_id;
            SELECT a.prev_hash INTO prev FROM audit_chain_anchor a WHERE a.tenant_id = r.tenant_id;
            prev := coalesce(prev, decode(repeat('00', 32), 'hex'));
        END IF;
        UPDATE audit_event e
           SET payload_digest = audit_payload_digest(e.before, e.after), prev_hash = prev
         WHERE e.tenant_id = r.tenant_id AND e.seq = r.seq;
        UPDATE audit_event e SET hash = sha256(prev || audit_canonical(e))
         WHERE e.tenant_id = r.tenant_id AND e.seq = r.seq
        RETURNING e.hash INTO new_hash;
        prev := new_hash;
    END LOOP;
    IF cur_tenant IS NOT NULL THEN
        UPDATE audit_chain_head SET hash = prev WHERE tenant_id = cur_tenant;
    END IF;
END
$$;
ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only;
ALTER TABLE audit_event ALTER COLUMN payload_digest SET NOT NULL;
-- An erased row has no payload; a row with a payload is not erased.
ALTER TABLE audit_event ADD CONSTRAINT audit_event_erased_has_no_payload
    CHECK (erased_at IS NULL OR (before IS NULL AND after IS NULL));

-- The guard lets exactly one change through besides retention's deletes: an erasure, inside
-- `audit_erase_payloads`, that removes a payload and marks the row, touching nothing else.
CREATE OR REPLACE FUNCTION audit_event_guard() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('custodian.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND current_setting('custodian.audit_erase', true) = 'on'
       AND OLD.erased_at IS NULL AND NEW.erased_at IS NOT NULL
       AND NEW.before IS NULL AND NEW.after IS NULL
       AND (to_jsonb(NEW) - 'before' - 'after' - 'erased_at')
         = (to_jsonb(OLD) - 'before' - 'after' - 'erased_at') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_event is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- The only way a payload leaves the audit log: a data subject's erasure (DSR-3). Erases the
-- payloads of the given rows of one tenant (rows already erased are left alone), and records the
-- erasure itself as an audit event naming every row it erased, so the fact stays in the chain.
CREATE FUNCTION audit_erase_payloads(p_tenant_id uuid, p_seqs bigint[], p_reason jsonb)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    erased bigint[];
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant_id::text, true);
    -- Hold the chain head so no append interleaves with the erasure.
    PERFORM 1 FROM audit_chain_head WHERE tenant_id = p_tenant_id FOR UPDATE;

    PERFORM set_config('custodian.audit_erase', 'on', true);
    WITH done AS (
        UPDATE audit_event SET before = NULL, after = NULL, erased_at = now()
        WHERE tenant_id = p_tenant_id AND seq = ANY (p_seqs) AND erased_at IS NULL
        RETURNING seq
    )
    SELECT coalesce(array_agg(seq ORDER BY seq), '{}') INTO erased FROM done;
    PERFORM set_config('custodian.audit_erase', 'off', true);

    IF cardinality(erased) > 0 THEN
        PERFORM audit_append(p_tenant_id, 'system', NULL, 'audit.payloads_erased', 'audit_event',
            NULL, NULL,
            jsonb_build_object('count', cardinality(erased), 'seqs', to_jsonb(erased),
                               'reason', p_reason),
            NULL, NULL, NULL, NULL);
    END IF;
    RETURN cardinality(erased);
END
$$;
REVOKE ALL ON FUNCTION audit_erase_payloads(uuid, bigint[], jsonb) FROM PUBLIC;

-- An anonymised contact stays (its conversations and messages count in the statistics) with
-- every personal value gone; this says when, and that it must not be processed again.
ALTER TABLE contact ADD COLUMN anonymised_at timestamptz;

-- An anonymised contact's finished agent executions keep their outcome, timings, provider and
-- model; their record (the masked prompt, the draft, the tool calls) goes. Blanking is the one
-- change a finished record allows, once.
ALTER TABLE agent_execution ADD COLUMN content_erased_at timestamptz;

CREATE OR REPLACE FUNCTION agent_execution_final() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF OLD.finished_at IS NOT NULL AND NOT (
            OLD.content_erased_at IS NULL AND NEW.content_erased_at IS NOT NULL
        AND NEW.record = '{}'::jsonb
        AND (to_jsonb(NEW) - 'record' - 'content_erased_at')
          = (to_jsonb(OLD) - 'record' - 'content_erased_at')) THEN
        RAISE EXCEPTION 'agent execution % is finished: its record cannot change', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'agent_execution_final';
    END IF;
    RETURN NEW;
END
$$;

-- The completion receipt of an erasure answers the request that asked for it.
ALTER TABLE privacy_request ADD COLUMN receipt jsonb;

-- Every customer message moves its conversation's last_message_at. While the inbox list index
-- held that time, each such update changed an indexed column: never a HOT update, so each one
-- wrote new entries into all of the conversation's indexes, and under load the dead versions
-- piled up faster than vacuum took them away (every later upsert of that conversation walked
-- them all). The list index now holds the activity time in ten-second steps: most updates
-- leave it unchanged and stay HOT. The list orders by step, then by the exact time within a
-- step, which is the same order as by the exact time.

-- Seconds since the epoch do not depend on the time zone, so this is truly immutable.
CREATE FUNCTION activity_step(at timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN floor(extract(epoch FROM at) / 10)::bigint;

ALTER TABLE conversation
    ADD COLUMN activity_step bigint NOT NULL GENERATED ALWAYS AS (activity_step(last_message_at)) STORED;

DROP INDEX conversation_list_idx;
CREATE INDEX conversation_list_idx ON conversation (tenant_id, activity_step DESC);


-- The redelivery check looks a message up by inbox and provider id. With an index on just those
-- two, a generic plan could prefer the (tenant_id, id) index for the tenant condition that
-- row-level security adds, then filter every message of the tenant on every webhook. An index
-- that leads with the tenant, probed with an explicit tenant condition, is the better choice
-- under any statistics once the table has any.
CREATE UNIQUE INDEX message_provider_tenant_key ON message (tenant_id, inbox_id, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
DROP INDEX message_provider_key;

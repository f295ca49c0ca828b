-- Three statements of every agent turn look its runs up by the message that triggered them
-- (has one finished? supersede stale attempts; did another finish first?). An index on that
-- message answers them directly. `agent_execution (tenant_id, id)` goes: no foreign key refers
-- to it and lookups by id use the primary key, and like `message (tenant_id, id)` before it
-- (0018) it is a tenant-led index a generic plan made on a nearly empty table may take for the
-- tenant condition and then scan (`pg_stat_statements`: 270 buffers per lookup after 500 runs).
ALTER TABLE agent_execution DROP CONSTRAINT agent_execution_tenant_id_key;
CREATE INDEX agent_execution_trigger_idx ON agent_execution (trigger_message_id);

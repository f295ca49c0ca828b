-- Every read of a conversation's messages orders them by id (uuid v7, time-ordered): the
-- thread, the agent's history, the web chat's replay, a review's context. The thread index
-- ordered them by created_at, so a plan could not both find a conversation's messages and
-- read them in id order from it; a generic plan (made while the table was small) instead
-- walked the tenant's (tenant_id, id) index and filtered out every other conversation's
-- messages, on every agent turn. An index in the order the reads want replaces it.
CREATE INDEX message_conversation_order_idx ON message (conversation_id, id);
DROP INDEX message_thread_idx;

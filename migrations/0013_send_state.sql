-- Crash-safe sends and timed wake-ups (issue #4).
--
-- A message on its way to WhatsApp is `sending` from the moment before the request leaves until
-- Meta's answer is recorded. A send cut short (a crash, a lost answer) is then visible as such:
-- the next attempt knows the message may already be with Meta and waits for Meta's status
-- callback (which names our message id, see delivery.rs) before it sends again, instead of
-- sending blindly twice. `send_attempted_at` is when the last attempt started: the wait runs
-- from there.
ALTER TABLE message DROP CONSTRAINT message_delivery_known;
ALTER TABLE message ADD CONSTRAINT message_delivery_known
    CHECK (delivery_status IN ('queued', 'sending', 'sent', 'delivered', 'read', 'failed'));
ALTER TABLE message ADD COLUMN send_attempted_at timestamptz;

-- Housekeeping wakes snoozed conversations whose time has come, across tenants. The inbound
-- upsert sets `snoozed_until` to NULL on every message; for the (nearly all) conversations
-- that are not snoozed that leaves it unchanged, so their updates stay HOT (see 0008).
CREATE INDEX conversation_snoozed_idx ON conversation (snoozed_until) WHERE status = 'snoozed';

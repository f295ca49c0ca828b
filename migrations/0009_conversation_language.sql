-- The language a customer writes in, so that what the platform writes itself (safe replies,
-- "a colleague will confirm", a reviewer's decision) reaches them in it. Detected from each
-- customer message that gives clear evidence; a member may set it, and then it stays as set.
-- Neither column is indexed, so setting them keeps conversation updates HOT (see 0008).
ALTER TABLE conversation
    ADD COLUMN language text CHECK (language IN ('en', 'pt', 'es', 'de')),
    ADD COLUMN language_set_by_member boolean NOT NULL DEFAULT false;

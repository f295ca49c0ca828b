-- An agent turn needs the tenant's actions (to offer them to the model as tools), which change
-- rarely. A version on the tenant, bumped by every change to its actions, lets a turn read that
-- one number with its other facts and reuse the actions it loaded before, instead of reading
-- them all on every turn. A trigger bumps it, so no way of changing an action can forget to.
ALTER TABLE tenant ADD COLUMN actions_version bigint NOT NULL DEFAULT 0;

-- Runs as the owner: the app role may change actions but not the tenant row itself.
CREATE FUNCTION bump_actions_version() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE tenant SET actions_version = actions_version + 1
    WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION bump_actions_version() FROM PUBLIC;

CREATE TRIGGER tenant_action_version AFTER INSERT OR UPDATE OR DELETE ON tenant_action
    FOR EACH ROW EXECUTE FUNCTION bump_actions_version();

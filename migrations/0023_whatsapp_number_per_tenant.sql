-- A WhatsApp number is unique within a tenant, no longer across the platform. Platform-wide,
-- the first tenant to type in a number's id held it: the real owner was refused, and the
-- refusal told them another tenant had it. Ownership is now what Meta confirms for the
-- tenant's own access token when an inbox takes the number (src/channels), and every
-- look-up by number is the tenant's own, so two tenants holding one id cannot reach each
-- other; within a tenant, one inbox per number still decides where its events go.
DROP INDEX inbox_phone_number_key;
CREATE UNIQUE INDEX inbox_tenant_phone_number_key ON inbox (tenant_id, (settings ->> 'phone_number_id'))
    WHERE channel = 'whatsapp';

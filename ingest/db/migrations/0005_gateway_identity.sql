-- A gateway id is unique within its enterprise, as the topics (shulian/v1/{e}/{g}/...), the
-- broker ACL and docs/wire.md have always said: ent-b/gw-01 is another gateway than ent-a/gw-01.
-- 0001 made gateways.id global, so the second enterprise's gw-01 was dead-lettered for ever, and
-- gateway_boots keyed boots by gateway id alone, so two gateways of one id shared a ledger.

ALTER TABLE devices DROP CONSTRAINT devices_gateway_id_fkey;
ALTER TABLE gateways DROP CONSTRAINT gateways_pkey;
ALTER TABLE gateways ADD CONSTRAINT gateways_pkey PRIMARY KEY (enterprise_id, id);
DROP INDEX gateways_enterprise;  -- the primary key leads with enterprise_id
-- MATCH SIMPLE: a device without a gateway (gateway_id NULL) is not checked.
ALTER TABLE devices ADD CONSTRAINT devices_gateway_fkey
    FOREIGN KEY (enterprise_id, gateway_id) REFERENCES gateways (enterprise_id, id);
DROP INDEX devices_gateway;
CREATE INDEX devices_gateway ON devices (enterprise_id, gateway_id);

-- The ledger's boots belong to one enterprise's gateway; existing rows take the enterprise of
-- the (then globally unique) gateway id.
ALTER TABLE gateway_boots ADD COLUMN enterprise_id text;
UPDATE gateway_boots b SET enterprise_id = g.enterprise_id FROM gateways g WHERE g.id = b.gateway_id;
UPDATE gateway_boots SET enterprise_id = '' WHERE enterprise_id IS NULL;
ALTER TABLE gateway_boots ALTER COLUMN enterprise_id SET NOT NULL;
ALTER TABLE gateway_boots DROP CONSTRAINT gateway_boots_gateway_id_boot_key;
ALTER TABLE gateway_boots ADD CONSTRAINT gateway_boots_identity_key
    UNIQUE (enterprise_id, gateway_id, boot);

-- Remote configuration (docs/remote-config.md): profiles and site files a service provider
-- uploads, each an immutable numbered version, and the assignments of versions to gateways.
-- A provider's profiles form one library shared by the sites of every enterprise it serves.
CREATE TABLE config_versions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider_id     text NOT NULL REFERENCES service_providers (id),
    name            text NOT NULL,      -- the file name a gateway writes, e.g. 'cnc_lathe.yaml'
    version         integer NOT NULL CHECK (version >= 1),
    kind            text NOT NULL CHECK (kind IN ('profile', 'site')),
    content         text NOT NULL,
    sha256          text NOT NULL,      -- of content as UTF-8; the gateway checks it
    uploaded_by     bigint,             -- the token (kept as a number if it is deleted)
    uploaded_by_role text NOT NULL,
    uploaded_by_name text NOT NULL DEFAULT '',
    uploaded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (provider_id, name, version)
);

-- A version once stored never changes: a fix is a new version, a rollback an assignment.
CREATE FUNCTION config_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'config_versions rows are immutable (version % of %)', OLD.version, OLD.name;
END $$;
CREATE TRIGGER config_versions_immutable BEFORE UPDATE OR DELETE ON config_versions
    FOR EACH ROW EXECUTE FUNCTION config_versions_immutable();

-- Each row is a revision of one gateway's configuration: the full set of file versions it runs.
-- Rows are never deleted; the newest row not refused by the enterprise is in force, and the rows
-- are the audit log of who assigned what, when (refusals are recorded on the row they refuse).
CREATE TABLE config_assignments (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- the revision number
    enterprise_id   text NOT NULL REFERENCES enterprises (id),
    gateway_id      text NOT NULL,
    provider_id     text NOT NULL REFERENCES service_providers (id),
    version_ids     bigint[] NOT NULL,  -- config_versions.id, one per file name
    assigned_by     bigint,
    assigned_by_role text NOT NULL,
    assigned_by_name text NOT NULL DEFAULT '',
    assigned_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    refused_by      bigint,             -- the enterprise refused its provider's assignment
    refused_by_name text,
    refused_at      timestamptz,
    refusal_reason  text NOT NULL DEFAULT ''
);
CREATE INDEX config_assignments_gateway ON config_assignments (enterprise_id, gateway_id, id DESC);

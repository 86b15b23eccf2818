-- Bearer tokens of the monitoring API (ingest/auth.py) and enterprises' grants of device data.
-- Only the SHA-256 of a token is stored; `hint` keeps its first 8 characters so a person can tell
-- tokens apart in `shulian ingest token list` without the secret.
CREATE TABLE api_tokens (
    id          bigserial PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    hint        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('bureau', 'enterprise', 'provider', 'admin')),
    enterprise  text REFERENCES enterprises (id) ON DELETE CASCADE,
    provider    text REFERENCES service_providers (id) ON DELETE CASCADE,
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz,
    CHECK ((role = 'enterprise') = (enterprise IS NOT NULL)),
    CHECK ((role = 'provider') = (provider IS NOT NULL))
);

-- An enterprise lets the bureau see its raw device data (device list, signals, state timelines).
-- Without a row here the bureau sees only the enterprise's KPI summaries.
CREATE TABLE data_grants (
    enterprise  text NOT NULL REFERENCES enterprises (id) ON DELETE CASCADE,
    grantee     text NOT NULL CHECK (grantee IN ('bureau')),
    granted_at  timestamptz NOT NULL DEFAULT now(),
    granted_by  bigint REFERENCES api_tokens (id) ON DELETE SET NULL,
    PRIMARY KEY (enterprise, grantee)
);

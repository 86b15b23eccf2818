-- Browser sessions of the monitoring UI (ingest/auth.py). Signing in with a token creates a row;
-- the cookie carries a random session id whose SHA-256 alone is stored here, never the token.
-- A session ends at expires_at (sign-in + api.monitoring.session_lifetime_s, and never after its
-- token expires), after session_idle_s without a request (last_seen_at), on sign-out (row
-- deleted), and when its token is revoked (rows deleted with the revocation; the lookup also
-- joins the token, so a revoked or expired token ends its sessions at once).
CREATE TABLE web_sessions (
    id            bigserial PRIMARY KEY,
    session_hash  bytea NOT NULL UNIQUE,
    token_id      bigint NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX web_sessions_token_idx ON web_sessions (token_id);
CREATE INDEX web_sessions_expires_idx ON web_sessions (expires_at);

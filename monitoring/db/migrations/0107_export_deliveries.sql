-- The push of the daily export (ingest/api/export_push.py, docs/export.md): what was sent for
-- each day, how often it was tried and what the receiver answered. One row per day (the primary
-- key): a day is delivered once, and a push resumed after a restart resends the stored body
-- with the same idempotency key rather than a new document.
CREATE TABLE export_deliveries (
    day             date PRIMARY KEY,
    schema_version  text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    endpoint        text NOT NULL,          -- the receiver of the latest attempt
    body            text NOT NULL,          -- the exact document sent (UTF-8 JSON)
    content_sha256  text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'accepted', 'failed', 'refused')),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    last_attempt_at timestamptz,
    accepted_at     timestamptz,
    ack_status      integer,                -- the receiver's HTTP status when it accepted
    ack_body        text,                   -- its answer (a receipt), first 4,000 characters
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT export_accepted_has_time CHECK ((status = 'accepted') = (accepted_at IS NOT NULL))
);

CREATE TABLE export_delivery_attempts (
    day         date NOT NULL REFERENCES export_deliveries (day),
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL,
    http_status integer,                    -- null: no answer (connection, TLS, timeout)
    error       text,                       -- null: accepted
    PRIMARY KEY (day, attempt)
);

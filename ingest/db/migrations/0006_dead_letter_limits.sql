-- Dead letters keep a bounded prefix of a payload with its full size and SHA-256 (never the whole
-- payload: the broker allows messages of several MiB), and each gateway may add only so many per
-- minute (limits.dead_letter_prefix_bytes, limits.dead_letters_per_minute; ingest/dead_letters.py).
-- Rows written before this keep their whole payload; they age out with dead_letter_retention_days.

ALTER TABLE dead_letters
    ADD COLUMN payload_bytes integer,               -- size of the whole payload received
    ADD COLUMN payload_sha256 bytea;                -- SHA-256 of the whole payload
UPDATE dead_letters SET payload_bytes = octet_length(payload), payload_sha256 = sha256(payload);
ALTER TABLE dead_letters
    ALTER COLUMN payload_bytes SET NOT NULL,
    ALTER COLUMN payload_sha256 SET NOT NULL;
COMMENT ON COLUMN dead_letters.payload IS
    'the first limits.dead_letter_prefix_bytes bytes of the payload (all of it when shorter)';

-- Per gateway (the topic's enterprise and gateway levels) and minute: dead letters stored and
-- those the limit held back. Written in the flush transaction, so the limit holds across lanes
-- and workers; pruned with dead_letters (storage.dead_letter_retention_days).
CREATE TABLE dead_letter_windows (
    enterprise_id       text NOT NULL,
    gateway_id          text NOT NULL,
    minute              timestamptz NOT NULL,
    recorded            integer NOT NULL DEFAULT 0,
    suppressed          integer NOT NULL DEFAULT 0,
    suppressed_bytes    bigint NOT NULL DEFAULT 0,  -- their payloads' total size
    PRIMARY KEY (enterprise_id, gateway_id, minute)
);
CREATE INDEX dead_letter_windows_minute ON dead_letter_windows USING brin (minute);

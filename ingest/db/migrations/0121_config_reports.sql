-- What gateways answered to a delivered configuration (wire ConfigReport), and which revision the
-- cloud last published (retained) on each gateway's config topic.
CREATE TABLE config_reports (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    enterprise_id   text NOT NULL,
    gateway_id      text NOT NULL,
    revision        bigint NOT NULL,    -- config_assignments.id the gateway answered about
    status          text NOT NULL CHECK (status IN ('applied', 'refused')),
    sha256          text NOT NULL DEFAULT '',
    messages        jsonb NOT NULL DEFAULT '[]',   -- every validation message, as the gateway saw it
    restarted       jsonb NOT NULL DEFAULT '[]',   -- devices restarted to apply it
    reported_at     timestamptz NOT NULL,          -- the gateway's time
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX config_reports_gateway ON config_reports (enterprise_id, gateway_id, id DESC);

CREATE TABLE config_deliveries (
    enterprise_id   text NOT NULL,
    gateway_id      text NOT NULL,
    revision        bigint,             -- NULL: cleared (no remote configuration in force)
    published_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (enterprise_id, gateway_id)
);

-- Telemetry on plain PostgreSQL: daily range partitions created ahead by the ingest
-- (ingest/db/partitions.py) and dropped whole for retention; rollups materialized by the ingest
-- (ingest/db/rollups.py). The views at the end have the same names and columns as the
-- TimescaleDB continuous aggregates, so the monitoring module queries both paths alike.

-- Narrow table: one row per sample. Columns ordered to avoid alignment padding (32 bytes of
-- tuple data for a numeric sample).
CREATE TABLE telemetry (
    ts          timestamptz NOT NULL,
    value       double precision,               -- numbers; bools as 1/0; NULL for text
    device_key  integer NOT NULL,               -- devices.key
    signal_id   smallint NOT NULL,              -- signals.id
    quality     smallint NOT NULL DEFAULT 0,    -- 0 good, 1 uncertain, 2 bad
    value_text  text                            -- text values (machine_state, alarm_text, ...)
) PARTITION BY RANGE (ts);
CREATE INDEX telemetry_device_signal_ts ON telemetry (device_key, signal_id, ts DESC);
CREATE INDEX telemetry_ts ON telemetry USING brin (ts);

-- Increments of counter signals (part_count, active_energy, ...), after wrap and reset handling.
CREATE TABLE counter_increments (
    ts          timestamptz NOT NULL,
    increase    double precision NOT NULL,
    device_key  integer NOT NULL,
    signal_id   smallint NOT NULL,
    event       smallint NOT NULL DEFAULT 0     -- 0 increase, 1 reset, 2 wrap, 3 rebase
) PARTITION BY RANGE (ts);
CREATE INDEX counter_increments_device_signal_ts ON counter_increments (device_key, signal_id, ts);
CREATE INDEX counter_increments_ts ON counter_increments USING brin (ts);

CREATE TABLE rollup_1m (
    bucket      timestamptz NOT NULL,
    device_key  integer NOT NULL,
    signal_id   smallint NOT NULL,
    samples     integer NOT NULL,
    min_value   double precision,
    max_value   double precision,
    sum_value   double precision,
    last_value  double precision,
    last_ts     timestamptz NOT NULL,
    PRIMARY KEY (device_key, signal_id, bucket)
) PARTITION BY RANGE (bucket);
CREATE INDEX rollup_1m_bucket ON rollup_1m USING brin (bucket);

CREATE TABLE rollup_1h (LIKE rollup_1m INCLUDING ALL) PARTITION BY RANGE (bucket);

CREATE TABLE counter_rollup_1m (
    bucket      timestamptz NOT NULL,
    device_key  integer NOT NULL,
    signal_id   smallint NOT NULL,
    increase    double precision NOT NULL,
    resets      integer NOT NULL,
    wraps       integer NOT NULL,
    rebases     integer NOT NULL,
    PRIMARY KEY (device_key, signal_id, bucket)
) PARTITION BY RANGE (bucket);
CREATE INDEX counter_rollup_1m_bucket ON counter_rollup_1m USING brin (bucket);

CREATE TABLE counter_rollup_1h (LIKE counter_rollup_1m INCLUDING ALL) PARTITION BY RANGE (bucket);

-- Buckets before materialized_to are in the rollup tables; later ones are aggregated from raw
-- rows by the views (real-time aggregation). pending_to is where the next refresh will move
-- materialized_to: flushes holding samples older than it record an invalidation.
CREATE TABLE rollup_state (
    id                  boolean PRIMARY KEY DEFAULT true CHECK (id),
    materialized_to     timestamptz NOT NULL,
    pending_to          timestamptz NOT NULL
);
INSERT INTO rollup_state (materialized_to, pending_to)
VALUES (date_trunc('minute', now(), 'UTC'), date_trunc('minute', now(), 'UTC'));

CREATE TABLE rollup_invalidations (
    lo          timestamptz NOT NULL,
    hi          timestamptz NOT NULL,           -- inclusive: the newest sample's ts
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW telemetry_1m AS
SELECT r.bucket, r.device_key, r.signal_id, r.samples, r.min_value, r.max_value,
       r.sum_value / r.samples AS avg_value, r.sum_value, r.last_value, r.last_ts
FROM rollup_1m r
WHERE r.bucket < (SELECT materialized_to FROM rollup_state)
UNION ALL
SELECT date_trunc('minute', t.ts, 'UTC'), t.device_key, t.signal_id, count(*)::integer,
       min(t.value), max(t.value), avg(t.value), sum(t.value),
       (array_agg(t.value ORDER BY t.ts DESC))[1], max(t.ts)
FROM telemetry t
WHERE t.ts >= (SELECT materialized_to FROM rollup_state) AND t.quality < 2 AND t.value IS NOT NULL
GROUP BY 1, 2, 3;

CREATE VIEW telemetry_1h AS
SELECT r.bucket, r.device_key, r.signal_id, r.samples, r.min_value, r.max_value,
       r.sum_value / r.samples AS avg_value, r.sum_value, r.last_value, r.last_ts
FROM rollup_1h r
WHERE r.bucket < (SELECT date_trunc('hour', materialized_to, 'UTC') FROM rollup_state)
UNION ALL
SELECT date_trunc('hour', m.bucket, 'UTC'), m.device_key, m.signal_id, sum(m.samples)::integer,
       min(m.min_value), max(m.max_value), sum(m.sum_value) / sum(m.samples), sum(m.sum_value),
       (array_agg(m.last_value ORDER BY m.last_ts DESC))[1], max(m.last_ts)
FROM telemetry_1m m
WHERE m.bucket >= (SELECT date_trunc('hour', materialized_to, 'UTC') FROM rollup_state)
GROUP BY 1, 2, 3;

CREATE VIEW counter_1m AS
SELECT r.bucket, r.device_key, r.signal_id, r.increase, r.resets, r.wraps, r.rebases
FROM counter_rollup_1m r
WHERE r.bucket < (SELECT materialized_to FROM rollup_state)
UNION ALL
SELECT date_trunc('minute', c.ts, 'UTC'), c.device_key, c.signal_id, sum(c.increase),
       count(*) FILTER (WHERE c.event = 1)::integer, count(*) FILTER (WHERE c.event = 2)::integer,
       count(*) FILTER (WHERE c.event = 3)::integer
FROM counter_increments c
WHERE c.ts >= (SELECT materialized_to FROM rollup_state)
GROUP BY 1, 2, 3;

CREATE VIEW counter_1h AS
SELECT r.bucket, r.device_key, r.signal_id, r.increase, r.resets, r.wraps, r.rebases
FROM counter_rollup_1h r
WHERE r.bucket < (SELECT date_trunc('hour', materialized_to, 'UTC') FROM rollup_state)
UNION ALL
SELECT date_trunc('hour', m.bucket, 'UTC'), m.device_key, m.signal_id, sum(m.increase),
       sum(m.resets)::integer, sum(m.wraps)::integer, sum(m.rebases)::integer
FROM counter_1m m
WHERE m.bucket >= (SELECT date_trunc('hour', materialized_to, 'UTC') FROM rollup_state)
GROUP BY 1, 2, 3;

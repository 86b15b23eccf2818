-- Telemetry on TimescaleDB: hypertables (chunk interval from storage.chunk_interval_h, default
-- 1 day: one day of a pilot city's data is a few GB, so a chunk and its indexes stay in memory
-- while it is written), compression segmented by device and signal, and continuous aggregates
-- with real-time aggregation. Policies (compression after, retention, refresh windows) depend on
-- settings and are (re)applied at every start by ingest/db/timescale.py.

CREATE TABLE telemetry (
    ts          timestamptz NOT NULL,
    value       double precision,               -- numbers; bools as 1/0; NULL for text
    device_key  integer NOT NULL,               -- devices.key
    signal_id   smallint NOT NULL,              -- signals.id
    quality     smallint NOT NULL DEFAULT 0,    -- 0 good, 1 uncertain, 2 bad
    value_text  text                            -- text values (machine_state, alarm_text, ...)
);
SELECT create_hypertable('telemetry', 'ts', chunk_time_interval => INTERVAL '1 day',
                         create_default_indexes => false);
CREATE INDEX telemetry_device_signal_ts ON telemetry (device_key, signal_id, ts DESC);
CREATE INDEX telemetry_ts ON telemetry (ts DESC);
ALTER TABLE telemetry SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_key, signal_id',
    timescaledb.compress_orderby = 'ts DESC'
);

CREATE TABLE counter_increments (
    ts          timestamptz NOT NULL,
    increase    double precision NOT NULL,
    device_key  integer NOT NULL,
    signal_id   smallint NOT NULL,
    event       smallint NOT NULL DEFAULT 0     -- 0 increase, 1 reset, 2 wrap, 3 rebase
);
SELECT create_hypertable('counter_increments', 'ts', chunk_time_interval => INTERVAL '7 days',
                         create_default_indexes => false);
CREATE INDEX counter_increments_device_signal_ts ON counter_increments (device_key, signal_id, ts);
CREATE INDEX counter_increments_ts ON counter_increments (ts DESC);
ALTER TABLE counter_increments SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_key, signal_id',
    timescaledb.compress_orderby = 'ts DESC'
);

-- materialized_only = false: since TimescaleDB 2.13 new continuous aggregates default to
-- materialized-only, which would hide the newest minutes from the live dashboard.
CREATE MATERIALIZED VIEW telemetry_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket, device_key, signal_id,
       count(*)::integer AS samples, min(value) AS min_value, max(value) AS max_value,
       avg(value) AS avg_value, sum(value) AS sum_value, last(value, ts) AS last_value,
       max(ts) AS last_ts
FROM telemetry
WHERE quality < 2 AND value IS NOT NULL
GROUP BY bucket, device_key, signal_id
WITH NO DATA;

CREATE MATERIALIZED VIEW telemetry_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, device_key, signal_id,
       count(*)::integer AS samples, min(value) AS min_value, max(value) AS max_value,
       avg(value) AS avg_value, sum(value) AS sum_value, last(value, ts) AS last_value,
       max(ts) AS last_ts
FROM telemetry
WHERE quality < 2 AND value IS NOT NULL
GROUP BY bucket, device_key, signal_id
WITH NO DATA;

CREATE MATERIALIZED VIEW counter_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket, device_key, signal_id,
       sum(increase) AS increase,
       sum(CASE WHEN event = 1 THEN 1 ELSE 0 END)::integer AS resets,
       sum(CASE WHEN event = 2 THEN 1 ELSE 0 END)::integer AS wraps,
       sum(CASE WHEN event = 3 THEN 1 ELSE 0 END)::integer AS rebases
FROM counter_increments
GROUP BY bucket, device_key, signal_id
WITH NO DATA;

CREATE MATERIALIZED VIEW counter_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, device_key, signal_id,
       sum(increase) AS increase,
       sum(CASE WHEN event = 1 THEN 1 ELSE 0 END)::integer AS resets,
       sum(CASE WHEN event = 2 THEN 1 ELSE 0 END)::integer AS wraps,
       sum(CASE WHEN event = 3 THEN 1 ELSE 0 END)::integer AS rebases
FROM counter_increments
GROUP BY bucket, device_key, signal_id
WITH NO DATA;

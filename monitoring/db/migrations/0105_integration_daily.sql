-- Data-integration measures per device and day, materialized by ingest/integration.py
-- (refresh_day) from raw telemetry: the completeness of each expected signal, the longest gap,
-- the sample counts and which KPI signal families (state, counters, energy) the device reported.
-- docs/kpis.md ("Data integration") defines every column.
CREATE TABLE integration_daily_state (
    day             date PRIMARY KEY,
    through         timestamptz NOT NULL,       -- rows of this day cover [day start, through)
    refreshed_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE integration_device_daily (
    day                 date NOT NULL,
    device_key          integer NOT NULL,
    enterprise_id       text NOT NULL,
    window_start        timestamptz NOT NULL,   -- day start, or the device's first sample ever
    window_s            double precision NOT NULL,
    expected_signals    integer NOT NULL,
    declared            boolean NOT NULL,       -- expected signals from DeviceStatus.max_silence_s
    expected_s          double precision NOT NULL,  -- window_s x expected signals
    covered_s           double precision NOT NULL,  -- signal-seconds covered by received samples
    expected_samples    double precision NOT NULL,  -- heartbeats owed: sum of window / max silence
    samples             bigint NOT NULL,        -- received samples, good or uncertain, any signal
    bad_samples         bigint NOT NULL,
    longest_gap_s       double precision,
    longest_gap_signal  text,
    longest_gap_start   timestamptz,
    longest_gap_end     timestamptz,
    has_state           boolean NOT NULL,
    has_counter         boolean NOT NULL,
    has_energy          boolean NOT NULL,
    PRIMARY KEY (day, device_key)
);
CREATE INDEX integration_device_daily_enterprise ON integration_device_daily (enterprise_id, day);

-- Data-integration measures (docs/kpis.md, "Data integration"), the ingest's part: how long each
-- signal of a device may stay silent (as its gateway declares it), and how late each device's
-- data reached storage. Both are written by the ingest; ingest/integration.py reads them.

-- DeviceStatus.max_silence_s (wire 1.2): {"machine_state": 61.0, ...}; NULL from older gateways.
ALTER TABLE devices ADD COLUMN max_silence_s jsonb;

-- Delay from sample to storage, per device and day (of the delivery's oldest sample, in the
-- city's time zone). A delivery is one device's samples in one committed batch; its delay is the
-- commit time minus its batch's oldest sample time, an upper bound for each sample in it.
-- `histogram` counts live deliveries per bucket of ingest/delays.py DELAY_EDGES_S (the last
-- bucket: beyond the last edge); backlog replays (Batch.historical) are counted apart.
CREATE TABLE ingest_delay_daily (
    day                     date NOT NULL,
    device_key              integer NOT NULL,
    deliveries              bigint NOT NULL,
    histogram               bigint[] NOT NULL,
    sum_delay_s             double precision NOT NULL,
    max_delay_s             double precision NOT NULL,
    historical_deliveries   bigint NOT NULL,
    historical_max_delay_s  double precision NOT NULL,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, device_key)
);

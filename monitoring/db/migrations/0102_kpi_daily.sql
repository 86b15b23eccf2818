-- Daily KPI figures per device and per enterprise, materialized by ingest/kpis.py (refresh_daily)
-- from the rollup views and state intervals. Today's row covers [day start, through); the API adds
-- the few minutes after `through` live, so it stays exact while the bulk of the day is cheap.
CREATE TABLE kpi_daily_state (
    day             date PRIMARY KEY,
    through         timestamptz NOT NULL,       -- rows of this day cover [day start, through)
    refreshed_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE kpi_device_daily (
    day             date NOT NULL,
    device_key      integer NOT NULL,
    enterprise_id   text NOT NULL,
    reported        boolean NOT NULL,           -- any data of this device in the covered time
    running_s       double precision NOT NULL,
    planned_s       double precision NOT NULL,  -- running + idle + setup + fault
    parts           double precision,           -- NULL: the device has no part_count data
    good            double precision,
    reject          double precision,
    energy_kwh      double precision,
    PRIMARY KEY (day, device_key)
);

CREATE TABLE kpi_enterprise_daily (
    day             date NOT NULL,
    enterprise_id   text NOT NULL,
    devices         integer NOT NULL,
    reported        integer NOT NULL,
    running_s       double precision NOT NULL,
    calendar_s      double precision NOT NULL,  -- covered seconds x devices that reported
    parts           double precision NOT NULL,
    good            double precision,
    reject          double precision,
    energy_kwh      double precision NOT NULL,
    PRIMARY KEY (day, enterprise_id)
);
CREATE INDEX kpi_enterprise_daily_enterprise ON kpi_enterprise_daily (enterprise_id, day);

-- Intervals that started before a window but end inside or after it are found by their end.
CREATE INDEX state_intervals_ended ON state_intervals (ended_at);
-- The live part of today's KPIs reads the intervals that started in the last minutes; a btree
-- finds them whatever order they were written in (the ingest's BRIN needs time-ordered writes).
CREATE INDEX state_intervals_started ON state_intervals (started_at);

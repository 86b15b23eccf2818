-- What is happening now, counted per enterprise and machine kind by monitoring/kpis.py
-- refresh_status every few seconds (refresh.status_s): registered, networked, online, running and
-- alarmed devices. The city, segment and district pages read these 2,500 rows with the day's
-- sums in kpi_kind_daily instead of reading every device's presence and state on each request;
-- a snapshot older than kpis.STATUS_FRESH_S is not used (the pages count live then).
CREATE TABLE kpi_status (
    enterprise_id   text NOT NULL,
    kind            text NOT NULL,              -- devices.machine_kind, 'other' when empty
    registered      integer NOT NULL,
    networked       integer NOT NULL,
    online          integer NOT NULL,
    running         integer NOT NULL,
    alarms_active   integer NOT NULL,
    alarms_critical integer NOT NULL,           -- alarmed and in the fault state
    PRIMARY KEY (enterprise_id, kind)
);

-- One row: when the snapshot in kpi_status was taken (the moment its counts are at).
CREATE TABLE kpi_status_state (
    one             boolean PRIMARY KEY DEFAULT true CHECK (one),
    taken_at        timestamptz NOT NULL
);

-- Fault time per day (the evidence's "alarm time": seconds a device spent in the `fault` machine
-- state), materialized beside running and planned time by ingest/kpis.py refresh_day.
ALTER TABLE kpi_device_daily ADD COLUMN fault_s double precision NOT NULL DEFAULT 0;
ALTER TABLE kpi_enterprise_daily ADD COLUMN fault_s double precision NOT NULL DEFAULT 0;
-- Stored days have no fault time yet: forgetting how far each day was refreshed makes the next
-- refresh_daily recompute the last 35 days (older days keep 0; docs/kpis.md says so).
DELETE FROM kpi_daily_state;

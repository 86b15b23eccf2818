-- A day's KPI sums per enterprise and machine kind, materialized by monitoring/kpis.py refresh_day
-- from kpi_device_daily beside it, with the per-device rules already applied (good parts from
-- parts - reject where a device has no good counter, OEE capped per device). The city, segment
-- and district pages of one day read these (2,500 rows for 10,000 devices) and add only the live
-- counts (online, running, alarms), instead of summing every device's daily row on each request.
CREATE TABLE kpi_kind_daily (
    day             date NOT NULL,
    enterprise_id   text NOT NULL,
    kind            text NOT NULL,              -- devices.machine_kind, 'other' when empty
    devices         integer NOT NULL,           -- devices with a daily row
    reported        integer NOT NULL,           -- of them, with data in the covered time
    ran             integer NOT NULL,           -- of them, with running time
    running_s       double precision NOT NULL,  -- of the devices that reported
    calendar_s      double precision NOT NULL,  -- covered seconds x devices that reported
    output          double precision NOT NULL,
    good            double precision,           -- NULL: no device of the group counts good parts
    reject          double precision,
    energy_kwh      double precision NOT NULL,
    oee_good_s      double precision NOT NULL,
    oee_planned_s   double precision NOT NULL,
    PRIMARY KEY (day, enterprise_id, kind)
);

-- Every day already stored, from its device rows (the statement refresh_day runs; a day's covered
-- seconds are its enterprises' calendar seconds per reporting device).
INSERT INTO kpi_kind_daily (day, enterprise_id, kind, devices, reported, ran, running_s,
                            calendar_s, output, good, reject, energy_kwh, oee_good_s,
                            oee_planned_s)
WITH f AS (
    SELECT k.*, coalesce(nullif(d.machine_kind, ''), 'other') AS kind, d.rated_cycle_s,
        coalesce(k.good, CASE WHEN k.parts IS NOT NULL AND k.reject IS NOT NULL
                              THEN greatest(k.parts - k.reject, 0) END) AS good_parts,
        coalesce(k.reject, CASE WHEN k.parts IS NOT NULL AND k.good IS NOT NULL
                                THEN greatest(k.parts - k.good, 0) END) AS reject_parts
    FROM kpi_device_daily k JOIN devices d ON d.key = k.device_key
),
g AS (
    SELECT day, enterprise_id, kind, count(*) AS devices,
        count(*) FILTER (WHERE reported) AS reported, count(*) FILTER (WHERE running_s > 0) AS ran,
        coalesce(sum(running_s) FILTER (WHERE reported), 0) AS running_s,
        coalesce(sum(parts), 0) AS output, sum(good_parts) AS good, sum(reject_parts) AS reject,
        coalesce(sum(energy_kwh), 0) AS energy_kwh,
        coalesce(sum(least(good_parts * rated_cycle_s, planned_s)) FILTER (WHERE
            coalesce(rated_cycle_s, 0) <> 0 AND parts IS NOT NULL AND good_parts IS NOT NULL
            AND planned_s > 0), 0) AS oee_good_s,
        coalesce(sum(planned_s) FILTER (WHERE
            coalesce(rated_cycle_s, 0) <> 0 AND parts IS NOT NULL AND good_parts IS NOT NULL
            AND planned_s > 0), 0) AS oee_planned_s
    FROM f GROUP BY day, enterprise_id, kind
)
SELECT g.day, g.enterprise_id, g.kind, g.devices, g.reported, g.ran, g.running_s,
       coalesce(g.reported * e.calendar_s / nullif(e.reported, 0), 0), g.output, g.good,
       g.reject, g.energy_kwh, g.oee_good_s, g.oee_planned_s
FROM g LEFT JOIN kpi_enterprise_daily e ON e.day = g.day AND e.enterprise_id = g.enterprise_id;

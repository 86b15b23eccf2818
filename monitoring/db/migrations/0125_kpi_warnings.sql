-- Each enterprise's last complete day against its baseline (the warning colours' inputs), taken
-- by monitoring/kpis.py refresh_warnings at the end of every daily refresh: the day's output and
-- energy, how many baseline days had data and their medians. The overview, segment and district
-- pages read one row per enterprise instead of every enterprise's 30 baseline days; a day the
-- refresh has not taken yet is computed at the request.
CREATE TABLE kpi_warning_daily (
    day             date NOT NULL,              -- the day judged (yesterday, in the city)
    enterprise_id   text NOT NULL,
    output          double precision NOT NULL,
    energy_kwh      double precision NOT NULL,
    baseline_days   integer NOT NULL,           -- days of the baseline with data
    output_base     double precision,           -- their median output, NULL without any
    energy_base     double precision,
    PRIMARY KEY (day, enterprise_id)
);

-- Baselines of the pilot's before/after evidence (ingest/evidence.py; docs/kpis.md "Baseline").
-- A baseline is either ENTERED from the enterprise's pre-transformation diagnosis (with its source
-- and date) or MEASURED over the first `measured_days` days after the enterprise's go-live.
-- Rows are never updated or deleted by the app: the newest row of an enterprise is in force and
-- the older ones are the audit trail of who entered what, when.
CREATE TABLE evidence_baselines (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    enterprise_id       text NOT NULL REFERENCES enterprises (id) ON DELETE CASCADE,
    method              text NOT NULL CHECK (method IN ('entered', 'measured')),
    measured_days       integer CHECK (measured_days BETWEEN 1 AND 365),
    source              text NOT NULL DEFAULT '',   -- the diagnosis: report title, issuer
    diagnosed_on        date,                       -- when the diagnosis was made
    -- Entered figures, in the units of docs/kpis.md; NULL: not in the diagnosis.
    utilization         double precision CHECK (utilization BETWEEN 0 AND 1),
    running_rate        double precision CHECK (running_rate BETWEEN 0 AND 1),
    output_per_day      double precision CHECK (output_per_day >= 0),
    reject_rate         double precision CHECK (reject_rate BETWEEN 0 AND 1),
    kwh_per_part        double precision CHECK (kwh_per_part >= 0),
    oee                 double precision CHECK (oee BETWEEN 0 AND 1),
    fault_h_per_day     double precision CHECK (fault_h_per_day >= 0),
    note                text NOT NULL DEFAULT '',
    -- Who entered it: the token (kept as a number if the token is deleted) and its role and name
    -- at the time.
    entered_by          bigint,
    entered_by_role     text NOT NULL,
    entered_by_name     text NOT NULL DEFAULT '',
    entered_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((method = 'measured') = (measured_days IS NOT NULL)),
    CHECK (method = 'measured' OR (source <> '' AND diagnosed_on IS NOT NULL))
);
CREATE INDEX evidence_baselines_enterprise ON evidence_baselines (enterprise_id, id DESC);

-- Time ranges of samples stored more than a day after they were taken (a gateway's backlog, a
-- backfill from history logs). The daily KPI refresh (ingest/kpis.py) recomputes the days they
-- touch, after the rollups have taken them in, and deletes the rows it handled: the regular
-- refresh covers only today and yesterday.
CREATE TABLE kpi_late_data (
    id          bigserial PRIMARY KEY,
    lo          timestamptz NOT NULL,
    hi          timestamptz NOT NULL,
    noted_at    timestamptz NOT NULL DEFAULT now()
);

"""What refreshing a day's data-integration measures costs, against the KPI refresh of that day.

Generates, with SQL generate_series in a fresh database on the server at --pg (default: local),
plain PostgreSQL path, default partitions: --enterprises x --devices registered devices, each
declaring 10 signals with a 61 s max silence (wire 1.2), and one complete day (yesterday, city
time) of report-by-exception telemetry: every signal's heartbeat once a minute, plus a state or
counter change every 20 s for two of them (about 21,600 rows per device); one device in ten is
silent for two hours. Plus state intervals for the KPI refresh.

Then runs, in turns (--runs each), ``integration.refresh_day`` for that day and, as the baseline
in the same run, ``kpis.refresh_day`` for the same day, and ``integration.enterprise_measures``
over all enterprises for the day. Prints one JSON line with medians and the ratio of the
integration refresh to the KPI refresh; --keep-db keeps the database for EXPLAIN ANALYZE.

    python bench/integration.py                              # 20 enterprises x 10 devices
    python bench/integration.py --enterprises 50 --devices 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ingest.py shadows ingest

from ingest.registry import sync_signals
from monitoring import integration, kpis
from monitoring.db.migrate import migrate_all
from monitoring.settings import KpiSettings
from shulian.devservices import create_database, drop_database

PARTITIONED = ("telemetry", "counter_increments", "rollup_1m", "rollup_1h",
               "counter_rollup_1m", "counter_rollup_1h")  # fmt: skip
SIGNALS = ("machine_state", "part_count", "good_count", "reject_count", "active_energy",
           "active_power", "spindle_speed", "spindle_load", "alarm_active", "cycle_time")  # fmt: skip

GENERATE = """
INSERT INTO enterprises (id, name, segment_code)
SELECT format('ent-%%s', e), format('企业%%s', e), CASE WHEN e %% 2 = 0 THEN '345' ELSE '367' END
FROM generate_series(1, %(ents)s) e;

INSERT INTO devices (enterprise_id, device_id, profile, max_silence_s)
SELECT format('ent-%%s', e), format('dev-%%s', d), 'raceway_grinder',
       (SELECT jsonb_object_agg(s, 61.0) FROM unnest(%(signals)s::text[]) s)
FROM generate_series(1, %(ents)s) e, generate_series(1, %(per)s) d;

INSERT INTO telemetry (ts, value, device_key, signal_id, quality, value_text)
SELECT %(day)s + make_interval(secs => m * 60), m, k.key, g.id, 0, NULL
FROM devices k, signals g, generate_series(0, 1439) m
WHERE g.name = ANY(%(signals)s::text[])
  AND NOT (k.key %% 10 = 0 AND m BETWEEN 600 AND 719);

INSERT INTO telemetry (ts, value, device_key, signal_id, quality, value_text)
SELECT %(day)s + make_interval(secs => m * 60 + t), m, k.key, g.id, 0, NULL
FROM devices k, signals g, generate_series(0, 1439) m, (VALUES (20), (40)) AS x(t)
WHERE g.name IN ('part_count', 'spindle_speed') AND NOT (k.key %% 10 = 0 AND m BETWEEN 600 AND 719);

INSERT INTO current_values (device_key, signal_id, ts, value, quality)
SELECT k.key, g.id, %(day)s + interval '1 day' - interval '1 minute', 0, 0
FROM devices k, signals g WHERE g.name = ANY(%(signals)s::text[]);

INSERT INTO state_intervals (device_key, state, started_at, ended_at)
SELECT k.key, s.state, %(day)s + s.a, %(day)s + s.b
FROM devices k, (VALUES ('running', interval '0 h', interval '8 h'),
                        ('idle', interval '8 h', interval '10 h'),
                        ('running', interval '10 h', interval '24 h')) AS s(state, a, b);
"""


def generate(url: str, settings: KpiSettings, day_start: datetime, ents: int, per: int) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        migrate_all(conn, "postgresql")
        for table in PARTITIONED:
            conn.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        sync_signals(conn)
        with conn.transaction():
            params = {"ents": ents, "per": per, "day": day_start, "signals": list(SIGNALS)}
            for statement in filter(str.strip, GENERATE.split(";\n")):
                conn.execute(statement, params)
        conn.execute("VACUUM ANALYZE")
        row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    return int(row[0]) if row else 0


async def measure(url: str, settings: KpiSettings, runs: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    day = kpis.city_today(settings, now) - timedelta(days=1)
    times: dict[str, list[float]] = {"integration_refresh": [], "kpi_refresh": [], "measures": []}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(runs):
            started = time.perf_counter()
            await integration.refresh_day(conn, settings, day, now)
            times["integration_refresh"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await kpis.refresh_day(conn, settings, day, now)
            times["kpi_refresh"].append(time.perf_counter() - started)
            started = time.perf_counter()
            measures = await integration.enterprise_measures(conn, settings, day, day)
            times["measures"].append(time.perf_counter() - started)
    completeness = [m.completeness for m in measures]
    return {
        **{f"{name}_s": round(statistics.median(v), 3) for name, v in times.items()},
        "ratio_integration_to_kpi_refresh": round(
            statistics.median(times["integration_refresh"])
            / statistics.median(times["kpi_refresh"]),
            2,
        ),
        "enterprise_completeness_min": min(c for c in completeness if c is not None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pg",
        default=os.environ.get("SHULIAN_TEST_PG_URL", "postgresql://127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--enterprises", type=int, default=20)
    parser.add_argument("--devices", type=int, default=10, help="per enterprise")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    settings = KpiSettings()
    day = kpis.city_today(settings, datetime.now(UTC)) - timedelta(days=1)
    name = f"shulian_bench_integration_{uuid.uuid4().hex[:8]}"
    url = create_database(args.pg, name)
    try:
        load = os.getloadavg()[0]
        started = time.perf_counter()
        rows = generate(
            url, settings, kpis.day_start(settings, day), args.enterprises, args.devices
        )
        generated_s = time.perf_counter() - started
        figures = asyncio.run(measure(url, settings, args.runs))
    finally:
        if not args.keep_db:
            drop_database(args.pg, name)
    print(
        json.dumps(
            {
                "bench": "integration",
                "devices": args.enterprises * args.devices,
                "telemetry_rows": rows,
                "generate_s": round(generated_s, 1),
                "load_average_before": round(load, 2),
                "load_average_after": round(os.getloadavg()[0], 2),
                **figures,
                **({"database": url} if args.keep_db else {}),
            }
        )
    )


if __name__ == "__main__":
    main()

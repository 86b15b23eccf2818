"""Benchmark the monitoring queries at city scale: 500 enterprises, 10,000 devices, 30 days.

Generates, with SQL generate_series in a fresh database on the server at --pg (default: local):

- the registry: 500 enterprises over Dalian's 10 districts and both segments, 20 devices each;
- state_intervals for 30 days: 4 intervals per device per day (running 8 h, idle 2 h, running
  8 h, off 6 h) up to now, the one under way open (as the ingest keeps it): about 1.2 million rows;
- counter rollups of part_count and active_energy: 1-hour buckets for today's finished hours and
  1-minute buckets for the current hour (what the overview reads besides the daily tables);
- kpi_device_daily / kpi_enterprise_daily for the 29 previous days (what refresh_daily would have
  materialized from 30 days of 1-minute rollups: 10,000 x 43,200 minutes x 2 signals = 864 million
  rollup rows would not fit this machine's disk and time budget, so the daily figures are generated
  directly), then today's rows by the real refresh_day;
- current_values (machine_state, alarm_active, spindle_speed) and device_states for every device.

Then, for --seconds, it runs in turns the overview (with a spare connection for its side queries,
as the app does, and once more on one connection), a segment page, an enterprise page and a
30-day city trend, and as the baseline in the same run the same day's figures computed straight
from the rollups and state intervals (refresh_day, what the overview would cost without the daily
tables). The measured queries share --seconds equally (at least 3 runs each); the baseline runs 3
times on top. Prints one JSON line, with the 1-minute load average before and after (the machine
is shared). --keep-db keeps the database for EXPLAIN ANALYZE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.registry import sync_signals
from monitoring import kpis
from monitoring.api import views
from monitoring.api.access import Reach
from monitoring.api.deps import Caller, spare_connection
from monitoring.api.scopes import Scope
from monitoring.auth import Principal, Role
from monitoring.db.migrate import migrate_all
from monitoring.settings import KpiSettings
from shulian.devservices import create_database, drop_database

MIN_RUNS = 3
BASELINE = "baseline_from_rollups"

PARTITIONED = (
    "telemetry",
    "counter_increments",
    "rollup_1m",
    "rollup_1h",
    "counter_rollup_1m",
    "counter_rollup_1h",
)

GENERATE = """
INSERT INTO enterprises (id, name, district_id, segment_code, above_designated_size, specialized)
SELECT format('ent-%%s', lpad(n::text, 3, '0')), format('大连企业%%s', n),
       (ARRAY['210202','210203','210204','210211','210212','210213','210214','210281','210283','210224'])[1 + n %% 10],
       CASE WHEN n %% 2 = 0 THEN '345' ELSE '367' END, n %% 3 = 0, n %% 7 = 0
FROM generate_series(1, %(ents)s) n;

INSERT INTO devices (enterprise_id, device_id, name, machine_kind, line, rated_cycle_s)
SELECT format('ent-%%s', lpad(e::text, 3, '0')), format('dev-%%s', d), format('设备%%s', d),
       (ARRAY['cnc_lathe','grinder','press','hobber','die_casting'])[1 + d %% 5], 'L1', 30
FROM generate_series(1, %(ents)s) e, generate_series(1, %(per)s) d;

INSERT INTO state_intervals (device_key, state, started_at, ended_at)
SELECT k.key, s.state, day + s.a, CASE WHEN day + s.b > %(now)s THEN NULL ELSE day + s.b END
FROM devices k,
     generate_series(%(today)s - interval '29 days', %(today)s, interval '1 day') AS day,
     (VALUES ('running', interval '0 h', interval '8 h'), ('idle', interval '8 h', interval '10 h'),
             ('running', interval '10 h', interval '18 h'), ('off', interval '18 h', interval '24 h')) AS s(state, a, b)
WHERE day + s.a < %(now)s;

INSERT INTO counter_rollup_1h (bucket, device_key, signal_id, increase, resets, wraps, rebases)
SELECT h, k.key, g.id, CASE WHEN g.base = 'part_count' THEN 100 ELSE 12.5 END, 0, 0, 0
FROM devices k, signals g,
     generate_series(%(today)s, date_trunc('hour', %(now)s) - interval '1 hour', interval '1 hour') h
WHERE g.name IN ('part_count', 'active_energy');

INSERT INTO counter_rollup_1m (bucket, device_key, signal_id, increase, resets, wraps, rebases)
SELECT m, k.key, g.id, CASE WHEN g.base = 'part_count' THEN 2 ELSE 0.2 END, 0, 0, 0
FROM devices k, signals g,
     generate_series(date_trunc('hour', %(now)s), date_trunc('minute', %(now)s) - interval '1 minute', interval '1 minute') m
WHERE g.name IN ('part_count', 'active_energy');

INSERT INTO kpi_device_daily (day, device_key, enterprise_id, reported, running_s, planned_s, parts, good, reject, energy_kwh)
SELECT day::date, k.key, k.enterprise_id, true, 57600, 64800, 2400 + (k.key %% 50), NULL, 10, 300
FROM devices k, generate_series(%(today)s - interval '29 days', %(today)s - interval '1 day', interval '1 day') day;

INSERT INTO kpi_enterprise_daily (day, enterprise_id, devices, reported, running_s, calendar_s, parts, good, reject, energy_kwh)
SELECT day, enterprise_id, count(*), count(*), sum(running_s), count(*) * 86400, sum(parts), NULL, sum(reject), sum(energy_kwh)
FROM kpi_device_daily GROUP BY day, enterprise_id;

INSERT INTO kpi_daily_state (day, through)
SELECT day::date, day + interval '1 day'
FROM generate_series(%(today)s - interval '29 days', %(today)s - interval '1 day', interval '1 day') day;

INSERT INTO current_values (device_key, signal_id, ts, value, value_text, quality)
SELECT k.key, g.id, %(now)s - (k.key %% 60) * interval '1 second',
       CASE WHEN g.name = 'alarm_active' THEN (k.key %% 97 = 0)::int WHEN g.name = 'spindle_speed' THEN 1500 END,
       CASE WHEN g.name = 'machine_state' THEN 'running' END, 0
FROM devices k, signals g WHERE g.name IN ('machine_state', 'alarm_active', 'spindle_speed');

INSERT INTO device_states (device_key, state, since, last_ts)
SELECT k.key, 'running', %(now)s - interval '1 hour', %(now)s FROM devices k;
"""


def generate(url: str, settings: KpiSettings, now: datetime, ents: int, per: int) -> dict[str, Any]:
    started = time.perf_counter()
    today = kpis.day_start(settings, kpis.city_today(settings, now))
    with psycopg.connect(url, autocommit=True) as conn:
        migrate_all(conn, "postgresql")
        for table in PARTITIONED:
            conn.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        conn.execute(
            "UPDATE rollup_state SET materialized_to = %s, pending_to = %s",
            (now.replace(second=0, microsecond=0),) * 2,
        )
        sync_signals(conn)
        with conn.transaction():
            params = {"ents": ents, "per": per, "today": today, "now": now}
            for statement in filter(str.strip, GENERATE.split(";\n")):
                conn.execute(statement, params)
        conn.execute("VACUUM ANALYZE")
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in (
                "devices",
                "state_intervals",
                "counter_rollup_1h",
                "counter_rollup_1m",
                "kpi_device_daily",
                "current_values",
            )
        }
    return {"generate_s": round(time.perf_counter() - started, 1), "rows": counts}


async def measure(
    url: str, settings: KpiSettings, seconds: float, enterprise: str
) -> dict[str, Any]:
    admin = Caller(Principal(0, Role.ADMIN), Reach())
    # Connections as the app has them (monitoring/api/app.py): a pool with JIT off; a request holds
    # one connection and the overview and group pages take a spare one for their side queries.
    async with (
        AsyncConnectionPool(
            url,
            min_size=2,
            max_size=2,
            kwargs={"autocommit": True, "options": "-c jit=off"},
            open=False,
        ) as pool,
        pool.connection() as conn,
        spare_connection(pool) as side,
    ):
        now = datetime.now(UTC)
        refresh_started = time.perf_counter()
        await kpis.refresh_day(conn, settings, kpis.city_today(settings, now), now)
        refresh_s = time.perf_counter() - refresh_started
        today = kpis.city_today(settings, now)
        first, last = views.trend_days(settings, now, 30)

        queries: dict[str, Callable[[], Awaitable[Any]]] = {
            "overview": lambda: views.overview(conn, settings, datetime.now(UTC), side=side),
            "overview_one_connection": lambda: views.overview(conn, settings, datetime.now(UTC)),
            "segment": lambda: views.group_page(
                conn, settings, admin, Scope("segment", "345"), datetime.now(UTC), side=side
            ),
            "enterprise": lambda: views.enterprise_page(
                conn, settings, admin, enterprise, datetime.now(UTC)
            ),
            "trend_30d": lambda: kpis.daily_trend(conn, first, last),
            BASELINE: lambda: kpis.refresh_day(conn, settings, today, datetime.now(UTC)),
        }
        latencies = await _run_in_turns(queries, seconds)
    figures: dict[str, Any] = {}
    for name, values in latencies.items():
        values.sort()
        figures[name] = {
            "n": len(values),
            "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(values[min(len(values) - 1, int(0.95 * len(values)))], 1),
        }
    figures["first_refresh_today_s"] = round(refresh_s, 2)
    return figures


async def _run_in_turns(
    queries: dict[str, Callable[[], Awaitable[Any]]], seconds: float
) -> dict[str, list[float]]:
    """Run the queries in turns until each has used its share of ``seconds`` and run 3 times.

    Turns interleave the queries, so a change of load on the shared machine hits all alike. The
    measured queries share ``seconds`` equally, so fast ones get many samples; the baseline (1 to
    3 s a run) runs 3 times on top.
    """
    share_s = seconds / (len(queries) - 1)
    latencies: dict[str, list[float]] = {name: [] for name in queries}
    spent_s = dict.fromkeys(queries, 0.0)

    def is_due(name: str) -> bool:
        if len(latencies[name]) < MIN_RUNS:
            return True
        return name != BASELINE and spent_s[name] < share_s

    while due := [name for name in queries if is_due(name)]:
        for name in due:
            started = time.perf_counter()
            await queries[name]()
            took_s = time.perf_counter() - started
            spent_s[name] += took_s
            latencies[name].append(took_s * 1000)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--enterprises", type=int, default=500)
    parser.add_argument("--devices-per-enterprise", type=int, default=20)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "SHULIAN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--keep-db",
        action="store_true",
        help="keep the generated database (its name goes to stderr) for EXPLAIN ANALYZE",
    )
    args = parser.parse_args()
    settings = KpiSettings()
    name = f"shulian_bench_mon_{uuid.uuid4().hex[:8]}"
    url = create_database(args.pg, name)
    load_before = os.getloadavg()
    try:
        generated = generate(
            url, settings, datetime.now(UTC), args.enterprises, args.devices_per_enterprise
        )
        enterprise = f"ent-{min(42, args.enterprises):03d}"
        figures = asyncio.run(measure(url, settings, args.seconds, enterprise))
    finally:
        if args.keep_db:
            print(f"kept database {name}: {url}", file=sys.stderr)
        else:
            drop_database(args.pg, name)
    target_ms = 300.0
    result = {
        "bench": "monitoring",
        "inputs": {
            "enterprises": args.enterprises,
            "devices": args.enterprises * args.devices_per_enterprise,
            "days": 30,
            "seconds": args.seconds,
        },
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "psycopg": psycopg.__version__,
            # Other people's work shares the machine: the 1-minute load before and after.
            "loadavg_1m_before": round(load_before[0], 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
        **generated,
        "latency": figures,
        "overview_p95_target_ms": target_ms,
        "overview_p95_ok": figures["overview"]["p95_ms"] <= target_ms,
        "overview_vs_baseline": round(
            figures[BASELINE]["p50_ms"] / figures["overview"]["p50_ms"], 2
        ),
    }
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()

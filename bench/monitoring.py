"""Benchmark the monitoring app at city scale over HTTP, while the ingest writes into the same database.

One run, on the storage path of ``--storage`` (``postgresql``: the server at SHULIAN_TEST_PG_URL;
``timescaledb``: SHULIAN_TEST_TSDB_URL, else a private server from the cached build):

1. **History** (skipped with ``--reuse-db`` when the database exists): ``--enterprises`` (500)
   enterprises with one gateway and ``--devices-per-enterprise`` (20) devices each, and
   ``--days`` (30) days of telemetry written THROUGH THE INGEST'S OWN WRITER (``ingest.writer.
   Writer.write``: ledger, telemetry COPY, current values, counter increments, state intervals),
   then the rollups by the ingest's own refresh (``refresh_rollups`` on plain PostgreSQL; the
   continuous aggregates' own refresh on TimescaleDB) and the daily KPI tables by the monitoring's
   ``refresh_daily``. Fidelity: 30 days of 1-minute data for 10,000 devices (864 million counter
   rows alone) would not fit this machine's time and disk, so each device reports its machine
   state when it changes (a shift pattern on a 15-minute grid: off, running, a lunch idle, running,
   a fault on some days, off) and its part_count and active_energy counters (with the state as a
   heartbeat) every ``--reading-every-min`` minutes (default 120), one historical batch per gateway
   and day. Running time, planned time and utilization are therefore exact to the minute; output
   and energy per day are exact, per hour they are spread over 2-hour readings.
2. **Baseline**: one viewer, no ingest load, each page's first screen in turns.
3. **Load**: ``shulian ingest run`` (no web) consuming from a private Mosquitto, fed by
   bench/ingest.py's paced publisher at ``--ingest-rate`` (20,000) points/s as the same 500
   gateways and 10,000 devices, and ``--viewers`` (20) signed-in viewers (bureau, enterprise and
   provider users) each loading a page's first screen, then thinking ``--think-s`` (uniform in
   0.5x-1.5x), for ``--seconds``.
4. **Browser**: Playwright (Debian chromium) opens the overview ``--browser-loads`` times, in the
   after the baseline and after the viewers (the ingest still writing: a user's browser runs on
   their own machine, not beside the app), and times it until the page set ``body[data-filled]``
   (app.js does once the KPI tiles, the district and warning tables and the trend have their data).

A page's first screen is what the browser asks for: the HTML page, then the API calls app.js makes
for it (overview: /api/overview, /api/trend?scope=city; segment and district: /api/segments|
districts/{code}, /api/trend; enterprise: /api/enterprises/{id}, /api/trend, and with device data
/api/enterprises/{id}/devices; provider: /api/providers/{id}), sequentially as app.js does. Static
files (cached by the browser) and the live stream (a long-lived SSE) are not timed.

The app is ``create_app`` served by uvicorn in a child process of this script (``--serve``), which
adds two things around it: an ASGI middleware timing each request in the server, and a timer
around psycopg's ``AsyncCursor.execute``/``executemany`` counting only calls made inside a request
(the KPI refresher and live hub in the background are left out). ``db_share`` is database time /
request time over the load phase (pg_stat_statements is not loaded on the shared server).

Prints one JSON line; progress goes to stderr. ``--keep-db`` keeps the generated database (and a
private TimescaleDB server's data folder under ~/.cache/shulian/bench-monitoring), ``--reuse-db``
uses it again instead of generating (the history ends when it was generated; today's KPIs are
refreshed by the app as always).

    python bench/monitoring.py --keep-db                      # city scale, plain PostgreSQL
    python bench/monitoring.py --storage timescaledb --keep-db
    python bench/monitoring.py --reuse-db --seconds 60        # measure again, no generation
    python bench/monitoring.py --smoke                        # tiny: a few seconds, for the test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import datetime as dt
import itertools
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.append(str(REPO / "bench"))  # after REPO: bench/ingest.py must not shadow the package

CACHE = Path.home() / ".cache" / "shulian" / "bench-monitoring"
DISTRICTS = ("210202", "210203", "210204", "210211", "210212", "210213", "210214", "210281",
             "210283", "210224")  # fmt: skip
SEGMENTS = ("345", "367")
PROVIDERS = 5
TICK_MIN = 15
KINDS = ("cnc_lathe", "grinder", "press", "hobber", "die_casting")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", choices=("postgresql", "timescaledb"), default="postgresql")
    p.add_argument("--enterprises", type=int, default=500)
    p.add_argument("--devices-per-enterprise", type=int, default=20)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--reading-every-min", type=int, default=120, help="counter reading interval")
    p.add_argument("--viewers", type=int, default=20)
    p.add_argument(
        "--think-s",
        type=float,
        default=2.0,
        help="mean pause between a viewer's pages (uniform 0.5x-1.5x)",
    )
    p.add_argument("--seconds", type=float, default=60.0, help="load phase length")
    p.add_argument("--baseline-rounds", type=int, default=5, help="first screens per page")
    p.add_argument("--ingest-rate", type=float, default=20_000.0, help="points/s (0: no ingest)")
    p.add_argument("--browser-loads", type=int, default=3, help="0: no browser measurement")
    p.add_argument(
        "--test-server",
        action="store_true",
        help="plain PostgreSQL on the test server (SHULIAN_TEST_PG_URL, else 127.0.0.1:5432) "
        "rather than a private one with default settings (a test server may run without "
        "autovacuum, as this machine's does)",
    )
    p.add_argument("--keep-db", action="store_true", help="keep the generated database")
    p.add_argument("--reuse-db", action="store_true", help="reuse the kept database if present")
    p.add_argument("--smoke", action="store_true", help="tiny scale, a few seconds (for the test)")
    p.add_argument("--serve", help=argparse.SUPPRESS)  # child mode: DB URL, serves the app
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.enterprises, args.devices_per_enterprise, args.days = 6, 4, 2
        args.viewers, args.seconds, args.baseline_rounds = 4, 4.0, 2
        args.ingest_rate, args.browser_loads, args.think_s = 2_000.0, 1, 0.3
    for name in ("enterprises", "devices_per_enterprise", "days", "reading_every_min", "viewers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.reading_every_min % TICK_MIN:
        p.error(f"--reading-every-min must be a multiple of {TICK_MIN}")
    return args


# ------------------------------------------------------------------ the city's registry


def enterprise_id(g: int) -> str:
    return f"ent-{g:03d}"  # bench/ingest.py's naming, so its publisher feeds the same devices


def gateway_id(g: int) -> str:
    return f"gw-{g:03d}"


def device_id(g: int, d: int) -> str:
    return f"m{g:03d}-{d:03d}"


def register_city(conn: Any, ents: int, per: int) -> None:
    """Enterprises over Dalian's districts and both segments, each with a gateway and devices.

    The registry is what an import (CSV) and the gateways' births would have made; the telemetry
    then goes through the writer.
    """
    conn.execute(
        "INSERT INTO service_providers (id, name) SELECT format('sp-%%s', n), format('服务商%%s', n)"
        " FROM generate_series(1, %s) n",
        (PROVIDERS,),
    )
    conn.execute(
        """
        INSERT INTO enterprises (id, name, district_id, segment_code, above_designated_size,
                                 specialized, service_provider_id)
        SELECT format('ent-%%s', lpad(n::text, 3, '0')), format('大连企业%%s', n),
               (%(districts)s::text[])[1 + n %% 10], (%(segments)s::text[])[1 + n %% 2],
               n %% 3 = 0, n %% 7 = 0, format('sp-%%s', 1 + n %% %(providers)s)
        FROM generate_series(0, %(ents)s - 1) n
        """,
        {"districts": list(DISTRICTS), "segments": list(SEGMENTS), "ents": ents,
         "providers": PROVIDERS},
    )  # fmt: skip
    conn.execute(
        """INSERT INTO gateways (id, enterprise_id)
           SELECT format('gw-%%s', lpad(n::text, 3, '0')), format('ent-%%s', lpad(n::text, 3, '0'))
           FROM generate_series(0, %s - 1) n""",
        (ents,),
    )
    conn.execute(
        """
        INSERT INTO devices (enterprise_id, device_id, gateway_id, name, machine_kind, line,
                             rated_cycle_s)
        SELECT format('ent-%%s', lpad(e::text, 3, '0')),
               format('m%%s-%%s', lpad(e::text, 3, '0'), lpad(d::text, 3, '0')),
               format('gw-%%s', lpad(e::text, 3, '0')), format('设备%%s', d),
               (%(kinds)s::text[])[1 + d %% 5], 'L1', 30
        FROM generate_series(0, %(ents)s - 1) e, generate_series(0, %(per)s - 1) d
        """,
        {"kinds": list(KINDS), "ents": ents, "per": per},
    )
    # A fifth of the enterprises let the bureau see their device data (the enterprise page then
    # also loads its device table for the bureau).
    conn.execute(
        "INSERT INTO data_grants (enterprise, grantee) SELECT id, 'bureau' FROM enterprises "
        "WHERE right(id, 1) IN ('0', '5')"
    )


# ------------------------------------------------------------------ the devices' days


def shift(g: int, d: int, day_index: int) -> list[tuple[int, str]]:
    """A device's state changes in one day: (minute of the day, new state), on the 15-min grid.

    Varied by device and day, so enterprises differ: a start between 06:00 and 08:45, lunch idle,
    an end between 17:00 and 22:00, a 45-minute fault on some days, a day off on others.
    """
    n = g * 131 + d * 17 + day_index * 7
    if n % 23 == 0:
        return [(0, "off")]
    start = 6 * 60 + (n % 12) * 15
    end = 17 * 60 + (n % 21) * 15
    changes = [(0, "off"), (start, "running"), (12 * 60, "idle"), (13 * 60, "running")]
    if n % 9 == 0:
        changes += [(15 * 60, "fault"), (15 * 60 + 45, "running")]
    changes.append((end, "off"))
    return changes


def state_at(changes: list[tuple[int, str]], minute: int) -> str:
    state = changes[0][1]
    for at, new in changes:
        if at > minute:
            break
        state = new
    return state


def minutes_in(changes: list[tuple[int, str]], lo: int, hi: int) -> tuple[int, int]:
    """(running, powered non-running) minutes in [lo, hi) of the day."""
    running = other = 0
    bounds = [*changes, (24 * 60, "")]
    for (a, state), (b, _) in itertools.pairwise(bounds):
        overlap = max(0, min(b, hi) - max(a, lo))
        if state == "running":
            running += overlap
        elif state in ("idle", "fault"):
            other += overlap
    return running, other


@dataclass(slots=True)
class Counters:
    parts: float = 0.0
    kwh: float = 0.0
    last_min: dict[int, int] = field(default_factory=dict)


def day_samples(
    g: int, per: int, day_index: int, day_start_ms: int, every_min: int, until_ms: int,
    counters: dict[tuple[int, int], Counters],
) -> list[tuple[int, str, str, int, Any, int]]:  # fmt: skip
    """Gateway ``g``'s samples of one day, as the writer takes them (GoodSample tuples)."""
    samples: list[tuple[int, str, str, int, Any, int]] = []
    for d in range(per):
        device = device_id(g, d)
        changes = shift(g, d, day_index)
        state_changes = {at for at, _ in changes}
        count = counters.setdefault((g, d), Counters())
        last = 0
        for minute in range(0, 24 * 60, TICK_MIN):
            ts_ms = day_start_ms + minute * 60_000 + (d * 997) % 60_000
            if ts_ms > until_ms:
                break
            reading = minute % every_min == 0
            if minute in state_changes or reading:
                samples.append((0, device, "machine_state", ts_ms, state_at(changes, minute), 0))
            if reading:
                running, other = minutes_in(changes, last, minute)
                count.parts += running * 2  # a 30-s cycle
                count.kwh += running * 7.5 / 60 + other * 1.2 / 60
                last = minute
                samples.append((0, device, "part_count", ts_ms, int(count.parts), 0))
                samples.append((0, device, "active_energy", ts_ms, round(count.kwh, 2), 0))
    return samples


def generate(db_url: str, args: argparse.Namespace, storage: str, log: Any) -> dict[str, Any]:
    """Registry, history through the ingest's writer, rollups, daily KPIs; returns figures."""
    import psycopg
    import psycopg_pool

    from ingest.db.migrate import migrate
    from ingest.db.partitions import ensure_partitions
    from ingest.db.rollups import refresh_rollups
    from ingest.db.timescale import StoragePath
    from ingest.decode import Incoming, TelemetryBatch
    from ingest.metrics import IngestMetrics
    from ingest.registry import RegistryCache, sync_signals
    from ingest.settings import load_settings
    from ingest.writer import Pending, Writer, prepare_connection
    from monitoring import kpis
    from monitoring.db.migrate import ALL_CHAINS
    from monitoring.settings import KpiSettings
    from wire.topics import parse_topic, telemetry

    started = time.perf_counter()
    kpi_settings = KpiSettings()
    now = dt.datetime.now(dt.UTC)
    today = kpis.city_today(kpi_settings, now)
    first_day = today - dt.timedelta(days=args.days - 1)
    history_start = kpis.day_start(kpi_settings, first_day)
    settings = load_settings(db={"url": db_url}, storage={"path": storage})
    with psycopg.connect(db_url, autocommit=True) as conn:
        choice = migrate(conn, storage, ALL_CHAINS).choice
        path = choice.path
        if path is StoragePath.POSTGRESQL:
            # Partitions over the whole history (the service makes them as days come).
            horizon = settings.limits.model_copy(update={"max_age_s": (args.days + 2) * 86_400})
            ensure_partitions(conn, settings.storage, horizon, now)
            # As if the ingest had been running since the history began: rollups materialize
            # forward from there, and the history arrives on time (no invalidations).
            conn.execute(
                "UPDATE rollup_state SET materialized_to = %s, pending_to = %s",
                (history_start - dt.timedelta(hours=1),) * 2,
            )
        sync_signals(conn)
        register_city(conn, args.enterprises, args.devices_per_enterprise)
    pool = psycopg_pool.ConnectionPool(
        db_url, min_size=1, max_size=2, configure=prepare_connection, open=True
    )
    registry = RegistryCache()
    with pool.connection() as conn:
        registry.load(conn)
    writer = Writer(settings, pool, registry, IngestMetrics(), path)
    counters: dict[tuple[int, int], Counters] = {}
    now_ms = int(now.timestamp() * 1000) - 60_000
    points = flushes = 0
    write_s = 0.0
    per_flush = max(1, 40_000 // (args.devices_per_enterprise * 40))
    topics = [
        parse_topic(telemetry(enterprise_id(g), gateway_id(g))) for g in range(args.enterprises)
    ]
    for day_index in range(args.days):
        day = first_day + dt.timedelta(days=day_index)
        day_ms = int(kpis.day_start(kpi_settings, day).timestamp() * 1000)
        for lo in range(0, args.enterprises, per_flush):
            items = []
            for g in range(lo, min(args.enterprises, lo + per_flush)):
                samples = day_samples(
                    g, args.devices_per_enterprise, day_index, day_ms, args.reading_every_min,
                    now_ms, counters,
                )  # fmt: skip
                batch = TelemetryBatch(
                    topics[g], gateway_id(g), "history", day_index + 1, True, samples,
                    total_samples=len(samples),
                )  # fmt: skip
                incoming = Incoming(str(topics[g]), b"", 0, 1, 0, time.monotonic(), now_ms)
                items.append(Pending(incoming, batch))
            t0 = time.perf_counter()
            stats = writer.write(items)
            write_s += time.perf_counter() - t0
            points += stats.points
            flushes += 1
        log(f"history: {day} written ({points:,} points, {points / write_s:,.0f} points/s)")
    pool.close()
    rollup_started = time.perf_counter()
    with psycopg.connect(db_url, autocommit=path is not StoragePath.POSTGRESQL) as conn:
        if path is StoragePath.POSTGRESQL:
            rounds = 0
            while True:
                refreshed = refresh_rollups(conn, settings.storage.rollup_grace_s)
                rounds += 1
                if refreshed is None or refreshed.materialized_to >= dt.datetime.now(
                    dt.UTC
                ) - dt.timedelta(seconds=settings.storage.rollup_grace_s + 120):
                    break
        else:
            # What the aggregates' policies do as time passes, done once over the history.
            for view in ("telemetry_1m", "counter_1m", "telemetry_1h", "counter_1h"):
                conn.execute(
                    f"CALL refresh_continuous_aggregate('{view}', %s::timestamptz, NULL)",
                    (history_start - dt.timedelta(hours=1),),
                )
            # And the compression policies' jobs, as they would have run over 30 days.
            jobs = conn.execute(
                "SELECT job_id FROM timescaledb_information.jobs "
                "WHERE proc_name = 'policy_compression'"
            ).fetchall()
            for (job,) in jobs:
                conn.execute("CALL run_job(%s)", (job,))
            rounds = 1
    rollup_s = time.perf_counter() - rollup_started
    log(f"rollups refreshed in {rollup_s:.0f} s; daily KPIs next")
    kpi_started = time.perf_counter()
    days = asyncio.run(_refresh_kpis(db_url, kpi_settings))
    kpi_s = time.perf_counter() - kpi_started
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        rows = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in ("devices", "telemetry", "counter_increments", "state_intervals",
                      "kpi_device_daily", "current_values")
        }  # fmt: skip
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_generation (generated_at timestamptz, figures jsonb)"
        )
        figures = {
            "generated_at": now.isoformat(timespec="seconds"),
            "generate_s": round(time.perf_counter() - started, 1),
            "history_points": points,
            "history_flushes": flushes,
            "writer_points_per_s": round(points / write_s),
            "rollup_refresh_s": round(rollup_s, 1),
            "rollup_refresh_rounds": rounds,
            "kpi_refresh_s": round(kpi_s, 1),
            "kpi_days_refreshed": days,
            "rows": rows,
        }
        conn.execute("INSERT INTO bench_generation VALUES (%s, %s)", (now, json.dumps(figures)))
    return figures


async def _refresh_kpis(db_url: str, kpi_settings: Any) -> int:
    from psycopg import AsyncConnection

    from monitoring import kpis

    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        return len(await kpis.refresh_daily(conn, kpi_settings, days_back=1))


# ------------------------------------------------------------------ the app, in a child process

_REQUEST_DB: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "bench_request_db", default=None
)


def serve(db_url: str, port: int) -> None:
    """Child mode: the monitoring app under uvicorn, with request and database timers."""
    import psycopg
    import uvicorn
    from psycopg_pool import AsyncConnectionPool

    from monitoring.api.app import create_app
    from monitoring.settings import MonitoringSettings

    totals: dict[str, Any] = {
        "requests": 0, "request_s": 0.0, "db_calls": 0, "db_s": 0.0, "pool_wait_s": 0.0,
        # (request name, ms in the app, of which in database calls, waiting for the pool, start s)
        "log": [],
    }  # fmt: skip

    def timed(method: Any, slot: int) -> Any:
        """``method`` adding its time to slot 0 (database) or 2 (pool wait) of the request."""

        async def wrapper(self: Any, *a: Any, **kw: Any) -> Any:
            acc = _REQUEST_DB.get()
            if acc is None:
                return await method(self, *a, **kw)
            t0 = time.perf_counter()
            try:
                return await method(self, *a, **kw)
            finally:
                acc[slot] += time.perf_counter() - t0
                if slot == 0:
                    acc[1] += 1

        return wrapper

    # Bench instrumentation only: the app's own code is unchanged.
    psycopg.AsyncCursor.execute = timed(psycopg.AsyncCursor.execute, 0)  # type: ignore[method-assign]
    psycopg.AsyncCursor.executemany = timed(psycopg.AsyncCursor.executemany, 0)  # type: ignore[method-assign]
    AsyncConnectionPool.getconn = timed(AsyncConnectionPool.getconn, 2)  # type: ignore[method-assign]

    # The shipped defaults (pool, refresh every 60 s), as `shulian monitoring run` has them.
    app = create_app(MonitoringSettings(db={"url": db_url}))

    @app.get("/_bench/stats", include_in_schema=False)
    def stats() -> dict[str, Any]:
        return dict(totals)

    inner = app.build_middleware_stack

    def with_timer() -> Any:
        wrapped = inner()

        async def timer(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"].startswith(("/_bench", "/static")):
                await wrapped(scope, receive, send)
                return
            acc = [0.0, 0.0, 0.0]  # database s, database calls, pool wait s
            token = _REQUEST_DB.set(acc)
            t0 = time.perf_counter()
            try:
                await wrapped(scope, receive, send)
            finally:
                _REQUEST_DB.reset(token)
                totals["requests"] += 1
                totals["request_s"] += time.perf_counter() - t0
                totals["db_s"] += acc[0]
                totals["db_calls"] += int(acc[1])
                totals["pool_wait_s"] += acc[2]
                totals["log"].append(
                    (request_name(scope["path"]), *(round(x * 1000, 2) for x in (
                        time.perf_counter() - t0, acc[0], acc[2])), round(t0, 3))
                )  # fmt: skip

        return timer

    app.build_middleware_stack = with_timer  # type: ignore[method-assign]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ------------------------------------------------------------------ viewers


def request_name(path: str) -> str:
    """The name ``first_screen`` gives the request for ``path`` (the app's side of the timings)."""
    parts = path.strip("/").split("/")
    if path == "/":
        return "overview.html"
    if path == "/provider":
        return "provider.html"
    if parts[0] == "api":
        if parts[1:2] == ["enterprises"] and parts[-1] == "devices":
            return "api/enterprises/devices"
        return "/".join(parts[:2])
    singular = {"segments": "segment", "districts": "district", "enterprises": "enterprise"}
    return f"{singular.get(parts[0], parts[0])}.html"


@dataclass(frozen=True, slots=True)
class Viewer:
    role: str
    secret: str
    binding: str = ""


def first_screen(page: str, key: str, with_devices: bool) -> list[tuple[str, str]]:
    """(request name, path) of a page's first screen, in app.js's order."""
    if page == "overview":
        return [("overview.html", "/"), ("api/overview", "/api/overview"),
                ("api/trend", "/api/trend?scope=city&days=30")]  # fmt: skip
    if page == "provider":
        return [("provider.html", "/provider"), ("api/providers", f"/api/providers/{key}")]
    plural = {"segment": "segments", "district": "districts", "enterprise": "enterprises"}[page]
    out = [
        (f"{page}.html", f"/{plural}/{key}"),
        (f"api/{plural}", f"/api/{plural}/{key}"),
        ("api/trend", f"/api/trend?scope={page}:{key}&days=30"),
    ]
    if page == "enterprise" and with_devices:
        out.append(("api/enterprises/devices", f"/api/enterprises/{key}/devices"))
    return out


def pages_for(viewer: Viewer, ents: int, rng: random.Random) -> tuple[str, str, bool]:
    """The next page a viewer opens: bureau users browse the city, others their own pages."""
    if viewer.role == "enterprise":
        return "enterprise", viewer.binding, True
    if viewer.role == "provider":
        return "provider", viewer.binding, False
    page = rng.choice(("overview", "segment", "district", "enterprise"))
    if page == "segment":
        return page, rng.choice(SEGMENTS), False
    if page == "district":
        return page, rng.choice(DISTRICTS), False
    if page == "overview":
        return page, "", False
    g = rng.randrange(ents)
    return page, enterprise_id(g), g % 5 == 0  # data_grants: ids ending in 0 or 5


def make_viewers(db_url: str, n: int, ents: int) -> list[Viewer]:
    """Tokens for n viewers: 60% bureau, 25% enterprise, the rest provider (at least one each)."""
    from psycopg import AsyncConnection

    from monitoring.auth import Role, create_token

    enterprise_n = max(1, n // 4)
    provider_n = max(1, n - int(n * 0.6) - enterprise_n) if n >= 3 else 0
    bureau_n = max(1, n - enterprise_n - provider_n)

    async def issue() -> list[Viewer]:
        out: list[Viewer] = []
        async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
            for i in range(bureau_n):
                token = await create_token(conn, Role.BUREAU, name=f"bench bureau {i}")
                out.append(Viewer("bureau", token.secret))
            for i in range(enterprise_n):
                ent = enterprise_id((i * 37) % ents)
                token = await create_token(conn, Role.ENTERPRISE, enterprise=ent, name="bench")
                out.append(Viewer("enterprise", token.secret, ent))
            for i in range(provider_n):
                provider = f"sp-{1 + i % PROVIDERS}"
                token = await create_token(conn, Role.PROVIDER, provider=provider, name="bench")
                out.append(Viewer("provider", token.secret, provider))
        return out[:n]

    return asyncio.run(issue())


@dataclass(slots=True)
class Timings:
    pages: dict[str, list[float]] = field(default_factory=dict)
    requests: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, kind: str, name: str, ms: float) -> None:
        target = self.pages if kind == "page" else self.requests
        target.setdefault(name, []).append(ms)


async def load_page(client: Any, page: str, key: str, with_devices: bool, timings: Timings) -> None:
    started = time.perf_counter()
    for name, path in first_screen(page, key, with_devices):
        t0 = time.perf_counter()
        response = await client.get(path)
        timings.add("request", name, (time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            timings.errors.append(f"{path}: {response.status_code} {response.text[:200]}")
    timings.add("page", page, (time.perf_counter() - started) * 1000)


async def signed_in(base: str, viewer: Viewer) -> Any:
    import httpx

    client = httpx.AsyncClient(base_url=base, timeout=60.0)
    response = await client.post("/api/auth/session", json={"token": viewer.secret})
    if response.status_code != 200:
        raise RuntimeError(f"sign-in as {viewer.role} failed: {response.text[:300]}")
    return client


async def baseline_phase(base: str, viewers: list[Viewer], ents: int, rounds: int) -> Timings:
    """One viewer at a time, no think time: every page kind ``rounds`` times, in turns."""
    timings = Timings()
    by_role = {v.role: v for v in viewers}
    plan: list[tuple[Viewer, str, str, bool]] = []
    for r in range(rounds):
        bureau = by_role["bureau"]
        plan += [
            (bureau, "overview", "", False),
            (bureau, "segment", SEGMENTS[r % 2], False),
            (bureau, "district", DISTRICTS[r % len(DISTRICTS)], False),
            (bureau, "enterprise", enterprise_id((r * 5) % ents), True),
        ]
        for role in ("enterprise", "provider"):
            if role in by_role:
                page = "enterprise" if role == "enterprise" else "provider"
                plan.append((by_role[role], page, by_role[role].binding, True))
    clients = {v.secret: await signed_in(base, v) for v in {p[0] for p in plan}}
    try:
        for viewer, page, key, devices in plan:
            await load_page(clients[viewer.secret], page, key, devices, timings)
    finally:
        for client in clients.values():
            await client.aclose()
    return timings


async def load_phase(
    base: str, viewers: list[Viewer], ents: int, seconds: float, think_s: float
) -> Timings:
    timings = Timings()
    deadline = time.monotonic() + seconds

    async def run(index: int, viewer: Viewer) -> None:
        rng = random.Random(index)
        client = await signed_in(base, viewer)
        try:
            await asyncio.sleep(rng.uniform(0, think_s))  # stagger the starts
            while time.monotonic() < deadline:
                page, key, devices = pages_for(viewer, ents, rng)
                await load_page(client, page, key, devices, timings)
                await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))
        finally:
            await client.aclose()

    await asyncio.gather(*(run(i, v) for i, v in enumerate(viewers)))
    return timings


def summarize(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)

    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 1), "p95_ms": q(0.95),
            "p99_ms": q(0.99)}  # fmt: skip


def app_stats(base: str) -> dict[str, Any]:
    import httpx

    return dict(httpx.get(f"{base}/_bench/stats", timeout=30).json())


# ------------------------------------------------------------------ browser


async def browser_overview(base: str, secret: str, loads: int) -> list[float]:
    """Milliseconds from navigation to ``body[data-filled]`` on the overview, ``loads`` times."""
    from playwright.async_api import async_playwright

    times: list[float] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-quic"],
        )  # fmt: skip
        try:
            context = await browser.new_context()
            page = await context.new_page()
            response = await page.request.post(f"{base}/api/auth/session", data={"token": secret})
            if not response.ok:
                raise RuntimeError(f"browser sign-in failed: {await response.text()}")
            await page.goto(f"{base}/static/app.css")  # warm the static cache, as a returning user
            for _ in range(loads + 1):
                t0 = time.perf_counter()
                await page.goto(f"{base}/", wait_until="commit")
                await page.wait_for_selector("body[data-filled]", timeout=60_000)
                times.append((time.perf_counter() - t0) * 1000)
        finally:
            await browser.close()
    return times[1:]  # the first load fills the browser's cache of app.js, ECharts and fonts


# ------------------------------------------------------------------ the ingest under load


@contextlib.contextmanager
def ingest_running(db_url: str, storage: str, workdir: Path, args: argparse.Namespace,
                   log: Any) -> Iterator[Any]:  # fmt: skip
    """Mosquitto, ``shulian ingest run`` (no web) and bench/ingest.py's paced publisher."""
    from shulian.devservices import Mosquitto

    bench_ingest = _bench_ingest()

    broker = Mosquitto(workdir / "mosquitto").start()
    env = {
        **os.environ,
        "SHULIAN_INGEST_DB__URL": db_url,
        "SHULIAN_INGEST_MQTT__URL": broker.url,
        "SHULIAN_INGEST_MQTT__CLIENT_ID": "bench-monitoring-ingest",
        "SHULIAN_INGEST_STORAGE__PATH": storage,
        "SHULIAN_INGEST_REGISTRY__AUTO_REGISTER_GATEWAYS": "true",
    }
    log_file = (workdir / "ingest.log").open("wb")
    ingest = subprocess.Popen(
        [sys.executable, "-m", "shulian", "ingest", "run", "--no-api"],
        cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
    )  # fmt: skip
    publisher = None
    try:
        time.sleep(3)
        if ingest.poll() is not None:
            raise RuntimeError(f"shulian ingest run exited: {(workdir / 'ingest.log').read_text()}")
        pub_args = argparse.Namespace(
            gateways=args.enterprises, devices_per_gateway=args.devices_per_enterprise,
            points_per_message=120,
        )  # fmt: skip
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        boots = [uuid.uuid4().hex for _ in range(args.enterprises)]
        publisher = ctx.Process(
            target=_publish,
            args=(broker.port, pub_args, boots, child),
            daemon=True,
        )
        publisher.start()
        if bench_ingest.receive(parent, publisher, 300) != "ready":
            raise RuntimeError("the publisher did not get ready")
        log("ingest and publisher ready")
        yield parent, publisher
    finally:
        if publisher is not None and publisher.is_alive():
            publisher.kill()
        ingest.send_signal(signal.SIGTERM)
        try:
            ingest.wait(60)
        except subprocess.TimeoutExpired:
            ingest.kill()
            ingest.wait()
        log_file.close()
        broker.stop()


def _bench_ingest() -> Any:
    """bench/ingest.py as a module (its name would shadow the ingest package on sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_ingest", REPO / "bench" / "ingest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _publish(*args: Any) -> None:
    """Publisher child process: bench/ingest.py's paced gateways."""
    _bench_ingest().publisher_main(*args)


def committed_points(db_url: str) -> int:
    import psycopg

    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(l.points), 0) FROM batch_ledger l JOIN gateway_boots b "
            "ON b.key = l.boot_key WHERE b.boot <> 'history'"
        ).fetchone()
    return int(row[0]) if row else 0


# ------------------------------------------------------------------ database server


def database_exists(server_url: str, name: str) -> bool:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        return bool(
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        )


def has_history(db_url: str) -> dict[str, Any] | None:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        if not conn.execute("SELECT to_regclass('bench_generation')").fetchone()[0]:  # type: ignore[index]
            return None
        row = conn.execute(
            "SELECT figures FROM bench_generation ORDER BY generated_at DESC LIMIT 1"
        ).fetchone()
    return dict(row[0]) if row else None


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return {}

    def log(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    from benchlib import database_server, environment

    from shulian.devservices import create_database, drop_database, replace_dbname

    keep = args.keep_db or args.reuse_db
    workdir = Path(tempfile.mkdtemp(prefix="shulian-bench-mon-"))
    scale = (
        f"{args.enterprises}x{args.devices_per_enterprise}x{args.days}d{args.reading_every_min}m"
    )
    name = f"shulian_bench_mon_{scale}" if keep else f"shulian_bench_mon_{uuid.uuid4().hex[:8]}"
    try:
        folder = "tsdb" if args.storage == "timescaledb" else "pg"
        home = CACHE / folder if keep else workdir / folder
        with database_server(
            args.storage,
            home,
            "bench/monitoring.py",
            log,
            keep=keep,
            private_plain=not args.test_server,
        ) as server_url:
            generated: dict[str, Any] | None = None
            reused = False
            if args.reuse_db and database_exists(server_url, name):
                db_url = replace_dbname(server_url, name)
                generated = has_history(db_url)
                reused = generated is not None
            if not reused:
                if database_exists(server_url, name):
                    drop_database(server_url, name)
                db_url = create_database(server_url, name)
            try:  # a failed generation drops its database too (a kept one is regenerated)
                if not reused:
                    log(f"generating {scale} in {name} ({args.storage})")
                    generated = generate(db_url, args, args.storage, log)
                assert generated is not None
                result = measure(db_url, args, workdir, log)
            finally:
                if keep:
                    log(f"kept database {name}: {db_url}")
                else:
                    drop_database(server_url, name)
    finally:
        if os.environ.get("BENCH_KEEP_WORKDIR"):
            print(f"workdir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "bench": "monitoring",
        "storage_path": args.storage,
        "inputs": {
            "enterprises": args.enterprises,
            "devices": args.enterprises * args.devices_per_enterprise,
            "days": args.days,
            "reading_every_min": args.reading_every_min,
            "viewers": args.viewers,
            "think_s": args.think_s,
            "seconds": args.seconds,
            "ingest_rate": args.ingest_rate,
            "smoke": args.smoke,
        },
        "environment": environment(),
        "generation": {**generated, "reused": reused},
        **result,
    }
    print(json.dumps(result, ensure_ascii=False))
    return result


def measure(db_url: str, args: argparse.Namespace, workdir: Path, log: Any) -> dict[str, Any]:
    from benchlib import wait_for

    from shulian.devservices import free_port

    viewers = make_viewers(db_url, args.viewers, args.enterprises)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app_log = (workdir / "app.log").open("wb")
    app = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", db_url, "--port", str(port)],
        cwd=REPO, stdout=app_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    bureau = next(v for v in viewers if v.role == "bureau")
    try:
        wait_for(lambda: _answers(base) or app.poll() is not None, 60, "the monitoring app")
        if app.poll() is not None:
            raise RuntimeError(f"the app exited: {(workdir / 'app.log').read_text()[-3000:]}")
        # Warm-up: the first request of each kind pays for imports, template compiles, plans.
        asyncio.run(baseline_phase(base, viewers, args.enterprises, 1))
        log("baseline: one viewer, no ingest")
        load_before = [round(x, 2) for x in os.getloadavg()]
        s0 = app_stats(base)
        baseline = asyncio.run(
            baseline_phase(base, viewers, args.enterprises, args.baseline_rounds)
        )
        s1 = app_stats(base)
        browser_base = (
            asyncio.run(browser_overview(base, bureau.secret, args.browser_loads))
            if args.browser_loads
            else []
        )
        ingest_points_per_s = None
        with contextlib.ExitStack() as stack:
            if args.ingest_rate:
                parent, _publisher = stack.enter_context(
                    ingest_running(db_url, args.storage, workdir, args, log)
                )
                parent.send(("go", args.seconds + 600, args.ingest_rate, 0))
                time.sleep(5)  # the ingest settles at the rate before the viewers come
            log(f"load: {len(viewers)} viewers for {args.seconds:g} s")
            points0, t0 = committed_points(db_url), time.monotonic()
            load_start = [round(x, 2) for x in os.getloadavg()]
            s2 = app_stats(base)
            loop_started = time.monotonic()
            load = asyncio.run(
                load_phase(base, viewers, args.enterprises, args.seconds, args.think_s)
            )
            load_s = time.monotonic() - loop_started
            s3 = app_stats(base)
            points1, t1 = committed_points(db_url), time.monotonic()
            if args.ingest_rate:
                ingest_points_per_s = round((points1 - points0) / (t1 - t0))
            load_after = [round(x, 2) for x in os.getloadavg()]
            # The browser after the viewers, the ingest still writing: a bureau user's chromium
            # runs on their own machine, and on this one (2 cores) its start and rendering took
            # the CPU from the app for seconds, which the viewers' p95 then showed.
            browser_load = (
                asyncio.run(browser_overview(base, bureau.secret, args.browser_loads))
                if args.browser_loads
                else []
            )
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(30)
        except subprocess.TimeoutExpired:
            app.kill()
        app_log.close()
    if load.errors or baseline.errors:
        raise RuntimeError(f"requests failed: {(baseline.errors + load.errors)[:5]}")
    pages = {name: summarize(v) for name, v in sorted(load.pages.items())}
    requests = {name: summarize(v) for name, v in sorted(load.requests.items())}
    base_pages = {name: summarize(v) for name, v in sorted(baseline.pages.items())}
    base_requests = {name: summarize(v) for name, v in sorted(baseline.requests.items())}
    total_requests = sum(len(v) for v in load.requests.values())

    def share(a: dict[str, Any], b: dict[str, Any], what: str = "db_s") -> float | None:
        request_s = b["request_s"] - a["request_s"]
        return round((b[what] - a[what]) / request_s, 3) if request_s else None

    def ratios(now: dict[str, Any], then: dict[str, Any]) -> dict[str, float]:
        return {
            name: round(now[name]["p95_ms"] / then[name]["p95_ms"], 2)
            for name in now
            if name in then and then[name]["p95_ms"]
        }

    from benchlib import percentile

    target_ms = 100.0
    in_app: dict[str, list[tuple[float, float, float]]] = {}
    for name, *times in s3["log"][len(s2["log"]) :]:
        in_app.setdefault(name, []).append((times[0], times[1], times[2]))
    if os.environ.get("SHULIAN_BENCH_REQUEST_LOG"):  # every request of the load, for a closer look
        Path(os.environ["SHULIAN_BENCH_REQUEST_LOG"]).write_text(
            "\n".join(json.dumps(entry) for entry in s3["log"][len(s2["log"]) :]) + "\n"
        )
    return {
        "load_average_before": load_before,
        "load_average_at_load_start": load_start,
        "load_average_after": load_after,
        "pages": pages,
        "requests": requests,
        "requests_per_s": round(total_requests / load_s, 1),
        "pages_per_s": round(sum(len(v) for v in load.pages.values()) / load_s, 1),
        "db_share": share(s2, s3),
        "pool_wait_share": share(s2, s3, "pool_wait_s"),
        "db_calls_per_request": round(
            (s3["db_calls"] - s2["db_calls"]) / max(1, s3["requests"] - s2["requests"]), 1
        ),
        "server_request_mean_ms": round(
            1000 * (s3["request_s"] - s2["request_s"]) / max(1, s3["requests"] - s2["requests"]), 1
        ),
        "in_app": {
            name: {
                "n": len(rows),
                "p95_ms": percentile([r[0] for r in rows], 0.95),
                "db_p95_ms": percentile([r[1] for r in rows], 0.95),
                "pool_wait_p95_ms": percentile([r[2] for r in rows], 0.95),
                "db_share": round(sum(r[1] for r in rows) / max(sum(r[0] for r in rows), 1e-9), 3),
            }
            for name, rows in sorted(in_app.items())
        },
        "ingest_points_per_s": ingest_points_per_s,
        "browser_overview_filled_ms": {
            "baseline": [round(x) for x in browser_base],
            "load": [round(x) for x in browser_load],
        },
        "baseline": {
            "pages": base_pages,
            "requests": base_requests,
            "db_share": share(s0, s1),
            "pool_wait_share": share(s0, s1, "pool_wait_s"),
        },
        "p95_vs_baseline": {
            "pages": ratios(pages, base_pages),
            "requests": ratios(requests, base_requests),
        },
        "request_p95_target_ms": target_ms,
        "requests_over_target": sorted(n for n, v in requests.items() if v["p95_ms"] > target_ms),
    }


def _answers(base: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{base}/api/health", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()

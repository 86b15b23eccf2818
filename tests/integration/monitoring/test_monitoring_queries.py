"""How the KPI queries run: never prepared, warnings stored or computed alike, gaps in baselines.

The known answers themselves are in test_monitoring_kpis.py; these tests guard the speed-ups of
the overview (see docs/monitoring.md, "Speed") against changing any figure.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import orjson
import psycopg
from test_monitoring_kpis import DAY, NOW, SETTINGS, build_day

from monitoring import kpis
from monitoring.api import registry, views
from monitoring.api.access import Reach
from monitoring.api.deps import Caller
from monitoring.api.json_body import JsonBody
from monitoring.auth import Principal, Role

ADMIN = Caller(Principal(0, Role.ADMIN), Reach())


def test_device_figures_are_never_prepared_so_no_generic_plan_takes_over(
    monitoring_db: str,
) -> None:
    """psycopg prepares a statement on its 5th run; PostgreSQL then may pick a generic plan,
    which for this query took 27 s instead of 0.2 s at 10,000 devices."""
    build_day(monitoring_db)

    async def run() -> list[str]:
        async with await psycopg.AsyncConnection.connect(monitoring_db, autocommit=True) as conn:
            window = kpis.window_for(SETTINGS, NOW)
            for _ in range(8):
                await kpis.device_figures(conn, SETTINGS, window, NOW)
                await kpis.device_figures(conn, SETTINGS, window, NOW, enterprise="ent-a")
            cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
            return [row[0] for row in await cur.fetchall()]

    prepared = asyncio.run(run())
    assert not [sql for sql in prepared if "kpi_device_daily" in sql]


def _computed_then_stored_warnings(url: str) -> dict[str, kpis.Warning_]:
    """The warnings computed from the daily rows; asserts that once refresh_warnings has stored
    their inputs the pages read those, the same warnings, until the next refresh (yesterday's
    output changed after it is not seen yet)."""
    yesterday = DAY - timedelta(days=1)

    async def run() -> tuple[dict[str, kpis.Warning_], dict[str, kpis.Warning_]]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            computed = await kpis.enterprise_warnings(conn, SETTINGS, NOW)
            assert await kpis.refresh_warnings(conn, SETTINGS, NOW) == yesterday
            await conn.execute(
                "UPDATE kpi_enterprise_daily SET parts = 0 WHERE day = %s", (yesterday,)
            )
            return computed, await kpis.enterprise_warnings(conn, SETTINGS, NOW)

    computed, stored = asyncio.run(run())
    assert stored == computed
    return computed


def test_warning_baseline_skips_days_without_rows(monitoring_db: str) -> None:
    """Days missing from kpi_enterprise_daily count as zero, exactly as stored zero days do; the
    inputs refresh_warnings stores give the same warnings as computing them at the request."""
    yesterday = DAY - timedelta(days=1)
    days = {yesterday - timedelta(days=n): 100.0 + n for n in range(1, 15, 2)}  # every other day
    days[yesterday] = 60.0
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        for day, parts in days.items():
            conn.execute(
                """INSERT INTO kpi_enterprise_daily (day, enterprise_id, devices, reported,
                       running_s, calendar_s, parts, energy_kwh)
                   VALUES (%s, 'ent-a', 1, 1, 0, 86400, %s, %s)""",
                (day, parts, parts / 10),
            )

    warnings = _computed_then_stored_warnings(monitoring_db)
    baseline_days = [yesterday - timedelta(days=n) for n in range(SETTINGS.baseline_days, 0, -1)]
    expected = kpis.classify_warning(
        "ent-a",
        yesterday,
        60.0,
        6.0,
        [days.get(d, 0.0) for d in baseline_days],
        [days[d] / 10 if d in days else 0.0 for d in baseline_days],
        SETTINGS.min_baseline_days,
    )
    assert warnings["ent-a"] == expected
    assert warnings["ent-a"].output_baseline == 107.0  # median of 101, 103, ..., 113
    assert warnings["ent-a"].colour == "orange"  # 60 / 107 = 56 %
    assert warnings["ent-b"].colour == "grey"


def test_warning_medians_taken_in_the_database_are_statistics_median(monitoring_db: str) -> None:
    """An even count of days with data (mean of the two middle values, in floats that do not add
    exactly), days with output but no energy and the reverse, and a stored all-zero day (no data),
    for two enterprises: the same warnings as classify_warning on the same values."""
    yesterday = DAY - timedelta(days=1)
    baseline_days = [yesterday - timedelta(days=n) for n in range(SETTINGS.baseline_days, 0, -1)]
    values = {
        "ent-a": [(0.1 * n + 0.7, 0.3 * n) for n in range(len(baseline_days))],
        "ent-b": [(0.7, 0.1), (5.5, 0.0), (0.0, 2.2), *[(1 / 3 * n, 0.2) for n in range(1, 12)]],
    }
    values["ent-a"][3] = (0.0, 0.0)  # a stored day without data: 13 days (odd); ent-b has 14
    values["ent-b"] = values["ent-b"][: len(baseline_days)]
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        for ent, days in values.items():
            for day, (parts, energy) in zip(baseline_days, days, strict=True):
                conn.execute(
                    """INSERT INTO kpi_enterprise_daily (day, enterprise_id, devices, reported,
                           running_s, calendar_s, parts, energy_kwh)
                       VALUES (%s, %s, 1, 1, 0, 86400, %s, %s)""",
                    (day, ent, parts, energy),
                )
            conn.execute(
                """INSERT INTO kpi_enterprise_daily (day, enterprise_id, devices, reported,
                       running_s, calendar_s, parts, energy_kwh)
                   VALUES (%s, %s, 1, 1, 0, 86400, 0.9, 0.45)""",
                (yesterday, ent),
            )

    warnings = _computed_then_stored_warnings(monitoring_db)
    for ent, days in values.items():
        expected = kpis.classify_warning(
            ent,
            yesterday,
            0.9,
            0.45,
            [p for p, _ in days],
            [e for _, e in days],
            SETTINGS.min_baseline_days,
        )
        assert warnings[ent] == expected, ent
        assert warnings[ent].colour != "grey"


def test_the_provider_page_shows_what_each_enterprise_s_device_figures_say(
    monitoring_db: str,
) -> None:
    """The provider's page reads status only, in one query for all served enterprises: every
    device row and gateway list equals what the per-enterprise figures (today's KPIs included)
    give, for two served enterprises and none of the others."""
    build_day(monitoring_db)
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        conn.execute("UPDATE enterprises SET service_provider_id = 'sp-1' WHERE id = 'ent-c'")
    provider = Caller(Principal(0, Role.PROVIDER, provider="sp-1"), Reach())

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(monitoring_db, autocommit=True) as conn:
            page = await views.provider_page(conn, SETTINGS, provider, "sp-1", NOW)
            window = kpis.window_for(SETTINGS, NOW)
            expected = {}
            for ent in ("ent-a", "ent-c"):
                figures = await kpis.device_figures(conn, SETTINGS, window, NOW, enterprise=ent)
                expected[ent] = {
                    "devices": [views.device_row(f, with_kpis=False) for f in figures],
                    "gateways": await registry.gateways(conn, ent),
                }
            return page, expected

    page, expected = asyncio.run(run())
    # The device rows are JSON the database wrote: compare the page as a browser receives it.
    served = {row["id"]: row for row in orjson.loads(JsonBody(page).body)["served"]}
    assert sorted(served) == ["ent-a", "ent-c"]
    for ent, want in expected.items():
        assert served[ent]["devices"] == want["devices"]
        assert served[ent]["gateways"] == orjson.loads(JsonBody(want["gateways"]).body)
        assert served[ent]["registered"] == len(want["devices"])
        assert served[ent]["online"] == sum(d["online"] for d in want["devices"])
        assert served[ent]["states"] == dict(Counter(d["state"] for d in want["devices"]))
    assert any(d["last_seen"] for d in served["ent-a"]["devices"])
    assert [d["id"] for d in served["ent-a"]["devices"]] == ["grinder-1", "grinder-2", "lathe-1"]
    assert any(d["online"] for d in served["ent-a"]["devices"])  # build_day has live devices

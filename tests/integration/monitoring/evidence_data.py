"""Constructed months of one enterprise with known before/after figures (tests import this).

Evaluated on 2025-06-10 12:00 in Asia/Shanghai (yesterday, the last complete day: 2025-06-09).
ent-a's gateway first starts on 2025-04-28 09:00; its devices (lathe-1 with a 30 s rated cycle,
grinder-1; grinder-2 never reports) then run like this:

- 2025-04-28..30 (the baseline when measured over 3 days), each day: lathe-1 running 00-06,
  fault 06-07, idle 07-08, 100 parts with 10 rejects, 50 kWh; grinder-1 idle 00-04.
- 2025-05-10 and 11: lathe-1 running 00-12, idle 12-14, 200 parts with 4 rejects, 80 kWh;
  grinder-1 running 00-06.
- 2025-06-05: lathe-1 running 00-12, 300 parts with 3 rejects, 90 kWh; grinder-1 idle 00-02.
- 2025-06-06 is materialized too but nothing reported: it does not count as a day with data.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from zoneinfo import ZoneInfo

import psycopg
from monitoring_data import add_increment, add_interval, device_key

from monitoring import kpis
from monitoring.settings import KpiSettings

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2025, 6, 10, 12, 0, tzinfo=TZ)
BASELINE_DAYS = (date(2025, 4, 28), date(2025, 4, 29), date(2025, 4, 30))
MAY_DAYS = (date(2025, 5, 10), date(2025, 5, 11))
JUNE_DAY = date(2025, 6, 5)
EMPTY_DAY = date(2025, 6, 6)

# Known answers (docs/kpis.md "Before/after evidence").
MEASURED_3_DAYS = {
    "utilization": 3 * 6 * 3600 / (3 * 2 * 86_400),  # 0.125
    "running_rate": 3 / 6,  # lathe-1 ran on 3 of 6 reported device-days
    "output_per_day": 100.0,
    "reject_rate": 30 / 300,
    "kwh_per_part": 150 / 300,
    "oee": 3 * 90 * 30 / (3 * 8 * 3600),  # good x rated cycle / planned (running+fault+idle)
    "fault_h_per_day": 1.0,
}
MAY = {
    "utilization": 2 * 18 * 3600 / (2 * 2 * 86_400),  # 0.375
    "running_rate": 1.0,
    "output_per_day": 200.0,
    "reject_rate": 8 / 400,
    "kwh_per_part": 160 / 400,
    "oee": 2 * 196 * 30 / (2 * 14 * 3600),
    "fault_h_per_day": 0.0,
}
JUNE = {
    "utilization": 12 * 3600 / (2 * 86_400),  # 0.25
    "running_rate": 0.5,
    "output_per_day": 300.0,
    "reject_rate": 3 / 300,
    "kwh_per_part": 90 / 300,
    "oee": 297 * 30 / (12 * 3600),
    "fault_h_per_day": 0.0,
}


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=TZ)


def build_history(url: str) -> None:
    """Write the months above as the ingest stores them and materialize each day's KPIs."""
    lathe = device_key(url, "ent-a", "lathe-1")
    grinder = device_key(url, "ent-a", "grinder-1")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO gateway_boots (enterprise_id, gateway_id, boot, first_seen_at)
               VALUES ('ent-a', 'gw-ent-a', 'boot-1', %s)""",
            (at(BASELINE_DAYS[0], 9),),
        )
        for day in BASELINE_DAYS:
            add_interval(conn, lathe, "running", at(day, 0), at(day, 6))
            add_interval(conn, lathe, "fault", at(day, 6), at(day, 7))
            add_interval(conn, lathe, "idle", at(day, 7), at(day, 8))
            add_interval(conn, lathe, "off", at(day, 8), at(day, 23))
            add_interval(conn, grinder, "idle", at(day, 0), at(day, 4))
            _count(conn, lathe, day, parts=100, rejects=10, kwh=50)
        for day in MAY_DAYS:
            add_interval(conn, lathe, "running", at(day, 0), at(day, 12))
            add_interval(conn, lathe, "idle", at(day, 12), at(day, 14))
            add_interval(conn, grinder, "running", at(day, 0), at(day, 6))
            _count(conn, lathe, day, parts=200, rejects=4, kwh=80)
        add_interval(conn, lathe, "running", at(JUNE_DAY, 0), at(JUNE_DAY, 12))
        add_interval(conn, grinder, "idle", at(JUNE_DAY, 0), at(JUNE_DAY, 2))
        _count(conn, lathe, JUNE_DAY, parts=300, rejects=3, kwh=90)
    asyncio.run(_materialize(url, [*BASELINE_DAYS, *MAY_DAYS, JUNE_DAY, EMPTY_DAY]))


def _count(conn: psycopg.Connection, key: int, day: date, *, parts: float, rejects: float,
           kwh: float) -> None:  # fmt: skip
    add_increment(conn, key, "part_count", at(day, 3), parts)
    add_increment(conn, key, "reject_count", at(day, 3), rejects)
    add_increment(conn, key, "active_energy", at(day, 3), kwh)


async def _materialize(url: str, days: list[date]) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for day in days:
            await kpis.refresh_day(conn, KpiSettings(), day, NOW)

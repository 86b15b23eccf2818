"""KPIs on constructed data with known answers, against the real schema on PostgreSQL.

The day: 2025-06-10 in Asia/Shanghai, evaluated at 12:00 local (12 h = 43,200 s of calendar time).

- lathe-1 (ent-a, rated cycle 30 s): running 00-06, idle 06-08, running 08-now (open); parts
  100 + 200 (after a counter reset) + 50, rejects 10; 120 kWh (one uint16 wrap); in alarm? no.
- grinder-1 (ent-a): running from 00:00 (open interval), last sample at 06:00: offline mid-day, so
  running ends at 06:00 + the 180 s online window.
- grinder-2 (ent-a): never reported.
- press-1 (ent-b): off since yesterday 20:00 (open), reporting, alarm active, 5 kWh.
- hobber-1 (ent-c): idle 09-12 reported only yesterday's last sample: not networked today? It
  reported 23 h ago, so networked but not online.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from monitoring_data import add_increment, add_interval, device_key, set_current, set_state

from monitoring import kpis
from monitoring.api.views import device_row
from monitoring.settings import KpiSettings

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2025, 6, 10)


def local(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


NOW = local(12)
SETTINGS = KpiSettings()


def build_day(url: str) -> dict[str, int]:
    keys = {d: device_key(url, e, d) for e, d in
            [("ent-a", "lathe-1"), ("ent-a", "grinder-1"), ("ent-a", "grinder-2"),
             ("ent-b", "press-1"), ("ent-c", "hobber-1")]}  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        lathe, grinder, press, hobber = (
            keys["lathe-1"],
            keys["grinder-1"],
            keys["press-1"],
            keys["hobber-1"],
        )
        add_interval(conn, lathe, "running", local(0), local(6))
        add_interval(conn, lathe, "idle", local(6), local(8))
        add_interval(conn, lathe, "running", local(8), None)
        set_state(conn, lathe, "running", local(8), NOW - timedelta(seconds=10))
        set_current(conn, lathe, "machine_state", NOW - timedelta(seconds=10), None, "running")
        set_current(conn, lathe, "alarm_active", NOW - timedelta(seconds=10), 0)
        add_increment(conn, lathe, "part_count", local(1), 100)
        add_increment(conn, lathe, "part_count", local(7), 200, event=1)  # after a shift reset
        add_increment(conn, lathe, "part_count", local(11, 59), 50)
        add_increment(conn, lathe, "reject_count", local(9), 10)
        add_increment(conn, lathe, "active_energy", local(3), 70)
        add_increment(conn, lathe, "active_energy", local(10), 50, event=2)  # across a wrap
        add_increment(conn, lathe, "part_count", local(23, day=DAY - timedelta(days=1)), 999)

        add_interval(conn, grinder, "running", local(0), None)
        set_state(conn, grinder, "running", local(0), local(6))
        set_current(conn, grinder, "machine_state", local(6), None, "running")

        add_interval(conn, press, "off", local(20, day=DAY - timedelta(days=1)), None)
        set_state(
            conn, press, "off", local(20, day=DAY - timedelta(days=1)), NOW - timedelta(seconds=5)
        )
        set_current(conn, press, "machine_state", NOW - timedelta(seconds=5), None, "off")
        set_current(conn, press, "alarm_active", NOW - timedelta(seconds=5), 1)
        add_increment(conn, press, "active_energy", local(5), 5)

        add_interval(conn, hobber, "idle", local(12, day=DAY - timedelta(days=1)),
                     local(13, day=DAY - timedelta(days=1)))  # fmt: skip
        set_current(conn, hobber, "spindle_speed", NOW - timedelta(hours=23), 0)
    return keys


async def _figures(url: str, refresh_at: datetime | None) -> list[kpis.DeviceFigures]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if refresh_at is not None:
            await kpis.refresh_day(conn, SETTINGS, DAY, refresh_at)
        window = kpis.window_for(SETTINGS, NOW)
        return await kpis.device_figures(conn, SETTINGS, window, NOW)


@pytest.mark.parametrize(
    "refresh_at", [None, local(10), local(12)], ids=["all-live", "refreshed-10h", "refreshed-now"]
)
def test_city_kpis_match_the_constructed_day(
    monitoring_db: str, refresh_at: datetime | None
) -> None:
    build_day(monitoring_db)
    figures = asyncio.run(_figures(monitoring_db, refresh_at))
    city = kpis.total(figures).as_dict()
    assert city["registered"] == 5
    assert city["networked"] == 4  # grinder-2 never reported
    assert city["online"] == 2  # lathe-1, press-1
    assert city["running"] == 1  # lathe-1
    assert city["running_rate"] == pytest.approx(1 / 4, abs=1e-4)
    assert city["ran_today"] == 2  # lathe-1 and grinder-1 (until it went offline)
    running = 10 * 3600 + (6 * 3600 + 180)
    reported = 3  # lathe-1, grinder-1, press-1 reported today; hobber-1 only yesterday
    assert city["utilization"] == pytest.approx(running / (reported * 43_200), abs=1e-4)
    assert city["output"] == 350  # yesterday's 999 excluded; the reset's increment counted once
    assert city["reject"] == 10
    assert city["good"] == 340
    assert city["energy_kwh"] == pytest.approx(125)
    assert city["kwh_per_part"] == pytest.approx(125 / 350, abs=1e-4)
    assert city["oee"] == pytest.approx(340 * 30 / 43_200, abs=1e-4)
    assert city["alarms_active"] == 1


def test_device_offline_mid_day_stops_counting_running_time(monitoring_db: str) -> None:
    build_day(monitoring_db)
    figures = {f.device_id: f for f in asyncio.run(_figures(monitoring_db, local(10)))}
    grinder = figures["grinder-1"]
    assert grinder.running_s == pytest.approx(6 * 3600 + 180)
    assert not grinder.is_online and grinder.is_networked
    assert grinder.current_state == "offline"
    never = figures["grinder-2"]
    assert (never.reported, never.is_networked, never.running_s, never.parts) == (
        False,
        False,
        0,
        None,
    )


def test_a_device_online_without_a_machine_state_is_shown_online(monitoring_db: str) -> None:
    """An energy meter reports power, never a machine state: counted online, so its badge must
    not say offline."""
    build_day(monitoring_db)
    meter = device_key(monitoring_db, "ent-a", "grinder-2")
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        set_current(conn, meter, "active_power", NOW - timedelta(seconds=20), 3.2)
    figures = {f.device_id: f for f in asyncio.run(_figures(monitoring_db, None))}
    fig = figures["grinder-2"]
    assert fig.is_online and fig.state is None
    assert fig.current_state == "online"
    row = device_row(fig, with_kpis=False)
    assert (row["online"], row["state"]) == (True, "online")
    assert kpis.total(list(figures.values())).online == 3  # lathe-1, press-1 and the meter


def test_breakdowns_by_segment_and_enterprise(monitoring_db: str) -> None:
    build_day(monitoring_db)
    figures = asyncio.run(_figures(monitoring_db, local(11)))
    by_segment = {k: v.as_dict() for k, v in kpis.aggregate(figures, lambda f: f.segment).items()}
    assert by_segment["345"]["registered"] == 4 and by_segment["367"]["registered"] == 1
    assert by_segment["367"]["running_rate"] == 0.0
    assert by_segment["367"]["energy_kwh"] == 5
    by_ent = kpis.aggregate(figures, lambda f: f.enterprise)
    assert by_ent["ent-a"].as_dict()["networked_rate"] == pytest.approx(2 / 3, abs=1e-4)
    alarms = kpis.alarm_summary(figures)
    assert alarms == {
        "active": 1,
        "by_severity": {"critical": 0, "warning": 1},
        "by_kind": {"press": 1},
    }


def _enterprise_day(
    conn: psycopg.Connection[Any], ent: str, day: date, parts: float, energy: float
) -> None:
    conn.execute(
        """INSERT INTO kpi_enterprise_daily (day, enterprise_id, devices, reported, running_s,
               calendar_s, parts, energy_kwh) VALUES (%s, %s, 1, 1, 0, 86400, %s, %s)""",
        (day, ent, parts, energy),
    )


def test_warning_colours_against_each_enterprises_own_baseline(monitoring_db: str) -> None:
    yesterday = DAY - timedelta(days=1)
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        for n in range(2, 16):
            _enterprise_day(conn, "ent-a", DAY - timedelta(days=n), 1000, 500)
            _enterprise_day(conn, "ent-b", DAY - timedelta(days=n), 200, 100)
        _enterprise_day(conn, "ent-a", yesterday, 400, 300)  # output 40 %: red
        _enterprise_day(conn, "ent-b", yesterday, 190, 145)  # output 95 %, energy 145 %: blue

    async def run() -> dict[str, kpis.Warning_]:
        async with await psycopg.AsyncConnection.connect(monitoring_db) as conn:
            return await kpis.enterprise_warnings(conn, SETTINGS, NOW)

    warnings = asyncio.run(run())
    assert warnings["ent-a"].colour == "red"
    assert warnings["ent-a"].as_dict()["output_ratio"] == 0.4
    assert warnings["ent-b"].colour == "blue"
    assert warnings["ent-c"].colour == "grey"  # no baseline


def test_daily_export_rows_come_from_the_materialized_day(monitoring_db: str) -> None:
    build_day(monitoring_db)

    async def run() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(monitoring_db, autocommit=True) as conn:
            await kpis.refresh_day(conn, SETTINGS, DAY, local(23, 59) + timedelta(minutes=2))
            return await kpis.daily_export_rows(conn, DAY)

    rows = {r["enterprise"]: r for r in asyncio.run(run())}
    assert rows["ent-a"]["output"] == 350 and rows["ent-a"]["devices"] == 3
    assert rows["ent-a"]["networked"] == 2
    assert rows["ent-b"]["energy_kwh"] == 5

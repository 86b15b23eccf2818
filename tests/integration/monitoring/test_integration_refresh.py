"""Which days the integration refresh recomputes: history that arrives later is picked up, and
finished days are not read again and again."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import psycopg
from monitoring_data import device_key, set_current, signal_id

from monitoring import integration, kpis
from monitoring.settings import KpiSettings

SETTINGS = KpiSettings()


def _refresh(url: str, *, recent: bool) -> list[date]:
    async def run() -> list[date]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await integration.refresh_daily(conn, SETTINGS, recent=recent)

    return asyncio.run(run())


def _add_samples(url: str, day: date, deliveries: bool) -> None:
    key = device_key(url, "ent-a", "lathe-1")
    start = kpis.day_start(SETTINGS, day)
    with psycopg.connect(url, autocommit=True) as conn:
        state = signal_id(conn, "machine_state")
        for minute in range(0, 24 * 60, 60):
            conn.execute(
                "INSERT INTO telemetry (ts, device_key, signal_id, quality, value_text) "
                "VALUES (%s, %s, %s, 0, 'running')",
                (start + timedelta(minutes=minute), key, state),
            )
        set_current(conn, key, "machine_state", start + timedelta(hours=23), None, "running")
        if deliveries:  # what the ingest's delay statistics record when it stores them
            conn.execute(
                """INSERT INTO ingest_delay_daily (day, device_key, deliveries, histogram,
                       sum_delay_s, max_delay_s, historical_deliveries, historical_max_delay_s)
                   VALUES (%s, %s, 0, %s, 0, 0, 24, 100)
                   ON CONFLICT (day, device_key) DO UPDATE SET updated_at = now()""",
                (day, key, [0] * 17),
            )


def test_past_days_are_refreshed_when_their_data_arrives_and_then_left_alone(
    monitoring_db: str,
) -> None:
    today = kpis.city_today(SETTINGS, datetime.now(UTC))
    old, older = today - timedelta(days=3), today - timedelta(days=5)
    assert _refresh(monitoring_db, recent=True) == [today]  # no data yet: nothing past
    _add_samples(monitoring_db, older, deliveries=True)
    assert _refresh(monitoring_db, recent=False) == [
        older + timedelta(days=n) for n in range(5)
    ]  # the day with data, and the days after it (outages until data says otherwise)
    assert _refresh(monitoring_db, recent=False) == []  # done: not read again
    _add_samples(monitoring_db, old, deliveries=True)  # a backlog for a day refreshed empty
    assert _refresh(monitoring_db, recent=False) == [old]
    with psycopg.connect(monitoring_db) as conn:
        row = conn.execute(
            "SELECT samples, expected_signals FROM integration_device_daily WHERE day = %s",
            (old,),
        ).fetchone()
    assert row == (24, 1)
    yesterday_end = kpis.day_start(SETTINGS, today)
    in_grace = datetime.now(UTC) < yesterday_end + integration.LATE_DATA_GRACE
    recent = [today - timedelta(days=1), today] if in_grace else [today]
    assert _refresh(monitoring_db, recent=True) == recent  # late data may still come, or not

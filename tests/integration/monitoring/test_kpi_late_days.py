"""Days that receive data late (a backfill, a long replay) get their daily KPIs recomputed.

The regular refresh revisits only today and yesterday. Known answer: a day five days back is
refreshed while empty (0 parts); then 120 parts and 30 kWh for it arrive late, as the writer
stores them (increments, the rollup invalidation on plain PostgreSQL, the late-data note). The
day must read 120 parts once the rollups took the data in: on plain PostgreSQL only after the
rollup refresh (before it, the note waits), on TimescaleDB after the refresh of the continuous
aggregates that ``refresh_late_days`` runs itself (their policy would take up to an hour).
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from monitoring_data import add_increment, add_interval, device_key, prepare_schema, seed_registry

from ingest.db.rollups import record_invalidation, refresh_rollups
from ingest.registry import sync_signals
from ingest.writer import note_late_data
from monitoring import kpis
from monitoring.db.migrate import migrate_all
from monitoring.settings import KpiSettings

SETTINGS = KpiSettings()
TZ = ZoneInfo(SETTINGS.timezone)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def _refresh(url: str, now: datetime) -> list[date]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await kpis.refresh_daily(conn, SETTINGS, now=now)


def _stored(url: str, day: date) -> tuple[float, float] | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT parts, energy_kwh FROM kpi_enterprise_daily "
            "WHERE day = %s AND enterprise_id = 'ent-a'",
            (day,),
        ).fetchone()
    return (float(row[0]), float(row[1])) if row else None


@pytest.fixture()
def late_db(pg_url: str, storage_path: str) -> str:
    """The monitoring registry on the test's storage path (``monitoring_db`` is always plain)."""
    if storage_path == "postgresql":
        prepare_schema(pg_url)
    else:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert migrate_all(conn).choice.path == "timescaledb"
            sync_signals(conn)
    seed_registry(pg_url)
    return pg_url


def test_a_late_day_is_recomputed_once_the_rollups_have_it(late_db: str, storage_path: str) -> None:
    url = late_db
    now = datetime.now(TZ).replace(microsecond=0)
    day = now.date() - timedelta(days=5)
    at = datetime.combine(day, datetime.min.time(), TZ) + timedelta(hours=10, minutes=7)
    key = device_key(url, "ent-a", "lathe-1")
    with psycopg.connect(url, autocommit=True) as conn:
        # Data from days earlier: the refresh treats the day as one after the first data, and
        # completes it with what it has then (nothing)
        add_interval(conn, key, "idle", at - timedelta(days=3), at - timedelta(days=3, hours=-1))
    with psycopg.connect(url, autocommit=True) as conn:
        if storage_path == "postgresql":
            # Materialized up to now, as a database migrated today (the fixture starts in 2000)
            conn.execute(
                "UPDATE rollup_state SET materialized_to = date_trunc('minute', now(), 'UTC'), "
                "pending_to = date_trunc('minute', now(), 'UTC')"
            )
            refresh_rollups(conn, grace_s=0)
        else:
            for view in kpis.CONTINUOUS_AGGREGATES:
                conn.execute(
                    f"CALL refresh_continuous_aggregate('{view}'::regclass, NULL::timestamptz, NULL::timestamptz)"
                )
    asyncio.run(_refresh(url, now))
    assert _stored(url, day) == (0.0, 0.0)

    with psycopg.connect(url) as conn:  # one transaction, as the writer's flush
        add_increment(conn, key, "part_count", at, 100)
        add_increment(conn, key, "part_count", at + timedelta(hours=2), 20)
        add_increment(conn, key, "active_energy", at + timedelta(hours=1), 30)
        if storage_path == "postgresql":
            record_invalidation(conn, _ms(at), _ms(at + timedelta(hours=2)))
        note_late_data(conn, _ms(at), _ms(at + timedelta(hours=2)))
        conn.commit()

    if storage_path == "postgresql":
        # The rollups do not have the data yet: the note waits, the day keeps its old figures
        asyncio.run(_refresh(url, now))
        assert _stored(url, day) == (0.0, 0.0)
        with psycopg.connect(url) as conn:
            refresh_rollups(conn, grace_s=0)
    asyncio.run(_refresh(url, now))
    assert _stored(url, day) == (120.0, 30.0)
    with psycopg.connect(url, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM kpi_late_data").fetchone()
    assert left == (0,)


def test_recent_samples_are_not_noted_as_late(monitoring_db: str) -> None:
    now_ms = _ms(datetime.now(TZ))
    with psycopg.connect(monitoring_db) as conn:
        note_late_data(conn, now_ms - 3_600_000, now_ms)  # an hour old: today's refresh has it
        note_late_data(conn, now_ms - 2 * 86_400_000, now_ms)
        conn.commit()
        rows = conn.execute("SELECT count(*) FROM kpi_late_data").fetchone()
    assert rows == (1,)


def test_yesterday_is_revisited_every_round_only_while_it_settles(monitoring_db: str) -> None:
    """Yesterday, complete, is refreshed every round for SETTLING_S after midnight, then once every
    SETTLED_DAY_EVERY_S; today every round."""
    midnight = datetime.combine(datetime.now(TZ).date(), datetime.min.time(), TZ)
    today, yesterday = midnight.date(), midnight.date() - timedelta(days=1)

    def refreshed(now: datetime) -> set[date]:
        return set(asyncio.run(_refresh(monitoring_db, now))) & {today, yesterday}

    assert refreshed(midnight + timedelta(minutes=1)) == {today, yesterday}
    assert refreshed(midnight + timedelta(minutes=2)) == {today, yesterday}  # still settling
    settled = midnight + timedelta(seconds=kpis.SETTLING_S + 60)
    assert refreshed(settled) == {today}  # refreshed moments ago, complete
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        conn.execute(
            "UPDATE kpi_daily_state SET refreshed_at = now() - make_interval(secs => %s) "
            "WHERE day = %s",
            (kpis.SETTLED_DAY_EVERY_S, yesterday),
        )
    assert refreshed(settled + timedelta(minutes=2)) == {today, yesterday}
    assert refreshed(settled + timedelta(minutes=3)) == {today}

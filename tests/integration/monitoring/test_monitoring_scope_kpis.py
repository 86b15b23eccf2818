"""The pages' KPIs summed in the database (``kpis.scope_kpis``) and today's figures taken from the
last refresh (``kpis.page_window``), on the constructed day of test_monitoring_kpis.py.

scope_kpis must give what summing the device rows in Python gives (``breakdown``,
``alarm_summary``) for every kind of window; a page must say when its figures stop at a refresh,
and compute live when the refresh is behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from test_monitoring_kpis import DAY, NOW, SETTINGS, build_day, local

from monitoring import kpis
from monitoring.api import views
from monitoring.api.access import Reach
from monitoring.api.deps import Caller
from monitoring.api.scopes import Scope
from monitoring.auth import Principal, Role

ADMIN = Caller(Principal(0, Role.ADMIN), Reach())
GROUPINGS = ("segment", "district", "enterprise")


def _as_dicts(groups: dict[Hashable, kpis.Kpis]) -> dict[Hashable, dict[str, Any]]:
    return {key: value.as_dict() for key, value in groups.items()}


async def _both_ways(
    conn: psycopg.AsyncConnection[Any], window: kpis.Window, scope: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    figures = await kpis.device_figures(conn, SETTINGS, window, NOW, **scope)
    whole, groups = kpis.breakdown(figures, *(lambda f, g=g: getattr(f, g) for g in GROUPINGS))
    in_python = {
        "total": whole.as_dict(),
        **{g: _as_dicts(groups[i]) for i, g in enumerate(GROUPINGS)},
        "alarms": kpis.alarm_summary(figures),
    }
    summed = await kpis.scope_kpis(conn, SETTINGS, window, NOW, GROUPINGS, **scope)
    in_sql = {
        "total": summed.total.as_dict(),
        **{g: _as_dicts(summed.groups[g]) for g in GROUPINGS},
        "alarms": summed.alarms,
    }
    return in_python, in_sql


@pytest.mark.parametrize(
    "refresh_at",
    [None, local(10), local(11, 59) + timedelta(seconds=30), local(12)],
    ids=["all-live", "refreshed-10h", "refreshed-a-minute-ago", "refreshed-now"],
)
def test_scope_kpis_are_the_device_rows_summed(
    monitoring_db: str, refresh_at: datetime | None
) -> None:
    build_day(monitoring_db)

    async def run() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        async with await psycopg.AsyncConnection.connect(monitoring_db, autocommit=True) as conn:
            if refresh_at is not None:
                await kpis.refresh_day(conn, SETTINGS, DAY, refresh_at)
            await kpis.refresh_day(conn, SETTINGS, DAY - timedelta(days=1), NOW)
            windows = {
                "today live": kpis.window_for(SETTINGS, NOW),
                "today as a page": await kpis.page_window(conn, SETTINGS, NOW),
                "two days": await kpis.page_window(conn, SETTINGS, NOW, DAY - timedelta(days=1)),
                "yesterday and today": kpis.window_for(SETTINGS, NOW, DAY - timedelta(days=1), DAY),
                "yesterday": kpis.window_for(
                    SETTINGS, NOW, DAY - timedelta(days=1), DAY - timedelta(days=1)
                ),
            }
            # The counts of now from the status snapshot, taken now, instead of per device.
            await kpis.refresh_status(conn, SETTINGS, NOW)
            windows["today as a page, status snapshot"] = await kpis.page_window(
                conn, SETTINGS, NOW
            )
            stored = [name for name, window in windows.items() if kpis.reads_stored_day(window)]
            # The one-day windows a refresh covers read kpi_kind_daily, the rest the device rows.
            fresh = refresh_at is not None and NOW - refresh_at <= timedelta(minutes=5)
            assert stored == (
                ["today as a page", "yesterday", "today as a page, status snapshot"]
                if fresh
                else ["yesterday"]
            )
            snapshot = windows["today as a page, status snapshot"]
            assert snapshot.status_at == (NOW if fresh else None)
            assert windows["today as a page"].status_at is None
            out = []
            for name, window in windows.items():
                for scope in (
                    {},
                    {"segment": "345"},
                    {"district": "210211"},
                    {"enterprise": "ent-a"},
                    {"district": "210202"},  # no enterprise there: zeros, not an error
                ):
                    out.append((f"{name} {scope}", *await _both_ways(conn, window, scope)))
            return out

    compared = asyncio.run(run())
    city = compared[0][2]
    assert city["total"]["registered"] == 5 and city["total"]["output"] == 350  # not vacuous
    for name, in_python, in_sql in compared:
        assert in_sql == in_python, name


def _overview(url: str, refresh_at: datetime | None) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            if refresh_at is not None:
                await kpis.refresh_day(conn, SETTINGS, DAY, refresh_at)
            return await views.overview(conn, SETTINGS, NOW)

    return asyncio.run(run())


def test_a_page_takes_today_from_a_fresh_refresh_and_says_up_to_when(monitoring_db: str) -> None:
    """Refreshed at 11:59:30 (through 11:59): lathe-1's 50 parts of 11:59 are not in yet; online,
    running and alarms are as of now all the same."""
    build_day(monitoring_db)
    page = _overview(monitoring_db, local(11, 59) + timedelta(seconds=30))
    assert page["window"]["live"] is False
    assert datetime.fromisoformat(page["window"]["end"]) == local(11, 59)
    summary = page["summary"]
    assert summary["output"] == 300
    assert (summary["online"], summary["running"], summary["alarms_active"]) == (2, 1, 1)
    # running hours up to 11:59 over the 11 h 59 min covered (3 devices reported)
    running = (10 * 3600 - 60) + (6 * 3600 + 180)
    assert summary["utilization"] == pytest.approx(running / (3 * (43_200 - 60)), abs=1e-4)

    # The next refresh brings the last minute in.
    page = _overview(monitoring_db, NOW)
    assert page["window"]["live"] is False and page["summary"]["output"] == 350


def test_a_page_computes_live_when_the_refresh_is_behind(monitoring_db: str) -> None:
    """A refresh older than REFRESH_FRESH_S (here 2 h): the minutes since are computed live, so
    the page shows the known answers up to now."""
    build_day(monitoring_db)
    page = _overview(monitoring_db, local(10))
    assert page["window"]["live"] is True
    assert datetime.fromisoformat(page["window"]["end"]) == NOW.astimezone(UTC)
    assert page["summary"]["output"] == 350
    # No refresh of today at all: live as well.
    assert _overview(monitoring_db, None)["window"]["live"] is True


def test_group_and_enterprise_pages_use_the_same_window(monitoring_db: str) -> None:
    build_day(monitoring_db)

    async def run() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(monitoring_db, autocommit=True) as conn:
            await kpis.refresh_day(conn, SETTINGS, DAY, local(11, 59) + timedelta(seconds=30))
            return [
                await views.group_page(conn, SETTINGS, ADMIN, Scope("segment", "345"), NOW),
                await views.enterprise_page(conn, SETTINGS, ADMIN, "ent-a", NOW),
            ]

    segment, enterprise = asyncio.run(run())
    for page in (segment, enterprise):
        assert page["window"]["live"] is False
        assert datetime.fromisoformat(page["window"]["end"]) == local(11, 59)
    ent_a = next(e for e in segment["enterprises"] if e["id"] == "ent-a")
    assert ent_a["kpis"] == enterprise["summary"]
    assert enterprise["summary"]["output"] == 300


def test_a_stored_day_keeps_a_devices_sums_when_it_changes_kind_after_the_refresh(
    monitoring_db: str,
) -> None:
    """kpi_kind_daily holds the day per enterprise and machine kind as the refresh saw them: a
    device re-registered as another kind keeps its output in the totals until the next refresh
    regroups it, and is counted (registered, online) under its new kind at once."""
    build_day(monitoring_db)

    kinds = "SELECT kind, output FROM kpi_kind_daily WHERE day = %s AND enterprise_id = 'ent-a'"
    status = "SELECT kind, registered FROM kpi_status WHERE enterprise_id = 'ent-a'"

    seen_status: list[dict[str, int]] = []

    async def run() -> list[tuple[kpis.ScopeKpis, dict[str, float]]]:
        async with await psycopg.AsyncConnection.connect(monitoring_db, autocommit=True) as conn:
            await kpis.refresh_day(conn, SETTINGS, DAY, NOW)
            window = await kpis.page_window(conn, SETTINGS, NOW)
            assert kpis.reads_stored_day(window)
            await kpis.refresh_status(conn, SETTINGS, NOW)
            seen_status.append(dict(await (await conn.execute(status)).fetchall()))
            # lathe-1, the only lathe of ent-a, made all 350 parts.
            await conn.execute(
                "UPDATE devices SET machine_kind = 'welder' WHERE device_id = 'lathe-1'"
            )
            seen = []
            for _ in range(2):  # before the next refresh, then after it
                summed = await kpis.scope_kpis(conn, SETTINGS, window, NOW, ("enterprise",))
                stored = dict(await (await conn.execute(kinds, (DAY,))).fetchall())
                seen.append((summed, stored))
                await kpis.refresh_day(conn, SETTINGS, DAY, NOW)
                await kpis.refresh_status(conn, SETTINGS, NOW)
                seen_status.append(dict(await (await conn.execute(status)).fetchall()))
            return seen

    (before, stored_before), (after, stored_after) = asyncio.run(run())
    # The status snapshot regroups at once: the lathe's row goes, the welder's comes.
    assert seen_status[0] == {"cnc_lathe": 1, "grinder": 2}
    assert seen_status[-1] == {"welder": 1, "grinder": 2}
    assert stored_before["cnc_lathe"] == 350 and "welder" not in stored_before
    assert stored_after["welder"] == 350 and "cnc_lathe" not in stored_after
    for summed in (before, after):
        assert summed.total.output == 350 and summed.total.registered == 5
        assert summed.groups["enterprise"]["ent-a"].output == 350
        assert summed.groups["enterprise"]["ent-a"].registered == 3
        assert summed.total.online == 2


def test_the_migration_fills_kpi_kind_daily_as_the_refresh_does(monitoring_db: str) -> None:
    """0123 computes every stored day's rows from kpi_device_daily; they must be the rows
    refresh_day writes (both are checked against each other on the constructed days)."""
    from importlib import resources

    build_day(monitoring_db)
    backfill = (
        resources.files("monitoring.db.migrations")
        .joinpath("0123_kpi_kind_daily.sql")
        .read_text(encoding="utf-8")
    )
    backfill = backfill[backfill.index("INSERT INTO kpi_kind_daily") :]
    query = "SELECT * FROM kpi_kind_daily ORDER BY day, enterprise_id, kind"

    async def run() -> tuple[list[Any], list[Any]]:
        async with await psycopg.AsyncConnection.connect(monitoring_db, autocommit=True) as conn:
            await kpis.refresh_day(conn, SETTINGS, DAY, local(11, 59) + timedelta(seconds=30))
            await kpis.refresh_day(conn, SETTINGS, DAY - timedelta(days=1), NOW)
            refreshed = await (await conn.execute(query)).fetchall()
            await conn.execute("DELETE FROM kpi_kind_daily")
            await conn.execute(backfill)
            return refreshed, await (await conn.execute(query)).fetchall()

    refreshed, migrated = asyncio.run(run())
    assert len(refreshed) >= 5 and {row[0] for row in refreshed} == {DAY - timedelta(days=1), DAY}
    assert migrated == refreshed


def test_the_status_snapshot_counts_now_until_it_is_too_old(monitoring_db: str) -> None:
    """Pages take online, running and alarms from the snapshot while it is at most
    STATUS_FRESH_S old, and say when it was taken; after that they count for themselves."""
    build_day(monitoring_db)

    async def run() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(monitoring_db, autocommit=True) as conn:
            await kpis.refresh_day(conn, SETTINGS, DAY, NOW)
            await kpis.refresh_status(conn, SETTINGS, NOW - timedelta(seconds=10))
            # lathe-1 goes offline after the snapshot: the page shows the snapshot's counts
            await conn.execute(
                "UPDATE device_states SET state = 'offline' WHERE device_key = "
                "(SELECT key FROM devices WHERE device_id = 'lathe-1')"
            )
            pages = [await views.overview(conn, SETTINGS, NOW)]
            late = NOW + timedelta(seconds=kpis.STATUS_FRESH_S)
            pages.append(await views.overview(conn, SETTINGS, late))
            return pages

    taken, too_old = asyncio.run(run())
    assert datetime.fromisoformat(taken["window"]["status_at"]) == NOW - timedelta(seconds=10)
    assert (taken["summary"]["online"], taken["summary"]["running"]) == (2, 1)
    assert too_old["window"]["status_at"] is None
    assert (too_old["summary"]["online"], too_old["summary"]["running"]) == (1, 0)


def test_refreshing_a_finished_day_again_rewrites_none_of_its_rows(monitoring_db: str) -> None:
    """A second refresh of a day whose data did not change leaves every stored row as it was
    (the same row version, ``xmin``), and a changed device rewrites only the rows it is in:
    rewriting 10,000 device and 500 enterprise rows per round left that many dead rows."""
    build_day(monitoring_db)
    past = DAY - timedelta(days=1)
    tables = ("kpi_device_daily", "kpi_enterprise_daily", "kpi_kind_daily")

    async def versions(conn: psycopg.AsyncConnection[Any]) -> dict[str, list[Any]]:
        found = {}
        for table in tables:
            cur = await conn.execute(
                f"SELECT xmin::text, * FROM {table} WHERE day = %s ORDER BY 2, 3, 4", (past,)
            )
            found[table] = await cur.fetchall()
        return found

    async def run() -> tuple[dict[str, list[Any]], ...]:
        async with await psycopg.AsyncConnection.connect(monitoring_db, autocommit=True) as conn:
            await kpis.refresh_day(conn, SETTINGS, past, NOW)
            first = await versions(conn)
            await kpis.refresh_day(conn, SETTINGS, past, NOW)
            again = await versions(conn)
            await conn.execute(
                "UPDATE kpi_device_daily SET parts = parts + 1 WHERE day = %s AND device_key = "
                "(SELECT min(device_key) FROM kpi_device_daily WHERE day = %s)",
                (past, past),
            )
            await kpis.refresh_day(conn, SETTINGS, past, NOW)
            return first, again, await versions(conn)

    first, again, after_change = asyncio.run(run())
    assert all(first[t] for t in tables), first
    assert again == first
    # The device row was put back by the refresh; its enterprise and kind rows did not change.
    changed = [t for t in tables if after_change[t] != first[t]]
    assert changed == ["kpi_device_daily"], changed
    rewritten = [
        new
        for old, new in zip(
            first["kpi_device_daily"], after_change["kpi_device_daily"], strict=True
        )
        if old != new
    ]
    assert len(rewritten) == 1 and rewritten[0][1:] == first["kpi_device_daily"][0][1:]

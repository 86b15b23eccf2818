"""Compute the monitoring KPIs from stored data; docs/kpis.md defines each one precisely.

Two layers keep the overview fast at city scale:

1. ``refresh_daily`` materializes per-device and per-enterprise daily figures (kpi_device_daily,
   kpi_enterprise_daily) for [day start, ``through``) from the rollup views (counter_1h, counter_1m)
   and state_intervals. The service refreshes today and yesterday every minute.
2. ``device_figures`` reads those rows for a range of days and, when the range includes today,
   adds the minutes after ``through`` live from counter_1m and state_intervals, plus the present
   (last sample, machine state, alarms) from current_values and device_states.

``aggregate`` then sums device figures into KPIs for any grouping (city, segment, district,
enterprise, device) in Python: one query serves every level of the overview.
"""

from __future__ import annotations

import functools
import logging
import statistics
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, NamedTuple
from zoneinfo import ZoneInfo

import orjson
from psycopg import AsyncConnection
from psycopg.errors import LockNotAvailable
from psycopg.rows import dict_row

from monitoring.settings import KpiSettings

log = logging.getLogger(__name__)

COUNTER_BASES: Final = ("part_count", "good_count", "reject_count", "active_energy")
ACTIVE_STATES: Final = ("running", "idle", "setup", "fault")
"""States that count as planned (powered and reporting) time; off and offline do not."""


# --------------------------------------------------------------------------- calendar


def city_today(settings: KpiSettings, now: datetime) -> date:
    return now.astimezone(ZoneInfo(settings.timezone)).date()


def day_start(settings: KpiSettings, day: date) -> datetime:
    """Midnight of ``day`` in the city's time zone, as an aware UTC datetime."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(settings.timezone)).astimezone(UTC)


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


# --------------------------------------------------------------------------- SQL pieces

# Each device's newest sample time and alarm flag come from device_presence (one row per device,
# kept exact by triggers on current_values: ingest migration 0009), not from current_values (one
# row per device and signal). The alias stays ``cv`` so the scope joins read the same.
_SEEN = """
    SELECT cv.device_key, cv.last_seen FROM device_presence cv {join}"""

# Intervals overlapping [a, b): three index-friendly parts instead of one OR (see 0102's index).
# An open interval ends, for KPIs, when the device stopped reporting (last sample plus the online
# window), so a device that fell silent without a disconnect message is not counted as running.
_STATE_SECONDS = """
    SELECT i.device_key,
        sum(greatest(0, extract(epoch FROM least(coalesce(i.ended_at,
              greatest(i.started_at, s.last_seen + make_interval(secs => %(online_s)s))), {b})
            - greatest(i.started_at, {a})))) FILTER (WHERE i.state = 'running') AS running_s,
        sum(greatest(0, extract(epoch FROM least(coalesce(i.ended_at,
              greatest(i.started_at, s.last_seen + make_interval(secs => %(online_s)s))), {b})
            - greatest(i.started_at, {a})))) FILTER (WHERE i.state IN
            ('running', 'idle', 'setup', 'fault')) AS planned_s,
        sum(greatest(0, extract(epoch FROM least(coalesce(i.ended_at,
              greatest(i.started_at, s.last_seen + make_interval(secs => %(online_s)s))), {b})
            - greatest(i.started_at, {a})))) FILTER (WHERE i.state = 'fault') AS fault_s
    FROM (
        SELECT device_key, state, started_at, ended_at FROM state_intervals
            WHERE started_at >= {a} AND started_at < {b}
        UNION ALL
        SELECT device_key, state, started_at, ended_at FROM state_intervals
            WHERE started_at < {a} AND ended_at > {a}
        UNION ALL
        SELECT device_key, state, started_at, ended_at FROM state_intervals
            WHERE started_at < {a} AND ended_at IS NULL
    ) i {join}
    LEFT JOIN {seen} s ON s.device_key = i.device_key
    GROUP BY i.device_key"""

_COUNTER_SUMS = """
    SELECT c.device_key,
        sum(c.increase) FILTER (WHERE g.base = 'part_count') AS parts,
        sum(c.increase) FILTER (WHERE g.base = 'good_count') AS good,
        sum(c.increase) FILTER (WHERE g.base = 'reject_count') AS reject,
        sum(c.increase) FILTER (WHERE g.base = 'active_energy') AS energy_kwh
    FROM ({source}) c
    JOIN signals g ON g.id = c.signal_id AND g.base IN
        ('part_count', 'good_count', 'reject_count', 'active_energy')
    {join}
    GROUP BY c.device_key"""

_COUNTERS_WINDOW = """
    SELECT device_key, signal_id, increase FROM counter_1h
        WHERE bucket >= {a} AND bucket < date_trunc('hour', {b}, 'UTC')
    UNION ALL
    SELECT device_key, signal_id, increase FROM counter_1m
        WHERE bucket >= greatest({a}, date_trunc('hour', {b}, 'UTC')) AND bucket < {b}"""


# --------------------------------------------------------------------------- daily refresh


def _update_changed(alias: str, columns: str) -> str:
    """``ON CONFLICT``'s update of ``columns`` that leaves a row alone when none of them changed:
    a refreshed row that is the same as before (a stopped device, a past day, a count that held)
    then costs no new row version to write and vacuum."""
    cols = [c.strip() for c in columns.split(",")]
    return f"""DO UPDATE SET {", ".join(f"{c} = EXCLUDED.{c}" for c in cols)}
    WHERE ({", ".join(f"{alias}.{c}" for c in cols)})
          IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in cols)})"""


_DEVICE_DAILY_COLUMNS: Final = (
    "enterprise_id, reported, running_s, planned_s, parts, good, reject, energy_kwh, fault_s"
)

_REFRESH_DEVICES = f"""
WITH seen AS ({_SEEN.format(join="")}),
states AS ({_STATE_SECONDS.format(a="%(a)s", b="%(b)s", join="", seen="seen")}),
counters AS ({_COUNTER_SUMS.format(source=_COUNTERS_WINDOW.format(a="%(a)s", b="%(b)s"), join="")})
INSERT INTO kpi_device_daily AS k (day, device_key, enterprise_id, reported, running_s, planned_s,
                                    parts, good, reject, energy_kwh, fault_s)
SELECT %(day)s, d.key, d.enterprise_id,
       coalesce(st.planned_s, 0) > 0 OR c.device_key IS NOT NULL
           OR coalesce(s.last_seen >= %(a)s AND s.last_seen < %(b)s, false),
       coalesce(st.running_s, 0), coalesce(st.planned_s, 0),
       c.parts, c.good, c.reject, c.energy_kwh, coalesce(st.fault_s, 0)
FROM devices d
LEFT JOIN seen s ON s.device_key = d.key
LEFT JOIN states st ON st.device_key = d.key
LEFT JOIN counters c ON c.device_key = d.key
ON CONFLICT (day, device_key) {_update_changed("k", _DEVICE_DAILY_COLUMNS)}
"""

_ENTERPRISE_DAILY_COLUMNS: Final = (
    "devices, reported, running_s, calendar_s, parts, good, reject, energy_kwh, fault_s"
)

_REFRESH_ENTERPRISES: Final = f"""
INSERT INTO kpi_enterprise_daily AS k (day, enterprise_id, {_ENTERPRISE_DAILY_COLUMNS})
SELECT day, enterprise_id, count(*), count(*) FILTER (WHERE reported),
       sum(running_s), count(*) FILTER (WHERE reported) * %(covered_s)s,
       coalesce(sum(parts), 0), sum(coalesce(good, parts - reject)),
       sum(coalesce(reject, parts - good)), coalesce(sum(energy_kwh), 0), sum(fault_s)
FROM kpi_device_daily WHERE day = %(day)s
GROUP BY day, enterprise_id
ON CONFLICT (day, enterprise_id) {_update_changed("k", _ENTERPRISE_DAILY_COLUMNS)}
"""


# The per-device rules of ``Kpis.add`` (good parts from parts - reject, OEE capped per device),
# applied to a day's device rows and summed per enterprise and machine kind: what a one-day page
# of the city, a segment or a district needs besides the counts of now (``_STORED_DAY``).
_DEVICE_RULES: Final = """
    coalesce(good, CASE WHEN parts IS NOT NULL AND reject IS NOT NULL
                        THEN greatest(parts - reject, 0) END) AS good_parts,
    coalesce(reject, CASE WHEN parts IS NOT NULL AND good IS NOT NULL
                          THEN greatest(parts - good, 0) END) AS reject_parts"""
_OEE_DEVICE: Final = (
    "coalesce(rated_cycle_s, 0) <> 0 AND parts IS NOT NULL AND good_parts IS NOT NULL "
    "AND planned_s > 0"
)

_KIND_COLUMNS: Final = (
    "devices, reported, ran, running_s, calendar_s, output, good, reject, energy_kwh, "
    "oee_good_s, oee_planned_s"
)

_KIND_SUMS: Final = f"""
WITH dev AS (
    SELECT k.*, coalesce(nullif(d.machine_kind, ''), 'other') AS kind, d.rated_cycle_s
    FROM kpi_device_daily k JOIN devices d ON d.key = k.device_key
    WHERE k.day = %(day)s
),
f AS (SELECT dev.*, {_DEVICE_RULES} FROM dev)
SELECT %(day)s::date AS day, enterprise_id, kind, count(*) AS devices,
    count(*) FILTER (WHERE reported) AS reported, count(*) FILTER (WHERE running_s > 0) AS ran,
    coalesce(sum(running_s) FILTER (WHERE reported), 0) AS running_s,
    count(*) FILTER (WHERE reported) * %(covered_s)s::float8 AS calendar_s,
    coalesce(sum(parts), 0) AS output, sum(good_parts) AS good, sum(reject_parts) AS reject,
    coalesce(sum(energy_kwh), 0) AS energy_kwh,
    coalesce(sum(least(good_parts * rated_cycle_s, planned_s)) FILTER (WHERE {_OEE_DEVICE}), 0)
        AS oee_good_s,
    coalesce(sum(planned_s) FILTER (WHERE {_OEE_DEVICE}), 0) AS oee_planned_s
FROM f GROUP BY enterprise_id, kind
"""


def _replace_rows(table: str, key: str, columns: str, source: str, scope: str = "true") -> str:
    """One statement that makes ``table``'s rows in ``scope`` those of ``source``: changed rows
    updated, new ones inserted, gone ones deleted, and an unchanged row left as it is. Rewriting
    every row each round (2,500 of them every 5 s for the status) leaves that many dead rows for
    autovacuum, and where it is off (some test servers) the table only grows."""
    keys = [k.strip() for k in key.split(",")]
    return f"""
WITH fresh AS ({source}),
upserted AS (
    INSERT INTO {table} AS t ({key}, {columns}) SELECT {key}, {columns} FROM fresh
    ON CONFLICT ({key}) {_update_changed("t", columns)}
)
DELETE FROM {table} t WHERE {scope} AND NOT EXISTS (
    SELECT 1 FROM fresh f WHERE {" AND ".join(f"f.{k} = t.{k}" for k in keys)})
"""


_REFRESH_KINDS: Final = _replace_rows(
    "kpi_kind_daily", "day, enterprise_id, kind", _KIND_COLUMNS, _KIND_SUMS, "t.day = %(day)s"
)


async def refresh_day(
    conn: AsyncConnection[Any], settings: KpiSettings, day: date, now: datetime | None = None
) -> datetime:
    """Materialize ``day``'s figures up to now (or its end); return the ``through`` stored."""
    now = now or datetime.now(UTC)
    start = day_start(settings, day)
    end = day_start(settings, day + timedelta(days=1))
    through = min(end, _floor_minute(now))
    if through <= start:
        return start
    params = {
        "day": day,
        "a": start,
        "b": through,
        "online_s": settings.online_window_s,
        "covered_s": (through - start).total_seconds(),
    }
    async with conn.transaction():
        await conn.execute(_REFRESH_DEVICES, params)
        await conn.execute(_REFRESH_ENTERPRISES, params)
        await conn.execute(_REFRESH_KINDS, params)
        await conn.execute(
            """INSERT INTO kpi_daily_state (day, through, refreshed_at) VALUES (%s, %s, now())
               ON CONFLICT (day) DO UPDATE SET through = EXCLUDED.through, refreshed_at = now()""",
            (day, through),
        )
    return through


async def refresh_daily(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    *,
    days_back: int = 1,
    now: datetime | None = None,
) -> list[date]:
    """Refresh today and ``days_back`` days before it, plus any day of the last 35 never completed.

    A past day of the ``days_back`` that is complete (refreshed after its end) is refreshed again
    only every ``SETTLED_DAY_EVERY_S``, and every round in the ``SETTLING_S`` after its end, when
    its last samples still come in: recomputing yesterday every minute for data that rarely comes
    cost the city as much as today (4 s of a 10,000-device refresh, bench/monitoring.py)."""
    now = now or datetime.now(UTC)
    today = city_today(settings, now)
    days = {today} | await _past_days_due(conn, settings, today, days_back, now)
    cur = await conn.execute(
        """SELECT g.day::date FROM generate_series(%s::date, %s::date, interval '1 day') AS g(day)
           LEFT JOIN kpi_daily_state k ON k.day = g.day::date
           WHERE k.day IS NULL OR k.through < (g.day::date + 1)::timestamp AT TIME ZONE %s""",
        (today - timedelta(days=35), today, settings.timezone),
    )
    first_data = await _first_data_day(conn, settings)
    for (day,) in await cur.fetchall():
        if first_data is not None and day >= first_data:
            days.add(day)
    for day in sorted(days):
        await refresh_day(conn, settings, day, now)
    late = await refresh_late_days(conn, settings, now=now, skip=days)
    await refresh_warnings(conn, settings, now)
    return sorted(days | set(late))


SETTLING_S: Final = 900
"""After a day ends, the refresh revisits it every round for this long (a gateway's last batches
of the day, a short reconnect)."""
SETTLED_DAY_EVERY_S: Final = 600
"""Then every this often while it is within ``days_back``; data older than a day comes with a
late-data note (ingest/writer.py ``LATE_AFTER_MS``), which the next round refreshes anyway."""


async def _past_days_due(
    conn: AsyncConnection[Any], settings: KpiSettings, today: date, days_back: int, now: datetime
) -> set[date]:
    """The days of the ``days_back`` before ``today`` that this round refreshes."""
    past = [today - timedelta(days=n) for n in range(1, days_back + 1)]
    # refreshed_at is the database's clock (refresh_day), so its age is taken there too
    cur = await conn.execute(
        """SELECT day, through, now() - refreshed_at >= make_interval(secs => %s)
           FROM kpi_daily_state WHERE day = ANY(%s)""",
        (SETTLED_DAY_EVERY_S, past),
    )
    state = {day: (through, stale) for day, through, stale in await cur.fetchall()}
    due = set()
    for day in past:
        end = day_start(settings, day + timedelta(days=1))
        through, stale = state.get(day, (None, True))
        if through is None or through < end or now - end < timedelta(seconds=SETTLING_S) or stale:
            due.add(day)
    return due


CONTINUOUS_AGGREGATES: Final = ("counter_1h", "telemetry_1h")
"""Refreshed over late ranges: what the daily KPIs (whole hours of a day) and long charts read.
The minute views are left to their policies, which run every minute over the replay horizon;
refreshing them here too would mostly collide with those runs."""


async def refresh_late_days(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    *,
    now: datetime | None = None,
    skip: Iterable[date] = (),
) -> list[date]:
    """Recompute the days that received late data (kpi_late_data, noted by the ingest's writer).

    The rollups must have taken the data in first: on plain PostgreSQL the notes wait until the
    rollup refresh has handled every invalidation (a note is committed with its invalidation, so
    reading the notes first and then finding no invalidation is enough); on TimescaleDB this
    refreshes the continuous aggregates over the noted range itself, since their policies only
    look back over the replay horizon and run once per bucket. ``conn`` must be in autocommit.
    """
    now = now or datetime.now(UTC)
    cur = await conn.execute("SELECT id, lo, hi FROM kpi_late_data ORDER BY id LIMIT 10000")
    notes = await cur.fetchall()
    if not notes:
        return []
    plain = await conn.execute("SELECT to_regclass('rollup_invalidations') IS NOT NULL")
    is_plain = bool((await plain.fetchone() or (False,))[0])
    lo = min(n[1] for n in notes)
    hi = max(n[2] for n in notes)
    if is_plain:
        pending = await conn.execute("SELECT EXISTS (SELECT 1 FROM rollup_invalidations)")
        if (await pending.fetchone() or (False,))[0]:
            return []  # the next round, after the rollup refresh
    else:
        for view in CONTINUOUS_AGGREGATES:
            try:
                await conn.execute(
                    f"CALL refresh_continuous_aggregate('{view}'::regclass, "
                    "%s::timestamptz, %s::timestamptz)",
                    (lo - timedelta(hours=1), hi + timedelta(hours=1)),
                )
            except LockNotAvailable:
                # Its policy is refreshing it right now: keep the notes for the next round
                log.info("late days wait: %s is being refreshed by its policy", view)
                return []
    zone = ZoneInfo(settings.timezone)
    today = city_today(settings, now)
    first, last = lo.astimezone(zone).date(), min(hi.astimezone(zone).date(), today)
    done = set(skip)
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    days = [d for d in days if d not in done]
    for day in days:
        await refresh_day(conn, settings, day, now)
    await conn.execute("DELETE FROM kpi_late_data WHERE id = ANY(%s)", ([n[0] for n in notes],))
    return days


async def _first_data_day(conn: AsyncConnection[Any], settings: KpiSettings) -> date | None:
    cur = await conn.execute(
        "SELECT (min(started_at) AT TIME ZONE %s)::date FROM state_intervals", (settings.timezone,)
    )
    row = await cur.fetchone()
    return row[0] if row else None


# --------------------------------------------------------------------------- device figures


@dataclass(slots=True)
class DeviceFigures:
    """One device's figures for a range of days (and the present when the range includes today)."""

    key: int
    device_id: str
    name: str
    enterprise: str
    segment: str | None
    district: str | None
    machine_kind: str
    line: str
    rated_cycle_s: float | None
    last_seen: datetime | None
    state: str | None
    alarm: bool
    # The window's figures; a status without KPIs (``device_status``) leaves them at nothing.
    reported: bool = False
    running_s: float = 0.0
    planned_s: float = 0.0
    parts: float | None = None
    good: float | None = None
    reject: float | None = None
    energy_kwh: float | None = None
    calendar_s: float = 0.0
    """Seconds of the window (the same for every device of a query)."""
    is_networked: bool = False
    is_online: bool = False

    @property
    def current_state(self) -> str:
        """The machine state now, ``offline`` when the device is not online, and ``online`` when
        it is online but reports no machine state (an energy meter, a compressor without a state
        signal): the badge agrees with the online count."""
        if not self.is_online:
            return "offline"
        return self.state or "online"

    @property
    def good_parts(self) -> float | None:
        if self.good is not None:
            return self.good
        if self.parts is not None and self.reject is not None:
            return max(self.parts - self.reject, 0.0)
        return None

    @property
    def reject_parts(self) -> float | None:
        if self.reject is not None:
            return self.reject
        if self.parts is not None and self.good is not None:
            return max(self.parts - self.good, 0.0)
        return None


# A range of days sums each device's rows; one day has one row per device, joined straight to
# the devices: its row count is unknown to the planner until autovacuum analyzes the new day
# (0.2 s became 3 s with a nested loop over a CTE of "1 row" that had 5,000).
_ONE_DAY_JOIN: Final = (
    "LEFT JOIN kpi_device_daily dy ON dy.device_key = dev.key AND dy.day = %(last_day)s"
)

_DAYS: Final = """
    SELECT k.device_key, bool_or(k.reported) AS reported, sum(k.running_s) AS running_s,
           sum(k.planned_s) AS planned_s, sum(k.parts) AS parts, sum(k.good) AS good,
           sum(k.reject) AS reject, sum(k.energy_kwh) AS energy_kwh
    FROM kpi_device_daily k {join} WHERE k.day >= %(first_day)s AND k.day <= %(last_day)s
    GROUP BY k.device_key"""


@functools.cache
def _device_figures_sql(filters: tuple[str, ...], one_day: bool, live: bool = True) -> str:
    """The device-figures query for a scope, with only the filters in use, so plans stay simple.

    The city (no filter) reads every table whole; a scope first picks its devices (``dev``) and
    joins each part to them (``_dev_and_present``). ``present`` reads device_presence (one row per
    device) for the last sample time and the alarm flag. Without ``live`` the figures are the
    stored daily rows alone (a past range, or today up to the last refresh): no state interval or
    minute rollup is read.
    """
    if not live:
        return _stored_figures_sql(filters, one_day)
    join, head = _dev_and_present(filters)
    return f"""{head},
{"" if one_day else f"daily AS ({_DAYS.format(join=join['k'])}),"}
live_states AS ({_STATE_SECONDS.format(a="%(w)s", b="%(e)s", join=join["i"], seen="present")}),
live_counters AS ({
        _COUNTER_SUMS.format(
            source="SELECT device_key, signal_id, increase FROM counter_1m "
            "WHERE bucket >= %(w)s AND bucket < %(e)s",
            join=join["c"],
        )
    })
SELECT dev.key, dev.device_id, dev.name, dev.enterprise_id AS enterprise,
       dev.segment_code AS segment, dev.district_id AS district, dev.machine_kind, dev.line,
       dev.rated_cycle_s, p.last_seen, ds.state, coalesce(p.alarm, false) AS alarm,
       coalesce(dy.reported, false) OR coalesce(ls.planned_s, 0) > 0
           OR lc.device_key IS NOT NULL
           OR coalesce(p.last_seen >= %(w)s AND p.last_seen < %(e)s, false)
           AS reported,
       coalesce(dy.running_s, 0) + coalesce(ls.running_s, 0) AS running_s,
       coalesce(dy.planned_s, 0) + coalesce(ls.planned_s, 0) AS planned_s,
       CASE WHEN dy.parts IS NULL AND lc.parts IS NULL THEN NULL
            ELSE coalesce(dy.parts, 0) + coalesce(lc.parts, 0) END AS parts,
       CASE WHEN dy.good IS NULL AND lc.good IS NULL THEN NULL
            ELSE coalesce(dy.good, 0) + coalesce(lc.good, 0) END AS good,
       CASE WHEN dy.reject IS NULL AND lc.reject IS NULL THEN NULL
            ELSE coalesce(dy.reject, 0) + coalesce(lc.reject, 0) END AS reject,
       CASE WHEN dy.energy_kwh IS NULL AND lc.energy_kwh IS NULL THEN NULL
            ELSE coalesce(dy.energy_kwh, 0) + coalesce(lc.energy_kwh, 0) END AS energy_kwh
FROM dev
LEFT JOIN present p ON p.device_key = dev.key
LEFT JOIN device_states ds ON ds.device_key = dev.key
{_ONE_DAY_JOIN if one_day else "LEFT JOIN daily dy ON dy.device_key = dev.key"}
LEFT JOIN live_states ls ON ls.device_key = dev.key
LEFT JOIN live_counters lc ON lc.device_key = dev.key
ORDER BY dev.enterprise_id, dev.device_id
"""


def _dev_and_present(filters: tuple[str, ...]) -> tuple[dict[str, str], str]:
    where = " AND ".join(_DEVICE_FILTERS[name] for name in filters)
    join = {
        alias: f"JOIN dev ON dev.key = {alias}.device_key" if filters else ""
        for alias in ("cv", "i", "k", "c")
    }
    return (
        join,
        f"""
WITH dev AS (
    SELECT d.key, d.device_id, d.name, d.enterprise_id, e.segment_code, e.district_id,
           d.machine_kind, d.line, d.rated_cycle_s
    FROM devices d JOIN enterprises e ON e.id = d.enterprise_id
    {"WHERE " + where if where else ""}
),
present AS (
    SELECT cv.device_key, cv.last_seen, cv.alarm FROM device_presence cv {join["cv"]}
)""",
    )


@functools.cache
def _stored_figures_sql(filters: tuple[str, ...], one_day: bool) -> str:
    """``_device_figures_sql`` without the live part: the same columns, from the daily rows.

    What the live query gives when its live window is empty (no interval overlaps it, no minute
    bucket falls in it), without reading every open state interval to find that out.
    """
    join, head = _dev_and_present(filters)
    return f"""{head}{"" if one_day else f", daily AS ({_DAYS.format(join=join['k'])})"}
SELECT dev.key, dev.device_id, dev.name, dev.enterprise_id AS enterprise,
       dev.segment_code AS segment, dev.district_id AS district, dev.machine_kind, dev.line,
       dev.rated_cycle_s, p.last_seen, ds.state, coalesce(p.alarm, false) AS alarm,
       coalesce(dy.reported, false) AS reported,
       coalesce(dy.running_s, 0) AS running_s, coalesce(dy.planned_s, 0) AS planned_s,
       dy.parts, dy.good, dy.reject, dy.energy_kwh
FROM dev
LEFT JOIN present p ON p.device_key = dev.key
LEFT JOIN device_states ds ON ds.device_key = dev.key
{_ONE_DAY_JOIN if one_day else "LEFT JOIN daily dy ON dy.device_key = dev.key"}
ORDER BY dev.enterprise_id, dev.device_id
"""


# The query's columns, in DeviceFigures' field order: rows become figures positionally.
_FIGURE_COLUMNS: Final = (
    "key",
    "device_id",
    "name",
    "enterprise",
    "segment",
    "district",
    "machine_kind",
    "line",
    "rated_cycle_s",
    "last_seen",
    "state",
    "alarm",
    "reported",
    "running_s",
    "planned_s",
    "parts",
    "good",
    "reject",
    "energy_kwh",
)

_DEVICE_FILTERS: Final = {
    "enterprise": "d.enterprise_id = %(enterprise)s",
    "segment": "e.segment_code = %(segment)s",
    "district": "e.district_id = %(district)s",
    "device_key": "d.key = %(device_key)s",
}


@dataclass(frozen=True, slots=True)
class Window:
    """A range of whole days in the city's time zone; ``end`` is now when it includes today."""

    first_day: date
    last_day: date
    start: datetime
    end: datetime
    includes_now: bool
    live: bool = True
    """Today's figures after the last refresh are computed live up to ``end`` (now); False when
    they stop at the refresh (``end`` is then its ``through``, see ``page_window``) and for a
    past range, whose stored rows are complete."""
    status_at: datetime | None = None
    """When the counts of now (registered, networked, online, running, alarms) were taken, when
    they come from the status snapshot (``refresh_status``); None: counted at the request."""

    @property
    def seconds(self) -> float:
        return max((self.end - self.start).total_seconds(), 0.0)


def window_for(
    settings: KpiSettings,
    now: datetime,
    first_day: date | None = None,
    last_day: date | None = None,
) -> Window:
    """The window of whole days [first_day, last_day] (default: today), cut at ``now``."""
    today = city_today(settings, now)
    first = first_day or today
    last = min(last_day or today, today)
    start = day_start(settings, first)
    end = min(day_start(settings, last + timedelta(days=1)), now)
    includes_now = last >= today
    return Window(first, last, start, end, includes_now=includes_now, live=includes_now)


REFRESH_FRESH_S: Final = 300
"""Pages take today's figures from the last refresh while its ``through`` is at most this old
(the refresh runs every ``refresh.daily_s``, 60 s by default); an older one means the refresher
is behind, and the page computes the minutes since then live (exact, but slower)."""


async def page_window(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    now: datetime,
    first_day: date | None = None,
    last_day: date | None = None,
    *,
    snapshot: bool = True,
) -> Window:
    """``window_for`` as the pages use it: today's figures up to the last refresh, not to now.

    ``snapshot``: take the counts of now from the status snapshot while it is fresh (the GET
    endpoints); the live stream counts at its moment instead, since it exists to show a change
    within a second or two and is computed once per change for all its followers.

    Adding the minutes after the refresh live means reading every open state interval (one per
    device) and the minute rollups on each request, which at city scale costs more than the rest
    of the page. So a window that includes today ends at the refresh's ``through`` (at most
    ``REFRESH_FRESH_S`` old, else it stays live); status figures (online, running, alarms,
    networked) are still taken at ``now``. Pages state the end in ``window.end``.
    """
    window = window_for(settings, now, first_day, last_day)
    if not window.includes_now:
        return window
    cur = await conn.execute(
        """SELECT (SELECT through FROM kpi_daily_state WHERE day = %s),
                  (SELECT taken_at FROM kpi_status_state)""",
        (window.last_day,),
    )
    through, taken_at = await cur.fetchone() or (None, None)
    if (
        through is None
        or through <= window.start
        or now - through > timedelta(seconds=REFRESH_FRESH_S)
    ):
        return window
    fresh_status = (
        snapshot
        and taken_at is not None
        and abs(now - taken_at) <= timedelta(seconds=STATUS_FRESH_S)
    )
    return Window(
        window.first_day,
        window.last_day,
        window.start,
        min(through, window.end),
        includes_now=True,
        live=False,
        status_at=taken_at if fresh_status else None,
    )


STATUS_FRESH_S: Final = 15
"""Pages take the counts of now from the status snapshot while it is at most this old (it is
taken every ``refresh.status_s``, 5 s by default); an older one means the refresher is behind or
not running, and the page counts its scope's devices itself."""


async def refresh_status(
    conn: AsyncConnection[Any], settings: KpiSettings, now: datetime | None = None
) -> datetime:
    """Take the status snapshot (``kpi_status``) at ``now``; return the moment it is at."""
    now = now or datetime.now(UTC)
    params = {
        "includes_now": True,
        "networked_since": now - timedelta(seconds=settings.networked_window_s),
        "online_since": now - timedelta(seconds=settings.online_window_s),
    }
    async with conn.transaction():
        await conn.execute(_REFRESH_STATUS, params)
        await conn.execute(
            """INSERT INTO kpi_status_state (taken_at) VALUES (%s)
               ON CONFLICT (one) DO UPDATE SET taken_at = EXCLUDED.taken_at""",
            (now,),
        )
    return now


async def _figures_query(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    window: Window,
    scope: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    """The device-figures SQL for ``scope`` (filters left None are unused) and its parameters."""
    live_from = window.end
    if window.live:
        cur = await conn.execute(
            "SELECT through FROM kpi_daily_state WHERE day = %s", (window.last_day,)
        )
        row = await cur.fetchone()
        live_from = row[0] if row else day_start(settings, window.last_day)
        live_from = max(live_from, window.start)
    params = {
        **scope,
        "first_day": window.first_day,
        # Today's materialized row covers [day start, through); the rest is computed live.
        "last_day": window.last_day,
        "w": live_from,
        "e": window.end,
        "online_s": settings.online_window_s,
    }
    sql = _device_figures_sql(
        tuple(name for name, value in scope.items() if value is not None),
        window.first_day == window.last_day,
        window.live,
    )
    return sql, params


async def device_figures(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    window: Window,
    now: datetime,
    *,
    enterprise: str | None = None,
    segment: str | None = None,
    district: str | None = None,
    device_key: int | None = None,
) -> list[DeviceFigures]:
    """Figures of every registered device in scope for ``window``."""
    scope = {
        "enterprise": enterprise,
        "segment": segment,
        "district": district,
        "device_key": device_key,
    }
    sql, params = await _figures_query(conn, settings, window, scope)
    # Never prepared: a prepared statement switches to a generic plan after five runs, and the
    # generic plan of this query reads state_intervals in nested loops (27 s instead of 0.2 s
    # for the city at 10,000 devices, bench/monitoring.py).
    cursor = conn.cursor(binary=True)  # binary rows parse faster: 10,000 of them for the city
    await cursor.execute(sql, params, prepare=False)
    columns = tuple(column.name for column in cursor.description or ())
    if columns != _FIGURE_COLUMNS:
        raise RuntimeError(f"device figures query returns {columns}, expected {_FIGURE_COLUMNS}")
    calendar_s = window.seconds
    figures = [DeviceFigures(*row) for row in await cursor.fetchall()]
    for fig in figures:
        fig.calendar_s = calendar_s
    if window.includes_now:
        _mark_presence(figures, settings, now)
    else:
        # A past range has no "now": networked means it reported in the range, nothing is online.
        for fig in figures:
            fig.is_networked = fig.reported
    return figures


def _mark_presence(figures: Iterable[DeviceFigures], settings: KpiSettings, now: datetime) -> None:
    """Networked and online at ``now``, from each device's last sample and machine state."""
    networked_since = now - timedelta(seconds=settings.networked_window_s)
    online_since = now - timedelta(seconds=settings.online_window_s)
    for fig in figures:
        seen = fig.last_seen
        fig.is_networked = seen is not None and seen >= networked_since
        fig.is_online = seen is not None and seen >= online_since and fig.state != "offline"


# A timestamptz as ``iso_utc`` writes it, so rows built as JSON by the database read the same.
_ISO_UTC: Final = "to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"


def iso_utc(moment: datetime) -> str:
    """A time in UTC with microseconds always written (``_ISO_UTC`` in SQL)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


# Online now, for a device row joined to its presence (p) and state (ds): as ``_mark_presence``.
_ONLINE_NOW: Final = (
    "coalesce(p.last_seen >= %(online_since)s, false) AND ds.state IS DISTINCT FROM 'offline'"
)

# A device's status without its KPIs (what a provider sees), for the devices of a set of
# enterprises in one round trip: online and networked are decided as ``_mark_presence`` decides
# them, the shown state as ``DeviceFigures.current_state``, and each enterprise's rows are written as JSON
# here, field for field as ``views.device_row`` writes them: a provider's page lists thousands of
# devices, and building their dicts in Python held the app's event loop for 16 ms a page.
_STATUS_SQL: Final = f"""
WITH dev AS MATERIALIZED (
    SELECT d.enterprise_id, d.device_id, d.name, d.machine_kind, d.line, p.last_seen,
           coalesce(p.alarm, false) AS alarm, on_.online,
           coalesce(p.last_seen >= %(networked_since)s, false) AS networked,
           CASE WHEN on_.online THEN coalesce(ds.state, 'online') ELSE 'offline' END AS shown
    FROM devices d
    LEFT JOIN device_presence p ON p.device_key = d.key
    LEFT JOIN device_states ds ON ds.device_key = d.key
    CROSS JOIN LATERAL (SELECT {_ONLINE_NOW} AS online) on_
    WHERE d.enterprise_id = ANY(%(enterprises)s::text[])
),
by_state AS (
    SELECT enterprise_id, json_object_agg(shown, n ORDER BY shown)::text AS states
    FROM (SELECT enterprise_id, shown, count(*) AS n FROM dev GROUP BY 1, 2) counted
    GROUP BY enterprise_id
)
SELECT dev.enterprise_id, count(*), count(*) FILTER (WHERE online), by_state.states,
    json_agg(json_build_object(
        'id', device_id, 'enterprise', dev.enterprise_id, 'name', name,
        'machine_kind', machine_kind, 'line', line, 'state', shown, 'online', online,
        'networked', networked, 'alarm', online AND alarm,
        'last_seen', {_ISO_UTC.format(column="last_seen")}
    ) ORDER BY device_id)::text
FROM dev JOIN by_state USING (enterprise_id)
GROUP BY dev.enterprise_id, by_state.states
"""


class ServedStatus(NamedTuple):
    """An enterprise's devices now, without KPIs (``device_status``)."""

    registered: int
    online: int
    states: dict[str, int]
    """Devices per shown state (``DeviceFigures.current_state``)."""
    devices_json: str
    """The device rows, a JSON array as ``views.device_row(..., with_kpis=False)`` writes them."""


async def device_status(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    now: datetime,
    enterprises: Collection[str],
) -> dict[str, ServedStatus]:
    """The devices of ``enterprises`` with their state now (online, networked, alarm, machine
    state) and no KPIs, by enterprise (one with no devices: no key): what ``device_figures``
    gives for today minus the day's sums, which a provider's page does not show."""
    params = {
        "enterprises": list(enterprises),
        "online_since": now - timedelta(seconds=settings.online_window_s),
        "networked_since": now - timedelta(seconds=settings.networked_window_s),
    }
    cur = await conn.execute(_STATUS_SQL, params, prepare=False)
    return {
        enterprise: ServedStatus(registered, online, orjson.loads(states), devices)
        for enterprise, registered, online, states, devices in await cur.fetchall()
    }


GROUPINGS: Final = ("segment", "district", "enterprise", "kind")
"""What ``scope_kpis`` can break a scope down by (``kind``: machine kind, for the alarm summary)."""

# Kpis.add_counted and alarm_summary in SQL, over the rows of the device-figures query: the same
# per-device rules (good parts from parts - reject when no good counter, OEE capped per device).
# Devices are first summed per enterprise and machine kind (a hash aggregate: 2,500 rows for the
# city), and only those rows are grouped each way (``_GROUPED``): grouping sets over 10,000 device
# rows sort them once per grouping.
_PER_DEVICE: Final = f"""
WITH fig AS ({{figures}}),
f AS (
    SELECT fig.*,
        CASE WHEN %(includes_now)s THEN coalesce(last_seen >= %(networked_since)s, false)
             ELSE reported END AS is_networked,
        %(includes_now)s AND coalesce(last_seen >= %(online_since)s, false)
            AND state IS DISTINCT FROM 'offline' AS is_online,
        {_DEVICE_RULES.strip()}
    FROM fig
),
per_enterprise AS (
    SELECT enterprise, segment, district, coalesce(nullif(machine_kind, ''), 'other') AS kind,
        count(*) AS registered,
        count(*) FILTER (WHERE is_networked) AS networked,
        count(*) FILTER (WHERE is_online) AS online,
        count(*) FILTER (WHERE is_online AND state = 'running') AS running,
        count(*) FILTER (WHERE running_s > 0) AS ran_today,
        count(*) FILTER (WHERE reported) AS reported,
        coalesce(sum(running_s) FILTER (WHERE reported), 0) AS running_s,
        coalesce(sum(%(calendar_s)s::float8) FILTER (WHERE reported), 0) AS calendar_s,
        coalesce(sum(parts), 0) AS output,
        sum(good_parts) AS good,
        sum(reject_parts) AS reject,
        coalesce(sum(energy_kwh), 0) AS energy_kwh,
        count(*) FILTER (WHERE is_online AND alarm) AS alarms_active,
        count(*) FILTER (WHERE is_online AND alarm AND state = 'fault') AS alarms_critical,
        coalesce(sum(least(good_parts * rated_cycle_s, planned_s)) FILTER (WHERE {_OEE_DEVICE}),
                 0) AS oee_good_s,
        coalesce(sum(planned_s) FILTER (WHERE {_OEE_DEVICE}), 0) AS oee_planned_s
    FROM f
    GROUP BY enterprise, segment, district, kind
)"""

# What is happening now per enterprise and machine kind, from each device's presence and state
# (``refresh_status`` stores it for all devices; a page counts its scope live when that is old).
_COUNTED_LIVE: Final = f"""
    SELECT d.enterprise_id, coalesce(nullif(d.machine_kind, ''), 'other') AS kind,
        count(*) AS registered,
        count(*) FILTER (WHERE p.last_seen >= %(networked_since)s) AS networked,
        count(*) FILTER (WHERE on_.online) AS online,
        count(*) FILTER (WHERE on_.online AND ds.state = 'running') AS running,
        count(*) FILTER (WHERE on_.online AND p.alarm) AS alarms_active,
        count(*) FILTER (WHERE on_.online AND p.alarm AND ds.state = 'fault') AS alarms_critical
    FROM devices d
    JOIN enterprises e ON e.id = d.enterprise_id
    LEFT JOIN device_presence p ON p.device_key = d.key
    LEFT JOIN device_states ds ON ds.device_key = d.key
    CROSS JOIN LATERAL (SELECT %(includes_now)s AND {_ONLINE_NOW} AS online) on_
    {{where}}
    GROUP BY d.enterprise_id, kind"""

# What ``refresh_status`` stores: the counts of every device, by enterprise and machine kind.
_REFRESH_STATUS: Final = _replace_rows(
    "kpi_status",
    "enterprise_id, kind",
    "registered, networked, online, running, alarms_active, alarms_critical",
    _COUNTED_LIVE.format(where=""),
)

_JOIN_ENTERPRISES: Final = {
    alias: f"JOIN enterprises e ON e.id = {alias}.enterprise_id" for alias in ("s", "k")
}
_COUNTED_STORED: Final = """
    SELECT s.enterprise_id, s.kind, s.registered, s.networked, s.online, s.running,
        s.alarms_active, s.alarms_critical
    FROM kpi_status s {join_enterprises}
    {where}"""

# One stored day (today up to the last refresh, or a past day): the day's sums per enterprise and
# kind come from kpi_kind_daily as refresh_day left them, and what is counted now (devices,
# networked, online, running, alarms) from the status snapshot (``refresh_status``) while it is
# fresh, else from each device's presence and state (``_COUNTED_LIVE``).
# A full join keeps a group whose devices changed kind or left since the refresh: its sums still
# count, as the stored rows say, until the next refresh.
_STORED_DAY: Final = """
WITH counted AS ({counted}),
stored AS (
    SELECT k.* FROM kpi_kind_daily k {join_enterprises}
    WHERE k.day = %(last_day)s {and_where}
),
per_enterprise AS (
    SELECT e.id AS enterprise, e.segment_code AS segment, e.district_id AS district,
        coalesce(c.kind, k.kind) AS kind,
        coalesce(c.registered, 0) AS registered,
        CASE WHEN %(includes_now)s THEN coalesce(c.networked, 0)
             ELSE coalesce(k.reported, 0) END AS networked,
        coalesce(c.online, 0) AS online, coalesce(c.running, 0) AS running,
        coalesce(k.ran, 0) AS ran_today, coalesce(k.reported, 0) AS reported,
        coalesce(k.running_s, 0) AS running_s, coalesce(k.calendar_s, 0) AS calendar_s,
        coalesce(k.output, 0) AS output, k.good, k.reject,
        coalesce(k.energy_kwh, 0) AS energy_kwh,
        coalesce(c.alarms_active, 0) AS alarms_active,
        coalesce(c.alarms_critical, 0) AS alarms_critical,
        coalesce(k.oee_good_s, 0) AS oee_good_s, coalesce(k.oee_planned_s, 0) AS oee_planned_s
    FROM counted c
    FULL JOIN stored k ON k.enterprise_id = c.enterprise_id AND k.kind = c.kind
    JOIN enterprises e ON e.id = coalesce(c.enterprise_id, k.enterprise_id)
)"""

# Each enterprise is counted on its first kind's row (an enterprise is in one segment and one
# district): count(DISTINCT) would make every grouping set sort its rows.
_GROUPED: Final = """,
rows AS (
    SELECT per_enterprise.*,
        row_number() OVER (PARTITION BY enterprise ORDER BY kind) = 1
            AS first_of_enterprise
    FROM per_enterprise
)
SELECT {keys},
    sum(registered) AS registered, count(*) FILTER (WHERE first_of_enterprise) AS enterprises,
    sum(networked) AS networked, sum(online) AS online, sum(running) AS running,
    sum(ran_today) AS ran_today, sum(reported) AS reported, sum(running_s) AS running_s,
    sum(calendar_s) AS calendar_s, sum(output) AS output, sum(good) AS good,
    sum(reject) AS reject, sum(energy_kwh) AS energy_kwh, sum(alarms_active) AS alarms_active,
    sum(alarms_critical) AS alarms_critical, sum(oee_good_s) AS oee_good_s,
    sum(oee_planned_s) AS oee_planned_s
FROM rows
GROUP BY GROUPING SETS ({sets})
"""


@dataclass(slots=True)
class ScopeKpis:
    """``scope_kpis``' answer: the scope's total, one Kpis per group of each grouping asked for,
    and the alarm summary (as ``alarm_summary`` gives it)."""

    total: Kpis
    groups: dict[str, dict[Hashable, Kpis]]
    alarms: dict[str, Any]


async def scope_kpis(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    window: Window,
    now: datetime,
    groupings: Sequence[str] = (),
    *,
    segment: str | None = None,
    district: str | None = None,
    enterprise: str | None = None,
) -> ScopeKpis:
    """The KPIs of a scope and of its groups, summed in the database in one query.

    The same figures as ``breakdown``/``alarm_summary`` over ``device_figures`` (the known-answer
    tests hold for both), but only one row per group leaves the database.
    """
    unknown = set(groupings) - set(GROUPINGS)
    if unknown:
        raise ValueError(f"scope_kpis: unknown groupings {sorted(unknown)}; known: {GROUPINGS}")
    scope = {"enterprise": enterprise, "segment": segment, "district": district}
    asked = (*groupings, "kind")
    tail = _GROUPED.format(
        keys=", ".join([*asked, f"GROUPING({', '.join(asked)}) AS level"]),
        sets=", ".join(["()", *(f"({g})" for g in asked)]),
    )
    if reads_stored_day(window) and enterprise is None:
        filters = [_DEVICE_FILTERS[name] for name, value in scope.items() if value is not None]
        where = "WHERE " + " AND ".join(filters) if filters else ""
        counted = _COUNTED_STORED if window.status_at is not None else _COUNTED_LIVE
        sql = _STORED_DAY.format(
            counted=counted.format(
                where=where, join_enterprises=_JOIN_ENTERPRISES["s"] if filters else ""
            ),
            and_where="".join(" AND " + f for f in filters),
            join_enterprises=_JOIN_ENTERPRISES["k"] if filters else "",
        )
        params: dict[str, Any] = {**scope, "last_day": window.last_day}
    else:
        figures_sql, params = await _figures_query(conn, settings, window, {**scope})
        sql = _PER_DEVICE.format(figures=figures_sql.rsplit("ORDER BY", 1)[0])
    sql += tail
    params |= {
        "includes_now": window.includes_now,
        "networked_since": now - timedelta(seconds=settings.networked_window_s),
        "online_since": now - timedelta(seconds=settings.online_window_s),
        "calendar_s": window.seconds,
    }
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(sql, params, prepare=False)  # never prepared: see device_figures
    rows = await cursor.fetchall()
    everything = (1 << len(asked)) - 1
    total = Kpis()
    groups: dict[str, dict[Hashable, Kpis]] = {g: {} for g in groupings}
    by_kind: dict[str, int] = {}
    critical = 0
    for row in rows:
        level = row["level"]
        if level == everything:
            total = _kpis_of(row)
            critical = int(row["alarms_critical"] or 0)
            continue
        # GROUPING's bits are the asked columns left to right; the one at 0 is this row's key.
        index = next(i for i, _ in enumerate(asked) if not level >> (len(asked) - 1 - i) & 1)
        name = asked[index]
        if name == "kind":
            if row["alarms_active"]:
                by_kind[row["kind"]] = int(row["alarms_active"])
        else:
            groups[name][row[name]] = _kpis_of(row)
    alarms = {
        "active": total.alarms_active,
        "by_severity": {"critical": critical, "warning": total.alarms_active - critical},
        "by_kind": dict(sorted(by_kind.items())),
    }
    return ScopeKpis(total, groups, alarms)


def reads_stored_day(window: Window) -> bool:
    """Whether ``window`` is one day whose figures are all stored (today up to the last refresh,
    or a past day): its sums per enterprise and kind are then in kpi_kind_daily. A range of days
    needs each device's sum over the days (a device ran on some day, its OEE cap), and a live
    window the minutes since the refresh."""
    return not window.live and window.first_day == window.last_day


def _kpis_of(row: dict[str, Any]) -> Kpis:
    # A scope without devices (a district no enterprise is in yet) still has its grand-total row,
    # whose sums are NULL: that is zero devices, as the Python sum over no rows gives.
    def count(column: str) -> int:
        return int(row[column] or 0)

    def amount(column: str) -> float:
        return float(row[column] or 0)

    return Kpis(
        registered=count("registered"),
        networked=count("networked"),
        online=count("online"),
        running=count("running"),
        ran_today=count("ran_today"),
        reported=count("reported"),
        running_s=amount("running_s"),
        calendar_s=amount("calendar_s"),
        output=amount("output"),
        good=None if row["good"] is None else float(row["good"]),
        reject=None if row["reject"] is None else float(row["reject"]),
        energy_kwh=amount("energy_kwh"),
        alarms_active=count("alarms_active"),
        oee_good_s=amount("oee_good_s"),
        oee_planned_s=amount("oee_planned_s"),
        enterprises_counted=count("enterprises"),
    )


# --------------------------------------------------------------------------- aggregation


@dataclass(slots=True)
class Kpis:
    """KPIs of a group of devices; rates are fractions (0..1) or None when undefined."""

    registered: int = 0
    networked: int = 0
    online: int = 0
    running: int = 0
    ran_today: int = 0
    reported: int = 0
    running_s: float = 0.0
    calendar_s: float = 0.0
    output: float = 0.0
    good: float | None = None
    reject: float | None = None
    energy_kwh: float = 0.0
    alarms_active: int = 0
    oee_good_s: float = 0.0
    oee_planned_s: float = 0.0
    enterprises_seen: set[str] = field(default_factory=set)
    enterprises_counted: int = 0
    """Enterprises counted by the database (``scope_kpis``), besides those ``add`` has seen."""

    def add(self, fig: DeviceFigures) -> None:
        self.add_counted(fig, fig.good_parts, fig.reject_parts)

    def add_counted(self, fig: DeviceFigures, good: float | None, reject: float | None) -> None:
        """``add`` with the device's good and reject parts already worked out (``breakdown``
        adds each device to several groups)."""
        # Runs 30,000 times per city overview: branches instead of adding booleans, and each
        # figure read once.
        self.registered += 1
        self.enterprises_seen.add(fig.enterprise)
        if fig.is_networked:
            self.networked += 1
        if fig.is_online:
            self.online += 1
            if fig.state == "running":
                self.running += 1
            if fig.alarm:
                self.alarms_active += 1
        running_s = fig.running_s
        if running_s > 0:
            self.ran_today += 1
        if fig.reported:
            self.reported += 1
            self.running_s += running_s
            self.calendar_s += fig.calendar_s
        parts = fig.parts
        self.output += parts or 0.0
        self.energy_kwh += fig.energy_kwh or 0.0
        if good is not None:
            self.good = (self.good or 0.0) + good
        if reject is not None:
            self.reject = (self.reject or 0.0) + reject
        if fig.rated_cycle_s and parts is not None and good is not None and fig.planned_s > 0:
            self.oee_good_s += min(good * fig.rated_cycle_s, fig.planned_s)
            self.oee_planned_s += fig.planned_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "registered": self.registered,
            "enterprises": len(self.enterprises_seen) + self.enterprises_counted,
            "networked": self.networked,
            "online": self.online,
            "running": self.running,
            "ran_today": self.ran_today,
            "networked_rate": _ratio(self.networked, self.registered),
            "online_rate": _ratio(self.online, self.registered),
            "running_rate": _ratio(self.running, self.networked),
            "utilization": _ratio(self.running_s, self.calendar_s),
            "running_h": round(self.running_s / 3600, 3),
            "output": _round(self.output),
            "good": _round(self.good),
            "reject": _round(self.reject),
            "energy_kwh": _round(self.energy_kwh, 3),
            "kwh_per_part": _ratio(self.energy_kwh, self.output, 4),
            "oee": _ratio(self.oee_good_s, self.oee_planned_s),
            "alarms_active": self.alarms_active,
        }


def _ratio(num: float, den: float, digits: int = 4) -> float | None:
    return round(num / den, digits) if den else None


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def aggregate(
    figures: Iterable[DeviceFigures], key: Callable[[DeviceFigures], Hashable]
) -> dict[Hashable, Kpis]:
    """Sum device figures into KPIs per ``key(device)``."""
    groups: dict[Hashable, Kpis] = {}
    for fig in figures:
        groups.setdefault(key(fig), Kpis()).add(fig)
    return groups


def total(figures: Iterable[DeviceFigures]) -> Kpis:
    kpis = Kpis()
    for fig in figures:
        kpis.add(fig)
    return kpis


def breakdown(
    figures: Iterable[DeviceFigures], *keys: Callable[[DeviceFigures], Hashable]
) -> tuple[Kpis, list[dict[Hashable, Kpis]]]:
    """``total`` and ``aggregate`` for each of ``keys`` in one pass over the figures.

    Each group adds its devices in the same order as ``aggregate`` would, so the sums are the same
    to the last bit.
    """
    whole = Kpis()
    groupings: list[dict[Hashable, Kpis]] = [{} for _ in keys]
    pairs = list(zip(keys, groupings, strict=True))
    for fig in figures:
        good, reject = fig.good_parts, fig.reject_parts
        whole.add_counted(fig, good, reject)
        for key, groups in pairs:
            group = key(fig)
            kpi = groups.get(group)
            if kpi is None:
                kpi = groups[group] = Kpis()
            kpi.add_counted(fig, good, reject)
    return whole, groupings


def alarm_summary(figures: Iterable[DeviceFigures]) -> dict[str, Any]:
    """Devices in alarm now: total, by severity (critical when in fault) and by machine kind."""
    by_severity: dict[str, int] = {"critical": 0, "warning": 0}
    by_kind: dict[str, int] = {}
    active = 0
    for fig in figures:
        if not (fig.is_online and fig.alarm):
            continue
        active += 1
        by_severity["critical" if fig.state == "fault" else "warning"] += 1
        kind = fig.machine_kind or "other"
        by_kind[kind] = by_kind.get(kind, 0) + 1
    return {"active": active, "by_severity": by_severity, "by_kind": by_kind}


# --------------------------------------------------------------------------- trends, warnings


async def daily_trend(
    conn: AsyncConnection[Any],
    first_day: date,
    last_day: date,
    *,
    enterprises: list[str] | None = None,
    segment: str | None = None,
    district: str | None = None,
) -> list[dict[str, Any]]:
    """Per-day output, energy and utilization of a scope from kpi_enterprise_daily."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        """SELECT g.day::date AS day, coalesce(sum(k.parts), 0) AS output,
                  sum(k.good) AS good, sum(k.reject) AS reject,
                  coalesce(sum(k.energy_kwh), 0) AS energy_kwh,
                  sum(k.running_s) AS running_s, sum(k.calendar_s) AS calendar_s
           FROM generate_series(%(first)s::date, %(last)s::date, interval '1 day') AS g(day)
           LEFT JOIN (kpi_enterprise_daily k JOIN enterprises e ON e.id = k.enterprise_id
                      AND (%(ents)s::text[] IS NULL OR e.id = ANY(%(ents)s::text[]))
                      AND (%(segment)s::text IS NULL OR e.segment_code = %(segment)s)
                      AND (%(district)s::text IS NULL OR e.district_id = %(district)s))
             ON k.day = g.day::date
           GROUP BY g.day ORDER BY g.day""",
        {
            "first": first_day,
            "last": last_day,
            "ents": enterprises,
            "segment": segment,
            "district": district,
        },
    )
    days = []
    for row in await cursor.fetchall():
        days.append(
            {
                "day": row["day"].isoformat(),
                "output": round(float(row["output"]), 1),
                "good": _round(row["good"]),
                "reject": _round(row["reject"]),
                "energy_kwh": round(float(row["energy_kwh"]), 3),
                "kwh_per_part": _ratio(float(row["energy_kwh"]), float(row["output"])),
                "utilization": _ratio(row["running_s"] or 0.0, row["calendar_s"] or 0.0),
            }
        )
    return days


WARNING_COLOURS: Final = ("green", "blue", "orange", "red")


@dataclass(frozen=True, slots=True)
class Warning_:
    enterprise: str
    colour: str
    day: date
    output: float
    energy_kwh: float
    output_baseline: float | None
    energy_baseline: float | None
    reason: str
    reason_en: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "enterprise": self.enterprise,
            "colour": self.colour,
            "day": self.day.isoformat(),
            "output": round(self.output, 1),
            "energy_kwh": round(self.energy_kwh, 3),
            "output_baseline": _round(self.output_baseline),
            "energy_baseline": _round(self.energy_baseline, 3),
            "output_ratio": _ratio(self.output, self.output_baseline or 0.0),
            "energy_ratio": _ratio(self.energy_kwh, self.energy_baseline or 0.0),
            "reason": self.reason,
            "reason_en": self.reason_en,
        }


def output_level(ratio: float) -> int:
    """0 green (>= 85 % of baseline), 1 blue (>= 70 %), 2 orange (>= 50 %), 3 red (< 50 %)."""
    if ratio >= 0.85:
        return 0
    if ratio >= 0.70:
        return 1
    if ratio >= 0.50:
        return 2
    return 3


def energy_level(ratio: float) -> int:
    """0 within ±30 % of baseline, 1 blue within ±50 %, 2 orange beyond; never red on its own."""
    deviation = abs(ratio - 1.0)
    if deviation <= 0.30:
        return 0
    if deviation <= 0.50:
        return 1
    return 2


def classify_warning(
    enterprise: str,
    day: date,
    output: float,
    energy: float,
    baseline_outputs: Sequence[float],
    baseline_energies: Sequence[float],
    min_days: int,
) -> Warning_:
    """Colour one enterprise's ``day`` against the median of its own baseline days.

    Baseline days are those with any output or energy; with fewer than ``min_days`` of them the
    colour is grey. Enterprises without part counters are judged by energy with the output scale.
    """
    days = [(o, e) for o, e in zip(baseline_outputs, baseline_energies, strict=True) if o or e]
    if len(days) < min_days:
        return classify_against_medians(enterprise, day, output, energy, len(days), 0, 0, min_days)
    return classify_against_medians(
        enterprise,
        day,
        output,
        energy,
        len(days),
        statistics.median(o for o, _ in days),
        statistics.median(e for _, e in days),
        min_days,
    )


def classify_against_medians(
    enterprise: str,
    day: date,
    output: float,
    energy: float,
    days_with_data: int,
    out_base: float,
    en_base: float,
    min_days: int,
) -> Warning_:
    """``classify_warning`` once the baseline's days with data are counted and their medians taken
    (``enterprise_warnings`` does both in the database)."""
    if days_with_data < min_days:
        return Warning_(
            enterprise,
            "grey",
            day,
            output,
            energy,
            None,
            None,
            f"基线不足（{days_with_data} 天有数据）",
            f"baseline too short ({days_with_data} days with data)",
        )
    levels: list[tuple[int, str, str]] = []
    if out_base > 0:
        ratio = output / out_base
        levels.append(
            (output_level(ratio), f"产量为基线的{ratio:.0%}", f"output {ratio:.0%} of baseline")
        )
    if en_base > 0:
        ratio = energy / en_base
        level = energy_level(ratio) if out_base > 0 else output_level(ratio)
        levels.append((level, f"用电为基线的{ratio:.0%}", f"energy {ratio:.0%} of baseline"))
    worst = max((lv for lv, _, _ in levels), default=0)
    colour = WARNING_COLOURS[worst]
    return Warning_(
        enterprise,
        colour,
        day,
        output,
        energy,
        out_base or None,
        en_base or None,
        "，".join(zh for _, zh, _ in levels),
        ", ".join(en for _, _, en in levels),
    )


_BASELINE_DAY: Final = "day < %(day)s AND (parts <> 0 OR energy_kwh <> 0)"


def _median(array: str) -> str:
    """SQL for the median of a sorted float array (NULL when empty), as ``statistics.median``."""
    n = f"cardinality({array})"
    return (
        f"CASE WHEN mod({n}, 2) = 1 THEN {array}[({n} + 1) / 2] "
        f"ELSE ({array}[{n} / 2] + {array}[{n} / 2 + 1]) / 2 END"
    )


# Each enterprise's judged day against its baseline: the baseline's days with data counted and
# their medians taken here (as statistics.median does: the middle value, or the mean of the two
# middle ones), so only the colours are worked out in Python. Days without a row have no data.
_WARNING_INPUTS: Final = f"""
WITH k AS (
    SELECT enterprise_id,
           sum(parts) FILTER (WHERE day = %(day)s) AS output,
           sum(energy_kwh) FILTER (WHERE day = %(day)s) AS energy,
           array_agg(parts ORDER BY parts) FILTER (WHERE {_BASELINE_DAY}) AS outs,
           array_agg(energy_kwh ORDER BY energy_kwh) FILTER (WHERE {_BASELINE_DAY}) AS ens
    FROM kpi_enterprise_daily
    WHERE day >= %(first)s AND day <= %(day)s
      AND (%(ents)s::text[] IS NULL OR enterprise_id = ANY(%(ents)s::text[]))
    GROUP BY enterprise_id)
SELECT e.id, coalesce(k.output, 0), coalesce(k.energy, 0), coalesce(cardinality(k.outs), 0),
       {_median("k.outs")}, {_median("k.ens")}
FROM enterprises e LEFT JOIN k ON k.enterprise_id = e.id
WHERE %(ents)s::text[] IS NULL OR e.id = ANY(%(ents)s::text[])"""

# The inputs as refresh_warnings stored them; ``taken`` is false for an enterprise registered
# since (it then has no baseline yet) and for every row when the day was never taken.
_STORED_WARNING_INPUTS: Final = """
SELECT e.id, coalesce(w.output, 0), coalesce(w.energy_kwh, 0), coalesce(w.baseline_days, 0),
       w.output_base, w.energy_base, w.day IS NOT NULL AS taken
FROM enterprises e
LEFT JOIN kpi_warning_daily w ON w.enterprise_id = e.id AND w.day = %(day)s
WHERE %(ents)s::text[] IS NULL OR e.id = ANY(%(ents)s::text[])
ORDER BY e.id"""


def _warning_params(
    settings: KpiSettings, now: datetime, enterprises: list[str] | None
) -> dict[str, Any]:
    """The judged day (the last complete one, yesterday) and its baseline's first day."""
    day = city_today(settings, now) - timedelta(days=1)
    return {"day": day, "first": day - timedelta(days=settings.baseline_days), "ents": enterprises}


# What ``refresh_warnings`` stores: every enterprise's inputs for the judged day.
_REFRESH_WARNINGS: Final = _replace_rows(
    "kpi_warning_daily",
    "day, enterprise_id",
    "output, energy_kwh, baseline_days, output_base, energy_base",
    "SELECT %(day)s::date AS day, i.* FROM (" + _WARNING_INPUTS + ") "
    "i (enterprise_id, output, energy_kwh, baseline_days, output_base, energy_base)",
    "t.day = %(day)s",
)


async def refresh_warnings(
    conn: AsyncConnection[Any], settings: KpiSettings, now: datetime | None = None
) -> date:
    """Store every enterprise's warning inputs for the judged day (``kpi_warning_daily``), from
    the daily rows as they are now; return the day. refresh_daily calls it after each round, so
    late data in the baseline reaches the colours with the next round."""
    params = _warning_params(settings, now or datetime.now(UTC), None)
    day: date = params["day"]
    async with conn.transaction():
        await conn.execute(_REFRESH_WARNINGS, params)
        # Days judged before stay for the record; a month of them is enough.
        await conn.execute("DELETE FROM kpi_warning_daily WHERE day < %(day)s::date - 35", params)
    return day


async def enterprise_warnings(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    now: datetime,
    *,
    enterprises: list[str] | None = None,
) -> dict[str, Warning_]:
    """Warning colour per enterprise for the last complete day (yesterday) vs its baseline.

    From the inputs the last refresh stored (``refresh_warnings``); computed here from the daily
    rows when the refresh has not taken yesterday yet (just after midnight, or no refresher)."""
    params = _warning_params(settings, now, enterprises)
    cursor = await conn.execute(_STORED_WARNING_INPUTS, params)
    rows = await cursor.fetchall()
    if rows and not any(row[-1] for row in rows):
        cursor = await conn.execute(_WARNING_INPUTS + " ORDER BY e.id", params)
        rows = await cursor.fetchall()
    day = params["day"]
    return {
        row[0]: classify_against_medians(
            row[0],
            day,
            float(row[1]),
            float(row[2]),
            int(row[3]),
            float(row[4] or 0.0),
            float(row[5] or 0.0),
            settings.min_baseline_days,
        )
        for row in rows
    }


async def daily_export_rows(
    conn: AsyncConnection[Any], day: date, enterprises: list[str] | None = None
) -> list[dict[str, Any]]:
    """One row per enterprise for ``day``: the figures a provincial platform pulls."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        """SELECT %(day)s::date AS day, e.id AS enterprise, e.name, e.segment_code AS segment,
                  e.district_id AS district, e.above_designated_size, e.specialized,
                  e.little_giant, coalesce(k.devices, (SELECT count(*) FROM devices d
                       WHERE d.enterprise_id = e.id)) AS devices,
                  coalesce(k.reported, 0) AS networked, coalesce(k.running_s, 0) AS running_s,
                  coalesce(k.calendar_s, 0) AS calendar_s, coalesce(k.parts, 0) AS output,
                  k.good, k.reject, coalesce(k.energy_kwh, 0) AS energy_kwh
           FROM enterprises e
           LEFT JOIN kpi_enterprise_daily k ON k.enterprise_id = e.id AND k.day = %(day)s
           WHERE %(ents)s::text[] IS NULL OR e.id = ANY(%(ents)s::text[])
           ORDER BY e.id""",
        {"day": day, "ents": enterprises},
    )
    rows = []
    for row in await cursor.fetchall():
        devices = int(row["devices"])
        rows.append(
            {
                "day": row["day"].isoformat(),
                "enterprise": row["enterprise"],
                "name": row["name"],
                "segment": row["segment"],
                "district": row["district"],
                "above_designated_size": row["above_designated_size"],
                "specialized": row["specialized"],
                "little_giant": row["little_giant"],
                "devices": devices,
                "networked": int(row["networked"]),
                "networked_rate": _ratio(int(row["networked"]), devices),
                "running_h": round(float(row["running_s"]) / 3600, 3),
                "utilization": _ratio(float(row["running_s"]), float(row["calendar_s"])),
                "output": round(float(row["output"]), 1),
                "good": _round(row["good"]),
                "reject": _round(row["reject"]),
                "energy_kwh": round(float(row["energy_kwh"]), 3),
                "kwh_per_part": _ratio(float(row["energy_kwh"]), float(row["output"])),
            }
        )
    return rows

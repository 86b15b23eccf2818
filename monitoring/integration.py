"""Data-integration measures (数据贯通): how completely and how quickly each device's data arrives.

docs/kpis.md ("Data integration") defines every figure; in short, per device and period:

- **networked**: the device sent any sample in the period; an enterprise's networked share is
  networked / registered devices (and online / registered now, when the period includes today);
- **completeness**: the share of the device's expected signal-time covered by received samples.
  A signal is expected from the gateway's DeviceStatus.max_silence_s (wire 1.2: heartbeat plus
  poll interval), and a received sample (good or uncertain) covers the ``max_silence + tolerance``
  seconds after it: report by exception keeps a steady signal at one sample per heartbeat, which
  therefore reads as complete, and only a silence longer than promised counts as missing;
- **longest gap**: the longest time between two received samples of one expected signal
  (which signal, from when to when), within the day;
- **timeliness**: delay from the sample time to the commit that stored it, per delivery
  (ingest/delays.py: p50, p95 as bucket upper bounds, mean and max);
- **coverage**: of the enterprise's machine classes that belong to its segment's catalogue
  (device_profiles/<segment>/), the share whose devices report the signal families the KPIs need:
  machine state, production counters and energy.

Layers: ``refresh_day`` materializes integration_device_daily (migration 0105) from raw telemetry
once per refresh (the app refreshes today and yesterday every ``refresh.integration_s``); the
query functions (``device_measures``, ``enterprise_measures``, ``group_measures``,
``enterprise_trend``) read those rows and ingest_delay_daily and return pydantic models.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict
from ruamel.yaml import YAML

from ingest.delays import BUCKETS, percentile_bound
from monitoring.kpis import city_today, day_start
from monitoring.settings import KpiSettings

MAX_SILENCE_CAP_S: Final = 6 * 3600.0
"""Declared silences are capped here: it bounds how far before a day the refresh looks for the
sample that covers the day's first minutes."""


# --------------------------------------------------------------------------- catalogue


@functools.cache
def _catalogue() -> dict[str, tuple[str, str]]:
    """profile id -> (segment folder, machine kind) of the shipped device-profile library."""
    yaml = YAML(typ="safe")
    found: dict[str, tuple[str, str]] = {}
    root = resources.files("device_profiles")
    for folder in root.iterdir():
        if not folder.is_dir() or folder.name.startswith(("_", ".")):
            continue
        for item in folder.iterdir():
            if not item.name.endswith(".yaml"):
                continue
            data = yaml.load(item.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("machine_kind") and not data.get("abstract"):
                found[str(data.get("id", item.name[:-5]))] = (
                    folder.name,
                    str(data["machine_kind"]),
                )
    return found


def segment_classes(segment: str | None) -> tuple[str, ...]:
    """The machine classes (machine kinds) of a segment's profile catalogue, sorted."""
    if not segment:
        return ()
    return tuple(sorted({kind for seg, kind in _catalogue().values() if seg == segment}))


def machine_class(machine_kind: str, profile: str) -> str:
    """A device's class: its registry machine kind, else its profile's kind in the catalogue."""
    if machine_kind:
        return machine_kind
    entry = _catalogue().get(profile.removesuffix(".yaml"))
    return entry[1] if entry else ""


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Gap(_Model):
    """The longest time without a received sample of one expected signal."""

    seconds: float
    signal: str | None
    start: datetime
    end: datetime
    device: str | None = None
    """The device (in enterprise and group answers)."""


class Delay(_Model):
    """Delay from sample time to storage over a period's live deliveries (docs/kpis.md)."""

    deliveries: int
    p50_s: float | None
    """Upper bound: the edge of the histogram bucket holding the median (ingest/delays.py)."""
    p95_s: float | None
    mean_s: float | None
    max_s: float | None
    historical_deliveries: int
    """Deliveries replayed from a gateway's backlog after an outage, counted apart."""
    historical_max_s: float | None


class DeviceIntegration(_Model):
    enterprise: str
    device: str
    name: str
    machine_class: str
    first_day: date
    last_day: date
    networked: bool
    """Any sample (any quality) received in the period."""
    online: bool | None
    """Online now (docs/kpis.md "online"); None when the period does not include today."""
    expected_signals: int
    declared: bool
    """Expected signals and their silences came from the gateway (wire 1.2), not the default."""
    window_s: float
    """Seconds the device was expected to report: the period from its first sample ever."""
    completeness: float | None
    """Covered / expected signal-seconds; None when nothing was expected (never reported)."""
    expected_samples: float
    """Heartbeats owed in the window: sum over expected signals of window / max silence."""
    samples: int
    bad_samples: int
    longest_gap: Gap | None
    delay: Delay
    reports_state: bool
    reports_counters: bool
    reports_energy: bool


class ClassCoverage(_Model):
    machine_class: str
    devices: int
    reporting_all: int
    """Devices of the class that reported state, counters and energy in the period."""
    state: bool
    counters: bool
    energy: bool
    covered: bool
    """Some device of the class reported all three families."""


class EnterpriseIntegration(_Model):
    enterprise: str
    segment: str | None
    first_day: date
    last_day: date
    registered: int
    networked: int
    networked_share: float | None
    online: int | None
    online_share: float | None
    completeness: float | None
    expected_samples: float
    samples: int
    longest_gap: Gap | None
    delay: Delay
    segment_classes: int
    """Machine classes in the segment's profile catalogue."""
    classes: list[ClassCoverage]
    """The enterprise's devices' classes that belong to its segment's catalogue."""
    class_coverage: float | None
    """Covered classes / classes present; None when the enterprise has none of the catalogue."""
    unclassified_devices: int
    """Devices whose class is not in the segment's catalogue (meters, compressors, unknown)."""


class GroupClassCoverage(_Model):
    machine_class: str
    enterprises: int
    covering: int


class GroupIntegration(_Model):
    """A segment (``segment`` set) or the city (``segment`` None), or any set of enterprises."""

    segment: str | None
    first_day: date
    last_day: date
    enterprises: int
    registered: int
    networked: int
    networked_share: float | None
    online: int | None
    online_share: float | None
    completeness: float | None
    expected_samples: float
    samples: int
    longest_gap: Gap | None
    delay: Delay
    classes: list[GroupClassCoverage]
    class_coverage: float | None
    """Sum over enterprises of covered classes / classes present."""


# --------------------------------------------------------------------------- refresh

_REFRESH: Final = """
WITH dev AS (
    SELECT d.key, d.enterprise_id, d.max_silence_s FROM devices d
),
expected AS (
    SELECT dev.key AS device_key, j.key AS signal,
           least(greatest(j.value::float8, 1), %(cap)s) AS m, true AS declared
    FROM dev CROSS JOIN LATERAL jsonb_each_text(dev.max_silence_s) j
    WHERE jsonb_typeof(dev.max_silence_s) = 'object'
    UNION ALL
    SELECT cv.device_key, g.name, %(default_s)s, false
    FROM current_values cv JOIN dev ON dev.key = cv.device_key
    JOIN signals g ON g.id = cv.signal_id
    WHERE jsonb_typeof(dev.max_silence_s) IS DISTINCT FROM 'object'
      AND NOT (g.name = 'machine_state' AND cv.value_text = 'offline')
),
earlier AS (
    SELECT DISTINCT device_key FROM integration_device_daily
    WHERE day < %(day)s AND samples + bad_samples > 0
),
counts AS (
    SELECT t.device_key, min(t.ts) AS first_ts,
           count(*) FILTER (WHERE t.quality < 2) AS samples,
           count(*) FILTER (WHERE t.quality = 2) AS bad_samples,
           coalesce(bool_or(g.base = 'machine_state') FILTER (WHERE t.quality < 2), false)
               AS has_state,
           coalesce(bool_or(g.base IN ('part_count', 'good_count', 'reject_count'))
               FILTER (WHERE t.quality < 2), false) AS has_counter,
           coalesce(bool_or(g.base = 'active_energy') FILTER (WHERE t.quality < 2), false)
               AS has_energy
    FROM telemetry t JOIN signals g ON g.id = t.signal_id
    WHERE t.ts >= %(a)s AND t.ts < %(b)s
      AND NOT (g.name = 'machine_state' AND t.value_text IS NOT DISTINCT FROM 'offline')
    GROUP BY t.device_key
),
win AS (
    SELECT dev.key AS device_key, dev.enterprise_id,
           CASE WHEN e.device_key IS NOT NULL THEN %(a)s::timestamptz ELSE c.first_ts END AS wa
    FROM dev LEFT JOIN earlier e ON e.device_key = dev.key
    LEFT JOIN counts c ON c.device_key = dev.key
),
pairs AS (
    SELECT x.device_key, g.id AS signal_id, x.signal, x.m + %(tol)s AS mt, w.wa,
           date_part('epoch', w.wa) AS wae
    FROM expected x JOIN win w ON w.device_key = x.device_key AND w.wa IS NOT NULL
    JOIN signals g ON g.name = x.signal
),
real AS (
    -- One sequential pass over the day (plus the longest silence before it), hashed against the
    -- expected signals: much cheaper than an index probe per sample. Times as epoch seconds
    -- (date_part: double precision) keep the per-row arithmetic in floats.
    SELECT p.device_key, p.signal_id, p.signal, p.mt, p.wae, t.ts, date_part('epoch', t.ts) AS e,
           date_part('epoch', lead(t.ts) OVER (PARTITION BY t.device_key, t.signal_id
                                               ORDER BY t.ts)) AS ne
    FROM telemetry t
    JOIN pairs p ON p.device_key = t.device_key AND p.signal_id = t.signal_id
    WHERE t.ts >= %(lookback_from)s AND t.ts < %(b)s AND t.quality < 2
      AND t.ts >= p.wa - make_interval(secs => p.mt)
      AND NOT (p.signal = 'machine_state' AND t.value_text IS NOT DISTINCT FROM 'offline')
),
cover AS (
    -- One pass per signal: covered seconds, first sample, and the longest gap as the greatest
    -- [seconds, -start] pair (arrays compare element by element: the longest, then earliest).
    SELECT device_key, min(signal) AS signal, min(ts) AS first_ts,
           sum(greatest(0, least(coalesce(ne, %(be)s), e + mt, %(be)s) - greatest(e, wae)))
               AS covered_s,
           max(ARRAY[coalesce(ne, %(be)s) - greatest(e, wae), -greatest(e, wae)]) AS longest
    FROM real GROUP BY device_key, signal_id  -- the window's order: no sort
),
gaps AS (
    SELECT device_key, signal, to_timestamp(-longest[2]) AS gs,
           to_timestamp(-longest[2] + longest[1]) AS ge
    FROM cover
    UNION ALL
    -- The time before a signal's first sample when no earlier sample covers the window start.
    SELECT x.device_key, x.signal, w.wa, coalesce(c.first_ts, %(b)s)
    FROM expected x JOIN win w ON w.device_key = x.device_key AND w.wa IS NOT NULL
    LEFT JOIN cover c ON c.device_key = x.device_key AND c.signal = x.signal
    WHERE c.first_ts IS NULL OR c.first_ts > w.wa
),
longest AS (
    SELECT DISTINCT ON (device_key) device_key, signal, gs, ge FROM gaps WHERE ge > gs
    ORDER BY device_key, ge - gs DESC, signal, gs
),
per_device AS (
    SELECT x.device_key, count(*) AS expected_signals, bool_and(x.declared) AS declared,
           sum(extract(epoch FROM %(b)s - w.wa)) AS expected_s,
           sum(coalesce(c.covered_s, 0)) AS covered_s,
           sum(extract(epoch FROM %(b)s - w.wa) / x.m) AS expected_samples
    FROM expected x JOIN win w ON w.device_key = x.device_key AND w.wa IS NOT NULL
    LEFT JOIN cover c ON c.device_key = x.device_key AND c.signal = x.signal
    GROUP BY x.device_key
)
INSERT INTO integration_device_daily AS k (day, device_key, enterprise_id, window_start, window_s,
    expected_signals, declared, expected_s, covered_s, expected_samples, samples, bad_samples,
    longest_gap_s, longest_gap_signal, longest_gap_start, longest_gap_end,
    has_state, has_counter, has_energy)
SELECT %(day)s, w.device_key, w.enterprise_id, w.wa, extract(epoch FROM %(b)s - w.wa),
       coalesce(p.expected_signals, 0), coalesce(p.declared, false),
       coalesce(p.expected_s, 0), coalesce(p.covered_s, 0), coalesce(p.expected_samples, 0),
       coalesce(c.samples, 0), coalesce(c.bad_samples, 0),
       extract(epoch FROM l.ge - l.gs), l.signal, l.gs, l.ge,
       coalesce(c.has_state, false), coalesce(c.has_counter, false),
       coalesce(c.has_energy, false)
FROM win w
LEFT JOIN per_device p ON p.device_key = w.device_key
LEFT JOIN counts c ON c.device_key = w.device_key
LEFT JOIN longest l ON l.device_key = w.device_key
WHERE w.wa IS NOT NULL AND w.wa < %(b)s
ON CONFLICT (day, device_key) DO UPDATE SET
    enterprise_id = EXCLUDED.enterprise_id, window_start = EXCLUDED.window_start,
    window_s = EXCLUDED.window_s, expected_signals = EXCLUDED.expected_signals,
    declared = EXCLUDED.declared, expected_s = EXCLUDED.expected_s,
    covered_s = EXCLUDED.covered_s, expected_samples = EXCLUDED.expected_samples,
    samples = EXCLUDED.samples, bad_samples = EXCLUDED.bad_samples,
    longest_gap_s = EXCLUDED.longest_gap_s, longest_gap_signal = EXCLUDED.longest_gap_signal,
    longest_gap_start = EXCLUDED.longest_gap_start, longest_gap_end = EXCLUDED.longest_gap_end,
    has_state = EXCLUDED.has_state, has_counter = EXCLUDED.has_counter,
    has_energy = EXCLUDED.has_energy
"""


async def refresh_day(
    conn: AsyncConnection[Any], settings: KpiSettings, day: date, now: datetime | None = None
) -> datetime:
    """Materialize ``day``'s measures for [day start, min(day end, now)); return that end."""
    now = now or datetime.now(UTC)
    start = day_start(settings, day)
    through = min(day_start(settings, day + timedelta(days=1)), now.replace(microsecond=0))
    if through <= start:
        return start
    cur = await conn.execute(
        """SELECT max(least(greatest(j.value::float8, 1), %s)) FROM devices d,
               jsonb_each_text(CASE WHEN jsonb_typeof(d.max_silence_s) = 'object'
                                    THEN d.max_silence_s END) j""",
        (MAX_SILENCE_CAP_S,),
    )
    row = await cur.fetchone()
    longest_silence = max(float(row[0] or 0.0) if row else 0.0, settings.default_max_silence_s)
    params = {
        "day": day,
        "a": start,
        "b": through,
        "be": through.timestamp(),
        "lookback_from": start - timedelta(seconds=longest_silence + settings.silence_tolerance_s),
        "cap": MAX_SILENCE_CAP_S,
        "default_s": settings.default_max_silence_s,
        "tol": settings.silence_tolerance_s,
    }
    async with conn.transaction():
        await conn.execute(_REFRESH, params, prepare=False)
        await conn.execute(
            """INSERT INTO integration_daily_state (day, through, refreshed_at)
               VALUES (%s, %s, now())
               ON CONFLICT (day) DO UPDATE SET through = EXCLUDED.through, refreshed_at = now()""",
            (day, through),
        )
    return through


LATE_DATA_GRACE: Final = timedelta(hours=6)
"""A past day in the recent set is refreshed again until this long after its end (late data)."""


async def refresh_daily(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    *,
    days_back: int = 1,
    backfill_days: int = 35,
    recent: bool = True,
    now: datetime | None = None,
) -> list[date]:
    """Refresh the days that need it, oldest first (each device's first-data day must be known
    before the days after it), and return them.

    - With ``recent``: today, and each of the ``days_back`` days before it until
      ``LATE_DATA_GRACE`` after its end (late data, a gateway's backlog).
    - Always: each past day of the last ``backfill_days`` never refreshed to its end that has
      telemetry or follows a materialized day (a day without any sample after devices went live
      is a real outage: completeness 0), and each refreshed past day that received deliveries
      since (``ingest_delay_daily.updated_at``, stored by the ingest every minute). History
      loaded later (a backlog, the demo's 30 days) is picked up this way, and yesterday gets its
      complete refresh soon after midnight.
    """
    now = now or datetime.now(UTC)
    today = city_today(settings, now)
    first = today - timedelta(days=backfill_days)
    cur = await conn.execute(
        """SELECT g.day::date, s.through, s.refreshed_at, u.delivered_at
           FROM generate_series(%s::date, %s::date, interval '1 day') AS g(day)
           LEFT JOIN integration_daily_state s ON s.day = g.day::date
           LEFT JOIN (SELECT day, max(updated_at) AS delivered_at FROM ingest_delay_daily
                      WHERE day >= %s GROUP BY day) u ON u.day = g.day::date
           ORDER BY 1""",
        (first, today - timedelta(days=1), first),
    )
    past = await cur.fetchall()
    days: set[date] = {today} if recent else set()
    cur = await conn.execute("SELECT min(day) FROM integration_device_daily")
    row = await cur.fetchone()
    first_materialized = row[0] if row else None
    for day, through, refreshed_at, delivered_at in past:
        end = day_start(settings, day + timedelta(days=1))
        if through is None or through < end:
            if first_materialized is not None and day >= first_materialized:
                days.add(day)
            elif await _has_telemetry(conn, settings, day):
                days.add(day)
                first_materialized = day  # the days after it follow a materialized day
        elif delivered_at is not None and delivered_at > refreshed_at:
            days.add(day)  # data for it arrived since (ingest_delay_daily counts deliveries)
        elif recent and day >= today - timedelta(days=days_back):
            if refreshed_at < end + LATE_DATA_GRACE:
                days.add(day)
    for day in sorted(days):
        await refresh_day(conn, settings, day, now)
    return sorted(days)


async def _has_telemetry(conn: AsyncConnection[Any], settings: KpiSettings, day: date) -> bool:
    """Whether ``day`` has any sample: stops at the first row, and an empty day's partition or
    chunk is empty (no scan of the days around it)."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM telemetry WHERE ts >= %s AND ts < %s)",
        (day_start(settings, day), day_start(settings, day + timedelta(days=1))),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


# --------------------------------------------------------------------------- reading


_ROWS: Final = """
WITH dev AS (
    SELECT d.key, d.enterprise_id, d.device_id, d.name, d.machine_kind, d.profile,
           e.segment_code
    FROM devices d JOIN enterprises e ON e.id = d.enterprise_id
    WHERE (%(ents)s::text[] IS NULL OR d.enterprise_id = ANY(%(ents)s::text[]))
      AND (%(segment)s::text IS NULL OR e.segment_code = %(segment)s)
      AND (%(device_key)s::integer IS NULL OR d.key = %(device_key)s)
),
integ AS (
    SELECT i.device_key, {day_col} AS day, sum(i.window_s) AS window_s,
           max(i.expected_signals) AS expected_signals, bool_and(i.declared) AS declared,
           sum(i.expected_s) AS expected_s, sum(i.covered_s) AS covered_s,
           sum(i.expected_samples) AS expected_samples, sum(i.samples) AS samples,
           sum(i.bad_samples) AS bad_samples,
           bool_or(i.has_state) AS has_state, bool_or(i.has_counter) AS has_counter,
           bool_or(i.has_energy) AS has_energy
    FROM integration_device_daily i JOIN dev ON dev.key = i.device_key
    WHERE i.day >= %(first)s AND i.day <= %(last)s
    GROUP BY i.device_key{day_group}
),
delays AS (
    SELECT d.device_key, {delay_day_col} AS day, sum(d.deliveries) AS deliveries,
           array_agg(d.histogram) AS histograms, sum(d.sum_delay_s) AS sum_delay_s,
           max(d.max_delay_s) FILTER (WHERE d.deliveries > 0) AS max_delay_s,
           sum(d.historical_deliveries) AS historical_deliveries,
           max(d.historical_max_delay_s) FILTER (WHERE d.historical_deliveries > 0)
               AS historical_max_delay_s
    FROM ingest_delay_daily d JOIN dev ON dev.key = d.device_key
    WHERE d.day >= %(first)s AND d.day <= %(last)s
    GROUP BY d.device_key{delay_day_group}
),
present AS (
    SELECT p.device_key, p.last_seen FROM device_presence p JOIN dev ON dev.key = p.device_key
),
-- A day's longest gap that runs to midnight continues into the next day's when that one starts
-- at midnight on the same signal: such runs are joined (a device down for days has one gap).
gap_days AS (
    SELECT i.device_key, {day_col} AS period, i.day, i.longest_gap_signal AS signal,
           i.longest_gap_start AS gs, i.longest_gap_end AS ge,
           lag(i.longest_gap_end) OVER w AS prev_ge, lag(i.longest_gap_signal) OVER w AS prev_sig
    FROM integration_device_daily i JOIN dev ON dev.key = i.device_key
    WHERE i.day >= %(first)s AND i.day <= %(last)s AND i.longest_gap_s IS NOT NULL
    WINDOW w AS (PARTITION BY i.device_key ORDER BY i.day)
),
gap_runs AS (
    SELECT device_key, period, signal, gs, ge,
           sum(CASE WHEN prev_ge = gs AND prev_sig = signal AND {chain} THEN 0 ELSE 1 END)
               OVER (PARTITION BY device_key ORDER BY day) AS run
    FROM gap_days
),
gaps AS (
    SELECT DISTINCT ON (device_key, period) device_key, period, signal, gs, ge
    FROM (SELECT device_key, period, run, min(signal) AS signal, min(gs) AS gs, max(ge) AS ge
          FROM gap_runs GROUP BY device_key, period, run) r
    ORDER BY device_key, period, ge - gs DESC, gs
)
SELECT dev.key, dev.enterprise_id, dev.device_id, dev.name, dev.machine_kind, dev.profile,
       dev.segment_code, coalesce(i.day, dl.day) AS day, i.window_s, i.expected_signals,
       i.declared, i.expected_s, i.covered_s, i.expected_samples, i.samples, i.bad_samples,
       extract(epoch FROM g.ge - g.gs) AS gap_s, g.signal AS gap_signal, g.gs AS gap_start,
       g.ge AS gap_end, i.has_state, i.has_counter, i.has_energy,
       dl.deliveries, dl.histograms, dl.sum_delay_s, dl.max_delay_s, dl.historical_deliveries,
       dl.historical_max_delay_s, p.last_seen, s.state
FROM dev
LEFT JOIN integ i ON i.device_key = dev.key
LEFT JOIN delays dl ON dl.device_key = dev.key {delay_join}
LEFT JOIN present p ON p.device_key = dev.key
LEFT JOIN gaps g ON g.device_key = dev.key AND g.period IS NOT DISTINCT FROM i.day
LEFT JOIN device_states s ON s.device_key = dev.key
ORDER BY dev.enterprise_id, dev.device_id, day
"""


def _rows_sql(by_day: bool) -> str:
    if by_day:
        return _ROWS.format(
            day_col="i.day",
            day_group=", i.day",
            delay_day_col="d.day",
            delay_day_group=", d.day",
            delay_join="AND (i.day IS NULL OR dl.day = i.day)",
            chain="false",
        )
    return _ROWS.format(
        day_col="NULL::date",
        day_group="",
        delay_day_col="NULL::date",
        delay_day_group="",
        delay_join="",
        chain="true",
    )


@dataclass(slots=True)
class _DelayAcc:
    histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    deliveries: int = 0
    sum_delay_s: float = 0.0
    max_s: float | None = None
    historical: int = 0
    historical_max_s: float | None = None

    def add_histograms(self, histograms: Iterable[Iterable[int]] | None) -> None:
        for histogram in histograms or ():
            for index, count in enumerate(histogram):
                self.histogram[index] += int(count)

    def add(self, other: _DelayAcc) -> None:
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]
        self.deliveries += other.deliveries
        self.sum_delay_s += other.sum_delay_s
        self.max_s = _max(self.max_s, other.max_s)
        self.historical += other.historical
        self.historical_max_s = _max(self.historical_max_s, other.historical_max_s)

    def model(self) -> Delay:
        return Delay(
            deliveries=self.deliveries,
            p50_s=percentile_bound(self.histogram, 0.5),
            p95_s=percentile_bound(self.histogram, 0.95),
            mean_s=round(self.sum_delay_s / self.deliveries, 3) if self.deliveries else None,
            max_s=None if self.max_s is None else round(self.max_s, 3),
            historical_deliveries=self.historical,
            historical_max_s=(
                None if self.historical_max_s is None else round(self.historical_max_s, 3)
            ),
        )


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


@dataclass(slots=True)
class _DeviceRow:
    """One device's raw sums for a period (or a day), before they become a model."""

    key: int
    enterprise: str
    device: str
    name: str
    machine_class: str
    segment: str | None
    day: date | None
    window_s: float
    expected_signals: int
    declared: bool
    expected_s: float
    covered_s: float
    expected_samples: float
    samples: int
    bad_samples: int
    gap: Gap | None
    has_state: bool
    has_counter: bool
    has_energy: bool
    delay: _DelayAcc
    online: bool | None

    @property
    def networked(self) -> bool:
        return self.samples + self.bad_samples > 0

    @property
    def reports_all(self) -> bool:
        return self.has_state and self.has_counter and self.has_energy

    def model(self, first_day: date, last_day: date) -> DeviceIntegration:
        return DeviceIntegration(
            enterprise=self.enterprise,
            device=self.device,
            name=self.name,
            machine_class=self.machine_class,
            first_day=first_day,
            last_day=last_day,
            networked=self.networked,
            online=self.online,
            expected_signals=self.expected_signals,
            declared=self.declared,
            window_s=round(self.window_s, 3),
            completeness=_share(self.covered_s, self.expected_s),
            expected_samples=round(self.expected_samples, 1),
            samples=self.samples,
            bad_samples=self.bad_samples,
            longest_gap=self.gap,
            delay=self.delay.model(),
            reports_state=self.has_state,
            reports_counters=self.has_counter,
            reports_energy=self.has_energy,
        )


def _share(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


async def _device_rows(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    first_day: date,
    last_day: date,
    now: datetime,
    *,
    enterprises: Collection[str] | None,
    segment: str | None,
    device_key: int | None,
    by_day: bool,
) -> list[_DeviceRow]:
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        _rows_sql(by_day),
        {
            "ents": None if enterprises is None else sorted(enterprises),
            "segment": segment,
            "device_key": device_key,
            "first": first_day,
            "last": last_day,
        },
        prepare=False,
    )
    includes_today = last_day >= city_today(settings, now)
    online_since = now - timedelta(seconds=settings.online_window_s)
    rows = []
    for r in await cursor.fetchall():
        delay = _DelayAcc(
            deliveries=int(r["deliveries"] or 0),
            sum_delay_s=float(r["sum_delay_s"] or 0.0),
            max_s=r["max_delay_s"],
            historical=int(r["historical_deliveries"] or 0),
            historical_max_s=r["historical_max_delay_s"],
        )
        delay.add_histograms(r["histograms"])
        gap = None
        if r["gap_s"] is not None:
            gap = Gap(
                seconds=round(float(r["gap_s"]), 3),
                signal=r["gap_signal"],
                start=r["gap_start"],
                end=r["gap_end"],
                device=r["device_id"],
            )
        online = None
        if includes_today and not by_day:
            seen = r["last_seen"]
            online = seen is not None and seen >= online_since and r["state"] != "offline"
        rows.append(
            _DeviceRow(
                key=r["key"],
                enterprise=r["enterprise_id"],
                device=r["device_id"],
                name=r["name"],
                machine_class=machine_class(r["machine_kind"], r["profile"]),
                segment=r["segment_code"],
                day=r["day"],
                window_s=float(r["window_s"] or 0.0),
                expected_signals=int(r["expected_signals"] or 0),
                declared=bool(r["declared"]),
                expected_s=float(r["expected_s"] or 0.0),
                covered_s=float(r["covered_s"] or 0.0),
                expected_samples=float(r["expected_samples"] or 0.0),
                samples=int(r["samples"] or 0),
                bad_samples=int(r["bad_samples"] or 0),
                gap=gap,
                has_state=bool(r["has_state"]),
                has_counter=bool(r["has_counter"]),
                has_energy=bool(r["has_energy"]),
                delay=delay,
                online=online,
            )
        )
    return rows


@dataclass(slots=True)
class _GroupAcc:
    """Sums of device rows for an enterprise or a group of enterprises."""

    registered: int = 0
    networked: int = 0
    online: int = 0
    expected_s: float = 0.0
    covered_s: float = 0.0
    expected_samples: float = 0.0
    samples: int = 0
    gap: Gap | None = None
    delay: _DelayAcc = field(default_factory=_DelayAcc)
    any_online_known: bool = False

    def add(self, row: _DeviceRow) -> None:
        self.registered += 1
        self.networked += row.networked
        if row.online is not None:
            self.any_online_known = True
            self.online += row.online
        self.expected_s += row.expected_s
        self.covered_s += row.covered_s
        self.expected_samples += row.expected_samples
        self.samples += row.samples
        if row.gap is not None and (self.gap is None or row.gap.seconds > self.gap.seconds):
            self.gap = row.gap
        self.delay.add(row.delay)

    def common(self) -> dict[str, Any]:
        online = self.online if self.any_online_known else None
        return {
            "registered": self.registered,
            "networked": self.networked,
            "networked_share": _share(self.networked, self.registered),
            "online": online,
            "online_share": None if online is None else _share(online, self.registered),
            "completeness": _share(self.covered_s, self.expected_s),
            "expected_samples": round(self.expected_samples, 1),
            "samples": self.samples,
            "longest_gap": self.gap,
            "delay": self.delay.model(),
        }


def _class_coverage(rows: list[_DeviceRow], segment: str | None) -> tuple[list[ClassCoverage], int]:
    catalogue = set(segment_classes(segment))
    by_class: dict[str, list[_DeviceRow]] = {}
    unclassified = 0
    for row in rows:
        if row.machine_class in catalogue:
            by_class.setdefault(row.machine_class, []).append(row)
        else:
            unclassified += 1
    classes = []
    for kind, members in sorted(by_class.items()):
        reporting_all = sum(1 for m in members if m.reports_all)
        classes.append(
            ClassCoverage(
                machine_class=kind,
                devices=len(members),
                reporting_all=reporting_all,
                state=any(m.has_state for m in members),
                counters=any(m.has_counter for m in members),
                energy=any(m.has_energy for m in members),
                covered=reporting_all > 0,
            )
        )
    return classes, unclassified


def _enterprise_model(
    enterprise: str,
    segment: str | None,
    rows: list[_DeviceRow],
    first_day: date,
    last_day: date,
) -> EnterpriseIntegration:
    acc = _GroupAcc()
    for row in rows:
        acc.add(row)
    classes, unclassified = _class_coverage(rows, segment)
    covered = sum(1 for c in classes if c.covered)
    return EnterpriseIntegration(
        enterprise=enterprise,
        segment=segment,
        first_day=first_day,
        last_day=last_day,
        segment_classes=len(segment_classes(segment)),
        classes=classes,
        class_coverage=_share(covered, len(classes)),
        unclassified_devices=unclassified,
        **acc.common(),
    )


async def _enterprise_segments(
    conn: AsyncConnection[Any], enterprises: Collection[str] | None, segment: str | None
) -> dict[str, str | None]:
    cur = await conn.execute(
        """SELECT id, segment_code FROM enterprises
           WHERE (%(ents)s::text[] IS NULL OR id = ANY(%(ents)s::text[]))
             AND (%(segment)s::text IS NULL OR segment_code = %(segment)s)
           ORDER BY id""",
        {"ents": None if enterprises is None else sorted(enterprises), "segment": segment},
    )
    return {row[0]: row[1] for row in await cur.fetchall()}


# --------------------------------------------------------------------------- public API


async def device_measures(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    first_day: date,
    last_day: date,
    *,
    enterprises: Collection[str] | None = None,
    segment: str | None = None,
    device_key: int | None = None,
    now: datetime | None = None,
) -> list[DeviceIntegration]:
    """Per device in scope (ordered by enterprise and device id) for days first..last."""
    now = now or datetime.now(UTC)
    rows = await _device_rows(
        conn, settings, first_day, last_day, now,
        enterprises=enterprises, segment=segment, device_key=device_key, by_day=False,
    )  # fmt: skip
    return [row.model(first_day, last_day) for row in rows]


async def enterprise_measures(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    first_day: date,
    last_day: date,
    *,
    enterprises: Collection[str] | None = None,
    segment: str | None = None,
    now: datetime | None = None,
) -> list[EnterpriseIntegration]:
    """Per enterprise in scope (ordered by id), including enterprises without devices."""
    now = now or datetime.now(UTC)
    segments = await _enterprise_segments(conn, enterprises, segment)
    rows = await _device_rows(
        conn, settings, first_day, last_day, now,
        enterprises=list(segments), segment=None, device_key=None, by_day=False,
    )  # fmt: skip
    grouped: dict[str, list[_DeviceRow]] = {ent: [] for ent in segments}
    for row in rows:
        grouped[row.enterprise].append(row)
    return [
        _enterprise_model(ent, segments[ent], members, first_day, last_day)
        for ent, members in grouped.items()
    ]


async def group_measures(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    first_day: date,
    last_day: date,
    *,
    segment: str | None = None,
    enterprises: Collection[str] | None = None,
    now: datetime | None = None,
) -> GroupIntegration:
    """A segment's measures (``segment``), the city's (neither), or a set of enterprises'."""
    now = now or datetime.now(UTC)
    segments = await _enterprise_segments(conn, enterprises, segment)
    rows = await _device_rows(
        conn, settings, first_day, last_day, now,
        enterprises=list(segments), segment=None, device_key=None, by_day=False,
    )  # fmt: skip
    acc = _GroupAcc()
    grouped: dict[str, list[_DeviceRow]] = {ent: [] for ent in segments}
    for row in rows:
        acc.add(row)
        grouped[row.enterprise].append(row)
    per_class: dict[str, list[int]] = {}
    for ent, members in grouped.items():
        for coverage in _class_coverage(members, segments[ent])[0]:
            counts = per_class.setdefault(coverage.machine_class, [0, 0])
            counts[0] += 1
            counts[1] += coverage.covered
    classes = [
        GroupClassCoverage(machine_class=kind, enterprises=n, covering=c)
        for kind, (n, c) in sorted(per_class.items())
    ]
    return GroupIntegration(
        segment=segment,
        first_day=first_day,
        last_day=last_day,
        enterprises=len(segments),
        classes=classes,
        class_coverage=_share(
            sum(c.covering for c in classes), sum(c.enterprises for c in classes)
        ),
        **acc.common(),
    )


async def enterprise_trend(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    enterprise: str,
    first_day: date,
    last_day: date,
    *,
    now: datetime | None = None,
) -> list[EnterpriseIntegration]:
    """One enterprise's measures for each day first..last (days without rows: zero networked,
    completeness None), oldest first; ``online`` is None (it is a now figure)."""
    now = now or datetime.now(UTC)
    segments = await _enterprise_segments(conn, [enterprise], None)
    if enterprise not in segments:
        return []
    rows = await _device_rows(
        conn, settings, first_day, last_day, now,
        enterprises=[enterprise], segment=None, device_key=None, by_day=True,
    )  # fmt: skip
    devices = {(r.key, r.device, r.name, r.machine_class) for r in rows}
    by_day: dict[date, list[_DeviceRow]] = {}
    for row in rows:
        if row.day is not None:
            by_day.setdefault(row.day, []).append(row)
    trend = []
    day = first_day
    while day <= last_day:
        members = by_day.get(day, [])
        present = {r.key for r in members}
        # Devices without a row that day (not yet live, or no data ever) count as registered.
        members += [
            _silent_row(key, enterprise, device, name, kind, segments[enterprise], day)
            for key, device, name, kind in sorted(devices)
            if key not in present
        ]
        trend.append(_enterprise_model(enterprise, segments[enterprise], members, day, day))
        day += timedelta(days=1)
    return trend


def _silent_row(
    key: int, enterprise: str, device: str, name: str, kind: str, segment: str | None, day: date
) -> _DeviceRow:
    return _DeviceRow(
        key=key, enterprise=enterprise, device=device, name=name, machine_class=kind,
        segment=segment, day=day, window_s=0.0, expected_signals=0, declared=False,
        expected_s=0.0, covered_s=0.0, expected_samples=0.0, samples=0, bad_samples=0, gap=None,
        has_state=False, has_counter=False, has_energy=False, delay=_DelayAcc(), online=None,
    )  # fmt: skip

"""Before/after evidence of an enterprise's transformation: go-live, baseline, monthly figures.

docs/kpis.md ("Before/after evidence") defines every figure. All of them are sums over the
materialized daily rows of monitoring/kpis.py (``kpi_enterprise_daily``, ``kpi_device_daily``), never
over raw telemetry, so the evidence agrees with the daily trend and the daily export and costs one
query for any number of enterprises and periods.

- **Go-live** of a gateway: the earlier of its first birth (``gateway_boots.first_seen_at``, as a
  local day) and the first day its devices reported data. An enterprise goes live with its first
  gateway (or its first device data, for devices registered without a gateway).
- **Baseline**: the newest ``evidence_baselines`` row of the enterprise. ``entered``: figures from
  the pre-transformation diagnosis. ``measured`` (also the default without a row): the figures of
  the first N days from go-live (N = the row's ``measured_days``, else
  ``KpiSettings.evidence_baseline_days``).
- **Months**: calendar months after the baseline (measured: from the day after it; entered: from
  go-live), each cut at yesterday, the last complete day.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from monitoring.kpis import city_today
from monitoring.settings import KpiSettings

FIGURES: Final = (
    "utilization",
    "running_rate",
    "output_per_day",
    "reject_rate",
    "kwh_per_part",
    "oee",
    "fault_h_per_day",
)
"""The compared figures, in table order; docs/kpis.md defines each one."""

KPI_SIGNALS: Final = (
    "machine_state",
    "part_count",
    "good_count",
    "reject_count",
    "active_energy",
    "alarm_active",
)
"""Signal bases the figures rest on; the report lists which of them each device reports."""

HIGHER_IS_BETTER: Final = {
    "utilization": True,
    "running_rate": True,
    "output_per_day": True,
    "reject_rate": False,
    "kwh_per_part": False,
    "oee": True,
    "fault_h_per_day": False,
}


@dataclass(frozen=True, slots=True)
class Period:
    """Whole local days ``first_day..last_day`` (inclusive); label ``baseline`` or ``YYYY-MM``."""

    label: str
    first_day: date
    last_day: date

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
        }


@dataclass(slots=True)
class PeriodSums:
    """Sums of the daily rows of one enterprise over one period."""

    days: int = 0
    """Days on which at least one device reported."""
    device_days: int = 0
    ran_device_days: int = 0
    running_s: float = 0.0
    calendar_s: float = 0.0
    parts: float = 0.0
    good: float | None = None
    reject: float | None = None
    energy_kwh: float = 0.0
    fault_s: float = 0.0
    oee_good_s: float = 0.0
    oee_planned_s: float = 0.0

    def figures(self) -> dict[str, float | None]:
        """The compared figures; None where undefined (no data, no counters, no rated cycle)."""
        quality = (
            _ratio(self.reject, self.good + self.reject)
            if self.good is not None and self.reject is not None
            else None
        )
        return {
            "utilization": _ratio(self.running_s, self.calendar_s),
            "running_rate": _ratio(self.ran_device_days, self.device_days),
            "output_per_day": round(self.parts / self.days, 1) if self.days else None,
            "reject_rate": quality,
            "kwh_per_part": _ratio(self.energy_kwh, self.parts),
            "oee": _ratio(self.oee_good_s, self.oee_planned_s),
            "fault_h_per_day": round(self.fault_s / 3600 / self.days, 3) if self.days else None,
        }


def _ratio(num: float, den: float, digits: int = 4) -> float | None:
    return round(num / den, digits) if den else None


def compare(
    before: dict[str, float | None], after: dict[str, float | None]
) -> dict[str, dict[str, Any]]:
    """Per figure: both values, the difference, the relative change and whether it improved."""
    out: dict[str, dict[str, Any]] = {}
    for name in FIGURES:
        b, a = before.get(name), after.get(name)
        delta = None if a is None or b is None else round(a - b, 4)
        relative = None if delta is None or not b else round(delta / b, 4)
        improved = None if not delta else (delta > 0) == HIGHER_IS_BETTER[name]
        out[name] = {
            "before": b,
            "after": a,
            "delta": delta,
            "relative": relative,
            "improved": improved,
        }
    return out


# --------------------------------------------------------------------------- go-live


@dataclass(frozen=True, slots=True)
class GatewayGoLive:
    gateway: str
    first_birth: datetime | None
    first_data_day: date | None
    go_live: date | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "first_birth": self.first_birth.astimezone(UTC).isoformat()
            if self.first_birth
            else None,
            "first_data_day": _iso(self.first_data_day),
            "go_live": _iso(self.go_live),
        }


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _earliest(*days: date | None) -> date | None:
    known = [d for d in days if d is not None]
    return min(known) if known else None


async def go_lives(
    conn: AsyncConnection[Any], settings: KpiSettings, enterprises: Sequence[str]
) -> tuple[dict[str, list[GatewayGoLive]], dict[str, date | None]]:
    """Each enterprise's gateways with their go-live, and the enterprise's go-live day."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        """SELECT g.enterprise_id, g.id AS gateway,
                  (SELECT min(b.first_seen_at) FROM gateway_boots b
                   WHERE b.enterprise_id = g.enterprise_id AND b.gateway_id = g.id) AS first_birth,
                  (SELECT min(k.day) FROM kpi_device_daily k
                   JOIN devices d ON d.key = k.device_key
                   WHERE d.enterprise_id = g.enterprise_id AND d.gateway_id = g.id AND k.reported)
                   AS first_data_day
           FROM gateways g WHERE g.enterprise_id = ANY(%s::text[])
           ORDER BY g.enterprise_id, g.id""",
        (list(enterprises),),
    )
    zone = ZoneInfo(settings.timezone)
    gateways: dict[str, list[GatewayGoLive]] = {e: [] for e in enterprises}
    for row in await cursor.fetchall():
        birth: datetime | None = row["first_birth"]
        birth_day = birth.astimezone(zone).date() if birth else None
        gateways[row["enterprise_id"]].append(
            GatewayGoLive(
                row["gateway"],
                birth,
                row["first_data_day"],
                _earliest(birth_day, row["first_data_day"]),
            )
        )
    days = conn.cursor()
    await days.execute(
        """SELECT enterprise_id, min(day) FROM kpi_device_daily
           WHERE reported AND enterprise_id = ANY(%s::text[]) GROUP BY enterprise_id""",
        (list(enterprises),),
    )
    first_data: dict[str, date] = {ent: day for ent, day in await days.fetchall()}
    enterprise_go_live = {
        ent: _earliest(first_data.get(ent), *(g.go_live for g in gateways[ent]))
        for ent in enterprises
    }
    return gateways, enterprise_go_live


# --------------------------------------------------------------------------- baselines

BASELINE_COLUMNS: Final = (
    "id",
    "enterprise_id",
    "method",
    "measured_days",
    "source",
    "diagnosed_on",
    *FIGURES,
    "note",
    "entered_by",
    "entered_by_role",
    "entered_by_name",
    "entered_at",
)


def _baseline_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in BASELINE_COLUMNS if k not in ("enterprise_id", *FIGURES)}
    out["diagnosed_on"] = _iso(row["diagnosed_on"])
    out["entered_at"] = row["entered_at"].astimezone(UTC).isoformat()
    out["figures"] = {name: row[name] for name in FIGURES}
    return out


async def baseline_history(conn: AsyncConnection[Any], enterprise: str) -> list[dict[str, Any]]:
    """Every baseline entry of ``enterprise``, newest (the one in force) first."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        f"SELECT {', '.join(BASELINE_COLUMNS)} FROM evidence_baselines "
        "WHERE enterprise_id = %s ORDER BY id DESC",
        (enterprise,),
    )
    return [_baseline_json(row) for row in await cursor.fetchall()]


async def latest_baselines(
    conn: AsyncConnection[Any], enterprises: Sequence[str]
) -> dict[str, dict[str, Any]]:
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        f"""SELECT DISTINCT ON (enterprise_id) {", ".join(BASELINE_COLUMNS)}
            FROM evidence_baselines WHERE enterprise_id = ANY(%s::text[])
            ORDER BY enterprise_id, id DESC""",
        (list(enterprises),),
    )
    return {row["enterprise_id"]: _baseline_json(row) for row in await cursor.fetchall()}


async def add_baseline(
    conn: AsyncConnection[Any],
    enterprise: str,
    entry: dict[str, Any],
    *,
    token_id: int,
    role: str,
    name: str,
) -> dict[str, Any]:
    """Store a new baseline entry (it is in force from now on) and return it."""
    columns = ("method", "measured_days", "source", "diagnosed_on", *FIGURES, "note")
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        f"""INSERT INTO evidence_baselines (enterprise_id, {", ".join(columns)}, entered_by,
                                            entered_by_role, entered_by_name)
            VALUES (%s, {", ".join(["%s"] * len(columns))}, %s, %s, %s)
            RETURNING {", ".join(BASELINE_COLUMNS)}""",
        (enterprise, *(entry.get(c) for c in columns), token_id, role, name),
    )
    row = await cursor.fetchone()
    assert row is not None
    return _baseline_json(row)


# --------------------------------------------------------------------------- periods


def month_periods(start: date, last: date) -> list[Period]:
    """Calendar months covering ``start..last``, the first and last cut to that range."""
    periods = []
    first = start
    while first <= last:
        next_month = (first.replace(day=1) + timedelta(days=32)).replace(day=1)
        end = min(next_month - timedelta(days=1), last)
        periods.append(Period(f"{first:%Y-%m}", first, end))
        first = next_month
    return periods


@dataclass(slots=True)
class Plan:
    """The periods of one enterprise's evidence."""

    baseline: dict[str, Any]
    baseline_period: Period | None
    baseline_complete: bool
    months: list[Period] = field(default_factory=list)


def plan(
    go_live: date | None, entry: dict[str, Any] | None, default_days: int, yesterday: date
) -> Plan:
    """Which days form the baseline and the months compared with it."""
    if entry is None:
        entry = {"method": "measured", "measured_days": default_days, "id": None}
    if go_live is None or go_live > yesterday:
        return Plan(entry, None, entry["method"] == "entered")
    if entry["method"] == "entered":
        return Plan(entry, None, True, month_periods(go_live, yesterday))
    end = go_live + timedelta(days=int(entry["measured_days"]) - 1)
    period = Period("baseline", go_live, min(end, yesterday))
    return Plan(entry, period, end <= yesterday, month_periods(end + timedelta(days=1), yesterday))


_SUMS: Final = """
WITH p AS (
    SELECT * FROM unnest(%(ents)s::text[], %(labels)s::text[], %(firsts)s::date[],
                         %(lasts)s::date[]) AS p(enterprise_id, label, first_day, last_day)
),
ent AS (
    SELECT p.enterprise_id, p.label, count(*) FILTER (WHERE k.reported > 0) AS days,
           sum(k.running_s) AS running_s, sum(k.calendar_s) AS calendar_s,
           sum(k.parts) AS parts, sum(k.good) AS good, sum(k.reject) AS reject,
           sum(k.energy_kwh) AS energy_kwh, sum(k.fault_s) AS fault_s
    FROM p JOIN kpi_enterprise_daily k ON k.enterprise_id = p.enterprise_id
        AND k.day >= p.first_day AND k.day <= p.last_day
    GROUP BY p.enterprise_id, p.label
),
dev AS (
    SELECT p.enterprise_id, p.label,
           count(*) FILTER (WHERE k.reported) AS device_days,
           count(*) FILTER (WHERE k.reported AND k.running_s > 0) AS ran_device_days,
           sum(least(coalesce(k.good, k.parts - k.reject) * d.rated_cycle_s, k.planned_s))
               FILTER (WHERE d.rated_cycle_s > 0 AND k.parts IS NOT NULL
                       AND coalesce(k.good, k.parts - k.reject) IS NOT NULL AND k.planned_s > 0)
               AS oee_good_s,
           sum(k.planned_s)
               FILTER (WHERE d.rated_cycle_s > 0 AND k.parts IS NOT NULL
                       AND coalesce(k.good, k.parts - k.reject) IS NOT NULL AND k.planned_s > 0)
               AS oee_planned_s
    FROM p JOIN kpi_device_daily k ON k.enterprise_id = p.enterprise_id
        AND k.day >= p.first_day AND k.day <= p.last_day
    JOIN devices d ON d.key = k.device_key
    GROUP BY p.enterprise_id, p.label
)
SELECT ent.enterprise_id, ent.label, ent.days, coalesce(dev.device_days, 0),
       coalesce(dev.ran_device_days, 0), ent.running_s, ent.calendar_s, ent.parts, ent.good,
       ent.reject, ent.energy_kwh, ent.fault_s, coalesce(dev.oee_good_s, 0),
       coalesce(dev.oee_planned_s, 0)
FROM ent LEFT JOIN dev USING (enterprise_id, label)
"""


async def period_sums(
    conn: AsyncConnection[Any], wanted: Iterable[tuple[str, Period]]
) -> dict[tuple[str, str], PeriodSums]:
    """Sums for each (enterprise, period) in one query; periods without rows are absent."""
    pairs = list(wanted)
    if not pairs:
        return {}
    cursor = conn.cursor()
    await cursor.execute(
        _SUMS,
        {
            "ents": [e for e, _ in pairs],
            "labels": [p.label for _, p in pairs],
            "firsts": [p.first_day for _, p in pairs],
            "lasts": [p.last_day for _, p in pairs],
        },
    )
    sums = {}
    for ent, label, *values in await cursor.fetchall():
        days, device_days, ran, *rest = values
        running_s, calendar_s, parts, good, reject, energy, fault_s, oee_g, oee_p = (
            None if v is None else float(v) for v in rest
        )
        sums[(ent, label)] = PeriodSums(
            int(days),
            int(device_days),
            int(ran),
            running_s or 0.0,
            calendar_s or 0.0,
            parts or 0.0,
            good,
            reject,
            energy or 0.0,
            fault_s or 0.0,
            oee_g or 0.0,
            oee_p or 0.0,
        )
    return sums


# --------------------------------------------------------------------------- assembly


async def evidence(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    now: datetime,
    enterprises: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """The timeline, baseline and monthly before/after of each enterprise (JSON-ready)."""
    yesterday = city_today(settings, now) - timedelta(days=1)
    gateways, go_live = await go_lives(conn, settings, enterprises)
    entries = await latest_baselines(conn, enterprises)
    plans = {
        ent: plan(go_live[ent], entries.get(ent), settings.evidence_baseline_days, yesterday)
        for ent in enterprises
    }
    wanted = [
        (ent, period)
        for ent, p in plans.items()
        for period in ([p.baseline_period] if p.baseline_period else []) + p.months
    ]
    sums = await period_sums(conn, wanted)
    out = {}
    for ent in enterprises:
        p = plans[ent]
        if p.baseline["method"] == "entered":
            before = dict(p.baseline["figures"])
            baseline_days = None
        elif p.baseline_period is not None:
            measured = sums.get((ent, "baseline"), PeriodSums())
            before, baseline_days = measured.figures(), measured.days
        else:
            before, baseline_days = dict.fromkeys(FIGURES), None
        months = []
        for period in p.months:
            month = sums.get((ent, period.label), PeriodSums())
            figures = month.figures()
            months.append(
                {
                    **period.as_dict(),
                    "days": month.days,
                    "figures": figures,
                    "change": compare(before, figures),
                }
            )
        out[ent] = {
            "go_live": _iso(go_live[ent]),
            "gateways": [g.as_dict() for g in gateways[ent]],
            "baseline": {
                **p.baseline,
                "period": p.baseline_period.as_dict() if p.baseline_period else None,
                "days": baseline_days,
                "complete": p.baseline_complete,
                "figures": before,
            },
            "months": months,
            "latest": months[-1] if months else None,
            "through": yesterday.isoformat(),
        }
    return out


async def devices_behind(conn: AsyncConnection[Any], enterprise: str) -> list[dict[str, Any]]:
    """The enterprise's devices with their first data day and the KPI signals they report."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        """SELECT d.device_id AS id, d.name, d.machine_kind, d.gateway_id AS gateway,
                  d.rated_cycle_s,
                  (SELECT min(k.day) FROM kpi_device_daily k
                   WHERE k.device_key = d.key AND k.reported) AS first_data_day,
                  (SELECT p.last_seen FROM device_presence p WHERE p.device_key = d.key)
                   AS last_seen,
                  coalesce((SELECT array_agg(DISTINCT g.base ORDER BY g.base)
                            FROM current_values cv JOIN signals g ON g.id = cv.signal_id
                            WHERE cv.device_key = d.key AND g.base = ANY(%s::text[])), '{}')
                   AS kpi_signals
           FROM devices d WHERE d.enterprise_id = %s ORDER BY d.device_id""",
        (list(KPI_SIGNALS), enterprise),
    )
    rows = await cursor.fetchall()
    for row in rows:
        row["first_data_day"] = _iso(row["first_data_day"])
        row["last_seen"] = row["last_seen"].isoformat() if row["last_seen"] else None
    return rows

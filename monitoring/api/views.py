"""Build the JSON payloads of each page's data (shared by GET endpoints and the live stream)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from psycopg import AsyncConnection

from monitoring import kpis
from monitoring.api import registry
from monitoring.api.access import Capability
from monitoring.api.deps import Caller
from monitoring.api.scopes import Scope, require_scope, scope_figures
from monitoring.settings import KpiSettings
from wire.signals import is_custom, lookup_signal


def _window_json(window: kpis.Window) -> dict[str, Any]:
    return {
        "first_day": window.first_day.isoformat(),
        "last_day": window.last_day.isoformat(),
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "includes_now": window.includes_now,
        # False when today's figures stop at the last refresh (``end``) rather than at now;
        # online, running and alarms are at ``as_of`` either way.
        "live": window.live,
        # When online, running and alarms were counted (the status snapshot), or None: at as_of.
        "status_at": window.status_at.isoformat() if window.status_at else None,
    }


async def overview(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    now: datetime,
    first_day: date | None = None,
    last_day: date | None = None,
    *,
    snapshot: bool = True,
) -> dict[str, Any]:
    """City KPIs with segment and district breakdowns, warnings and alarms (``snapshot``: as
    for ``kpis.page_window``)."""
    window = await kpis.page_window(conn, settings, now, first_day, last_day, snapshot=snapshot)

    figures = await kpis.scope_kpis(conn, settings, window, now, ("segment", "district"))
    warnings = await kpis.enterprise_warnings(conn, settings, now)
    ent_rows = await registry.enterprises(conn)
    segments, districts = await registry.segments(conn), await registry.districts(conn)
    summary = figures.total
    by_segment, by_district = figures.groups["segment"], figures.groups["district"]
    ents = {e["id"]: e for e in ent_rows}
    warning_rows = []
    for ent_id, warning in sorted(
        warnings.items(),
        key=lambda item: (
            -kpis.WARNING_COLOURS.index(item[1].colour)
            if item[1].colour in kpis.WARNING_COLOURS
            else 1
        ),
    ):
        ent = ents.get(ent_id, {})
        warning_rows.append(
            {
                **warning.as_dict(),
                "name": ent.get("name", ent_id),
                "name_en": ent.get("name_en", ""),
                "district_name": ent.get("district_name"),
                "district_name_en": ent.get("district_name_en"),
            }
        )
    return {
        "as_of": now.isoformat(),
        "window": _window_json(window),
        "summary": summary.as_dict(),
        "segments": [
            {**seg, "kpis": by_segment.get(seg["code"], kpis.Kpis()).as_dict()} for seg in segments
        ],
        "districts": [
            {**dis, "kpis": by_district.get(dis["code"], kpis.Kpis()).as_dict()}
            for dis in districts
        ],
        "warnings": warning_rows,
        "alarms": figures.alarms,
    }


async def group_page(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    caller: Caller,
    scope: Scope,
    now: datetime,
    first_day: date | None = None,
    last_day: date | None = None,
    *,
    snapshot: bool = True,
) -> dict[str, Any]:
    """A segment's or district's KPIs with one summary row per enterprise (``snapshot``: as for
    ``kpis.page_window``)."""
    row = await require_scope(conn, caller, scope)
    window = await kpis.page_window(conn, settings, now, first_day, last_day, snapshot=snapshot)
    segment = scope.key if scope.kind == "segment" else None
    district = scope.key if scope.kind == "district" else None
    figures = await kpis.scope_kpis(
        conn, settings, window, now, ("enterprise",), segment=segment, district=district
    )
    ents = await registry.enterprises(conn, segment=segment, district=district)
    warnings = await kpis.enterprise_warnings(
        conn, settings, now, enterprises=[e["id"] for e in ents]
    )
    by_enterprise = figures.groups["enterprise"]
    return {
        "as_of": now.isoformat(),
        scope.kind: row,
        "window": _window_json(window),
        "summary": figures.total.as_dict(),
        "alarms": figures.alarms,
        "enterprises": [
            {
                **e,
                "kpis": by_enterprise.get(e["id"], kpis.Kpis()).as_dict(),
                "warning": warnings[e["id"]].as_dict() if e["id"] in warnings else None,
            }
            for e in ents
        ],
    }


async def enterprise_page(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    caller: Caller,
    enterprise_id: str,
    now: datetime,
    first_day: date | None = None,
    last_day: date | None = None,
) -> dict[str, Any]:
    """An enterprise's KPI summary and warning (device rows only where device data is allowed)."""
    scope = Scope("enterprise", enterprise_id)
    row = await require_scope(conn, caller, scope)
    window = await kpis.page_window(conn, settings, now, first_day, last_day)
    figures = await scope_figures(conn, settings, scope, row, window, now)
    warnings = await kpis.enterprise_warnings(conn, settings, now, enterprises=[enterprise_id])
    payload: dict[str, Any] = {
        "as_of": now.isoformat(),
        "enterprise": row,
        "window": _window_json(window),
        "summary": kpis.total(figures).as_dict(),
        "alarms": kpis.alarm_summary(figures),
        "warning": warnings[enterprise_id].as_dict() if enterprise_id in warnings else None,
    }
    if caller.can(Capability.DEVICE_DATA, enterprise_id):
        payload["devices"] = [device_row(f, with_kpis=True) for f in figures]
    return payload


async def provider_page(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    caller: Caller,
    provider_id: str,
    now: datetime,
) -> dict[str, Any]:
    """The enterprises that chose a service provider, with the status of their gateways and
    devices (what a provider may see: no KPIs, no signal values)."""
    row = await require_scope(conn, caller, Scope("provider", provider_id))
    enterprises = await registry.enterprises(conn, only=await registry.served_by(conn, provider_id))
    ids = [enterprise["id"] for enterprise in enterprises]
    # One query for every served enterprise's devices, their rows written as JSON by the database,
    # and one for their gateways: a provider with 170 enterprises made 340 queries, each summing
    # a day's KPIs it then dropped (9 s).
    status = await kpis.device_status(conn, settings, now, ids)
    gateways = await registry.gateways_of(conn, ids)
    served = []
    for enterprise in enterprises:
        key = enterprise["id"]
        devices = status.get(key) or kpis.ServedStatus(0, 0, {}, "[]")
        served.append(
            {
                **enterprise,
                "registered": devices.registered,
                "online": devices.online,
                "states": devices.states,
                "gateways": gateways.get(key, []),
                "devices": orjson.Fragment(devices.devices_json),
            }
        )
    return {"as_of": now.isoformat(), "provider": row, "served": served}


def device_row(fig: kpis.DeviceFigures, *, with_kpis: bool) -> dict[str, Any]:
    """A device in a list: identity and status; KPIs only for callers allowed device data (the
    provider's page writes the same rows without KPIs in SQL: ``kpis.device_status``)."""
    row: dict[str, Any] = {
        "id": fig.device_id,
        "enterprise": fig.enterprise,
        "name": fig.name,
        "machine_kind": fig.machine_kind,
        "line": fig.line,
        "state": fig.current_state,
        "online": fig.is_online,
        "networked": fig.is_networked,
        "alarm": fig.is_online and fig.alarm,
        "last_seen": kpis.iso_utc(fig.last_seen) if fig.last_seen else None,
    }
    if with_kpis:
        kpi = kpis.Kpis()
        kpi.add(fig)
        row["kpis"] = kpi.as_dict()
    return row


async def device_live(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    caller: Caller,
    scope: Scope,
    now: datetime,
) -> dict[str, Any]:
    """A device's KPIs today, current signal values and today's state timeline."""
    row = await require_scope(conn, caller, scope)
    window = kpis.window_for(settings, now)
    figures = await scope_figures(conn, settings, scope, row, window, now)
    fig = figures[0]
    return {
        "as_of": now.isoformat(),
        "device": {k: v for k, v in row.items() if k != "key"},
        "window": _window_json(window),
        "summary": kpis.total(figures).as_dict(),
        "state": fig.current_state,
        "signals": await current_signals(conn, row["key"]),
        "intervals": await state_intervals(conn, row["key"], window.start, now),
    }


async def current_signals(conn: AsyncConnection[Any], device_key: int) -> list[dict[str, Any]]:
    rows = await registry.fetch_all(
        conn,
        """SELECT g.name AS signal, g.unit, cv.ts, cv.value, cv.value_text, cv.quality,
                  g.meaning, g.name_zh
           FROM current_values cv JOIN signals g ON g.id = cv.signal_id
           WHERE cv.device_key = %s ORDER BY g.name""",
        (device_key,),
    )
    out = []
    for r in rows:
        spec = lookup_signal(r["signal"])
        out.append(
            {
                "signal": r["signal"],
                "value": r["value_text"] if r["value_text"] is not None else r["value"],
                "unit": r["unit"] or (spec.unit if spec else ""),
                "ts": r["ts"].isoformat(),
                "quality": ("good", "uncertain", "bad")[min(int(r["quality"]), 2)],
                # A custom signal's meanings are its declaration's (stored from the status).
                "meaning": spec.meaning if spec else r["meaning"],
                "zh": spec.zh if spec else r["name_zh"],
                "custom": is_custom(r["signal"]),
            }
        )
    return out


async def state_intervals(
    conn: AsyncConnection[Any], device_key: int, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    rows = await registry.fetch_all(
        conn,
        """SELECT state, greatest(started_at, %(s)s) AS start, least(ended_at, %(e)s) AS "end"
           FROM state_intervals
           WHERE device_key = %(k)s AND started_at < %(e)s
             AND (ended_at IS NULL OR ended_at > %(s)s)
           ORDER BY started_at""",
        {"k": device_key, "s": start, "e": end},
    )
    return [
        {
            "state": r["state"],
            "start": r["start"].isoformat(),
            "end": r["end"].isoformat() if r["end"] else None,
        }
        for r in rows
    ]


def utc_now() -> datetime:
    return datetime.now(UTC)


def trend_days(settings: KpiSettings, now: datetime, days: int) -> tuple[date, date]:
    last = kpis.city_today(settings, now)
    return last - timedelta(days=days - 1), last

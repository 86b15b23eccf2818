"""Data-integration measures (数据贯通) per device, enterprise, segment and city; read-only.

Who sees what follows monitoring/api/access.py: per-device figures need device status (an enterprise
its own, a provider the enterprises it serves, the bureau where granted, admin); an enterprise's
totals need its summary or its device status (so its provider sees them too); segments and the
city are for bureau and admin. Days are ``start``/``end`` (YYYY-MM-DD, inclusive; default today).
docs/kpis.md ("Data integration") defines every figure.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Final

from fastapi import APIRouter, Request

from monitoring import integration, kpis
from monitoring.api import registry, views
from monitoring.api.access import Capability
from monitoring.api.deps import CallerDep, Conn, get_settings, visible_enterprise
from monitoring.api.errors import BadInputError, NotFoundError
from monitoring.api.routes.overview import DayQuery
from monitoring.api.scopes import parse_day
from monitoring.settings import KpiSettings

router = APIRouter(tags=["integration"])

MAX_DAYS: Final = 400


def _days(settings: KpiSettings, start: str | None, end: str | None) -> tuple[date, date]:
    today = kpis.city_today(settings, views.utc_now())
    last = parse_day(end, "end") or today
    first = parse_day(start, "start") or last
    if first > last:
        raise BadInputError(f"start {first} is after end {last}", hint="Use start <= end.")
    if (last - first) > timedelta(days=MAX_DAYS):
        raise BadInputError(
            f"{start}..{end} spans more than {MAX_DAYS} days", hint="Ask for a shorter range."
        )
    return first, last


async def _enterprise(conn: Conn, caller: CallerDep, enterprise_id: str) -> dict[str, Any]:
    """The enterprise's row, if the caller may see its summary or its device status."""
    capability = (
        Capability.DEVICE_STATUS
        if caller.can(Capability.DEVICE_STATUS, enterprise_id)
        else Capability.ENTERPRISE_SUMMARY
    )
    return await visible_enterprise(conn, caller, enterprise_id, capability)


@router.get(
    "/integration",
    summary="City-wide data-integration measures, per segment and per enterprise",
)
async def city(
    request: Request, caller: CallerDep, conn: Conn, start: DayQuery = None, end: DayQuery = None
) -> dict[str, Any]:
    caller.require(Capability.CITY_KPIS)
    settings = get_settings(request).kpi
    first, last = _days(settings, start, end)
    segments = [row["code"] for row in await registry.segments(conn)]
    return {
        "city": await integration.group_measures(conn, settings, first, last),
        "segments": [
            await integration.group_measures(conn, settings, first, last, segment=code)
            for code in segments
        ],
        "enterprises": await integration.enterprise_measures(conn, settings, first, last),
    }


@router.get(
    "/segments/{code}/integration",
    summary="A segment's data-integration measures and its enterprises'",
)
async def segment(
    code: str,
    request: Request,
    caller: CallerDep,
    conn: Conn,
    start: DayQuery = None,
    end: DayQuery = None,
) -> dict[str, Any]:
    caller.require(Capability.CITY_KPIS)
    if await registry.segment(conn, code) is None:
        raise NotFoundError(f"segment {code!r} not found", params={"kind": "segment", "key": code})
    settings = get_settings(request).kpi
    first, last = _days(settings, start, end)
    return {
        "segment": await integration.group_measures(conn, settings, first, last, segment=code),
        "catalogue": integration.segment_classes(code),
        "enterprises": await integration.enterprise_measures(
            conn, settings, first, last, segment=code
        ),
    }


@router.get(
    "/enterprises/{enterprise_id}/integration",
    summary="An enterprise's data-integration measures (with its devices' where allowed)",
)
async def enterprise(
    enterprise_id: str,
    request: Request,
    caller: CallerDep,
    conn: Conn,
    start: DayQuery = None,
    end: DayQuery = None,
) -> dict[str, Any]:
    await _enterprise(conn, caller, enterprise_id)
    settings = get_settings(request).kpi
    first, last = _days(settings, start, end)
    (measures,) = await integration.enterprise_measures(
        conn, settings, first, last, enterprises=[enterprise_id]
    )
    devices = None
    if caller.can(Capability.DEVICE_STATUS, enterprise_id):
        devices = await integration.device_measures(
            conn, settings, first, last, enterprises=[enterprise_id]
        )
    return {"enterprise": measures, "devices": devices}


@router.get(
    "/enterprises/{enterprise_id}/integration/trend",
    summary="An enterprise's data-integration measures day by day",
)
async def enterprise_trend(
    enterprise_id: str,
    request: Request,
    caller: CallerDep,
    conn: Conn,
    start: DayQuery = None,
    end: DayQuery = None,
) -> dict[str, Any]:
    await _enterprise(conn, caller, enterprise_id)
    settings = get_settings(request).kpi
    first, last = _days(settings, start, end)
    return {"days": await integration.enterprise_trend(conn, settings, enterprise_id, first, last)}


@router.get(
    "/enterprises/{enterprise_id}/devices/{device_id}/integration",
    summary="A device's data-integration measures",
)
async def device(
    enterprise_id: str,
    device_id: str,
    request: Request,
    caller: CallerDep,
    conn: Conn,
    start: DayQuery = None,
    end: DayQuery = None,
) -> dict[str, Any]:
    row = await registry.device(conn, enterprise_id, device_id)
    caller.require_device(
        Capability.DEVICE_STATUS, f"{enterprise_id}/{device_id}", enterprise_id if row else None
    )
    assert row is not None
    settings = get_settings(request).kpi
    first, last = _days(settings, start, end)
    (measures,) = await integration.device_measures(
        conn, settings, first, last, device_key=row["key"]
    )
    return {"device": measures}

"""Enterprises: summaries, their devices, gateways and profiles, and the bureau's data grant."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from monitoring import kpis
from monitoring.api import registry, views
from monitoring.api.access import Capability
from monitoring.api.deps import CallerDep, Conn, get_settings, visible_enterprise
from monitoring.api.json_body import JsonBody
from monitoring.api.routes.overview import DayQuery
from monitoring.api.scopes import Scope, parse_day, require_scope
from monitoring.api.shared import shared_computations

router = APIRouter(tags=["enterprises"])


@router.get("/enterprises", summary="Enterprises the caller may see (registry rows, flags)")
async def list_enterprises(caller: CallerDep, conn: Conn) -> dict[str, Any]:
    """Bureau and admin: all; an enterprise: itself; a provider: the enterprises it serves."""
    return {"enterprises": await registry.enterprises(conn, only=caller.enterprise_filter())}


@router.get(
    "/enterprises/{enterprise_id}",
    summary="An enterprise's KPI summary and warning",
    response_model=dict[str, Any],
)
async def enterprise(
    enterprise_id: str,
    request: Request,
    caller: CallerDep,
    conn: Conn,
    start: DayQuery = None,
    end: DayQuery = None,
) -> JsonBody:
    await require_scope(conn, caller, Scope("enterprise", enterprise_id))  # before sharing
    first, last = parse_day(start, "start"), parse_day(end, "end")
    settings = get_settings(request).kpi
    # The payload lists devices only for callers allowed device data: part of the key.
    with_devices = caller.can(Capability.DEVICE_DATA, enterprise_id)
    body = await shared_computations(request).run(
        ("enterprise", enterprise_id, first, last, with_devices),
        lambda: views.enterprise_page(
            conn, settings, caller, enterprise_id, views.utc_now(), first, last
        ),
    )
    return JsonBody(body)


@router.get(
    "/enterprises/{enterprise_id}/devices",
    summary="An enterprise's devices with status (and KPIs where device data is allowed)",
    response_model=dict[str, Any],
)
async def enterprise_devices(
    enterprise_id: str, request: Request, caller: CallerDep, conn: Conn
) -> JsonBody:
    await visible_enterprise(conn, caller, enterprise_id, Capability.DEVICE_STATUS)
    settings = get_settings(request).kpi
    now = datetime.now(UTC)
    window = await kpis.page_window(conn, settings, now)  # as the enterprise page's summary
    figures = await kpis.device_figures(conn, settings, window, now, enterprise=enterprise_id)
    with_kpis = caller.can(Capability.DEVICE_DATA, enterprise_id)
    return JsonBody({"devices": [views.device_row(f, with_kpis=with_kpis) for f in figures]})


@router.get("/enterprises/{enterprise_id}/gateways", summary="An enterprise's gateways")
async def enterprise_gateways(enterprise_id: str, caller: CallerDep, conn: Conn) -> dict[str, Any]:
    await visible_enterprise(conn, caller, enterprise_id, Capability.DEVICE_STATUS)
    return {"gateways": await registry.gateways(conn, enterprise_id)}


@router.get("/enterprises/{enterprise_id}/profiles", summary="Device profiles an enterprise uses")
async def enterprise_profiles(enterprise_id: str, caller: CallerDep, conn: Conn) -> dict[str, Any]:
    await visible_enterprise(conn, caller, enterprise_id, Capability.DEVICE_STATUS)
    return {"profiles": await registry.profiles_of(conn, enterprise_id)}


@router.get("/enterprises/{enterprise_id}/grants", summary="Whether the bureau may see device data")
async def get_grant(enterprise_id: str, caller: CallerDep, conn: Conn) -> dict[str, Any]:
    await visible_enterprise(conn, caller, enterprise_id, Capability.ENTERPRISE_SUMMARY)
    return {"bureau": await registry.is_granted(conn, enterprise_id)}


@router.put("/enterprises/{enterprise_id}/grants/bureau", summary="Let the bureau see device data")
async def grant(enterprise_id: str, caller: CallerDep, conn: Conn) -> dict[str, Any]:
    await visible_enterprise(conn, caller, enterprise_id, Capability.GRANT)
    await registry.set_grant(conn, enterprise_id, True, caller.principal.token_id)
    return {"bureau": True}


@router.delete("/enterprises/{enterprise_id}/grants/bureau", summary="Withdraw the bureau's access")
async def withdraw(enterprise_id: str, caller: CallerDep, conn: Conn) -> dict[str, Any]:
    await visible_enterprise(conn, caller, enterprise_id, Capability.GRANT)
    await registry.set_grant(conn, enterprise_id, False, caller.principal.token_id)
    return {"bureau": False}

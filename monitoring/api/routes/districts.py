"""Districts of the city and their KPIs per enterprise."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from monitoring.api import registry, views
from monitoring.api.access import Capability
from monitoring.api.deps import CallerDep, Conn, SideConn, get_settings
from monitoring.api.json_body import JsonBody
from monitoring.api.routes.overview import DayQuery
from monitoring.api.scopes import Scope, parse_day, require_scope
from monitoring.api.shared import shared_computations

router = APIRouter(tags=["districts"])


@router.get("/districts", summary="Districts of the pilot city")
async def list_districts(caller: CallerDep, conn: Conn) -> dict[str, Any]:
    caller.require(Capability.CITY_KPIS)
    return {"districts": await registry.districts(conn)}


@router.get(
    "/districts/{code}",
    summary="A district's KPIs and its enterprises' summaries",
    response_model=dict[str, Any],
)
async def district(
    code: str,
    request: Request,
    caller: CallerDep,
    conn: Conn,
    side: SideConn,
    start: DayQuery = None,
    end: DayQuery = None,
) -> JsonBody:
    scope = Scope("district", code)
    await require_scope(conn, caller, scope)  # each caller's own check, before sharing
    first, last = parse_day(start, "start"), parse_day(end, "end")
    settings = get_settings(request).kpi
    body = await shared_computations(request).run(
        ("district", code, first, last),
        lambda: views.group_page(
            conn, settings, caller, scope, views.utc_now(), first, last, side=side
        ),
    )
    return JsonBody(body)

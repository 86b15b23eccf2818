"""Districts of the city and their KPIs per enterprise."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from monitoring.api import registry
from monitoring.api.access import Capability
from monitoring.api.deps import CallerDep, Conn
from monitoring.api.json_body import JsonBody
from monitoring.api.routes.overview import DayQuery
from monitoring.api.scopes import Scope
from monitoring.api.shared import group_page_body

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
    start: DayQuery = None,
    end: DayQuery = None,
) -> JsonBody:
    return await group_page_body(request, caller, conn, Scope("district", code), start, end)

"""Industry segments (GB/T 4754-2017 classes) and their KPIs per enterprise."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from monitoring.api import registry, views
from monitoring.api.access import Capability
from monitoring.api.deps import CallerDep, Conn, SideConn, get_settings
from monitoring.api.routes.overview import DayQuery
from monitoring.api.scopes import Scope, parse_day

router = APIRouter(tags=["segments"])


@router.get("/segments", summary="Segments with their national industry classification")
async def list_segments(caller: CallerDep, conn: Conn) -> dict[str, Any]:
    caller.require(Capability.CITY_KPIS)
    return {"segments": await registry.segments(conn)}


@router.get("/segments/{code}", summary="A segment's KPIs and its enterprises' summaries")
async def segment(
    code: str,
    request: Request,
    caller: CallerDep,
    conn: Conn,
    side: SideConn,
    start: DayQuery = None,
    end: DayQuery = None,
) -> dict[str, Any]:
    return await views.group_page(
        conn,
        get_settings(request).kpi,
        caller,
        Scope("segment", code),
        views.utc_now(),
        parse_day(start, "start"),
        parse_day(end, "end"),
        side=side,
    )

"""Industry segments (GB/T 4754-2017 classes) and their KPIs per enterprise."""

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

router = APIRouter(tags=["segments"])


@router.get("/segments", summary="Segments with their national industry classification")
async def list_segments(caller: CallerDep, conn: Conn) -> dict[str, Any]:
    caller.require(Capability.CITY_KPIS)
    return {"segments": await registry.segments(conn)}


@router.get(
    "/segments/{code}",
    summary="A segment's KPIs and its enterprises' summaries",
    response_model=dict[str, Any],
)
async def segment(
    code: str,
    request: Request,
    caller: CallerDep,
    conn: Conn,
    start: DayQuery = None,
    end: DayQuery = None,
) -> JsonBody:
    return await group_page_body(request, caller, conn, Scope("segment", code), start, end)

"""City overview, trends across any scope, and the live stream of updates (SSE)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from monitoring import kpis
from monitoring.api import views
from monitoring.api.access import Capability
from monitoring.api.deps import (
    Caller,
    CallerDep,
    Conn,
    get_settings,
    load_caller,
    presented_credential,
)
from monitoring.api.json_body import JsonBody
from monitoring.api.scopes import Scope, parse_day, require_scope
from monitoring.api.shared import shared_computations

router = APIRouter(tags=["overview"])

DayQuery = Annotated[str | None, Query(description="YYYY-MM-DD in the city's time zone")]


@router.get(
    "/overview",
    summary="City KPIs by segment and district, warnings and alarms",
    response_model=dict[str, Any],
)
async def overview(
    request: Request,
    caller: CallerDep,
    conn: Conn,
    start: DayQuery = None,
    end: DayQuery = None,
) -> JsonBody:
    """Today by default; ``start``/``end`` select whole days (end inclusive)."""
    caller.require(Capability.CITY_KPIS)
    first, last = parse_day(start, "start"), parse_day(end, "end")
    settings = get_settings(request).kpi
    # The same for every caller allowed city KPIs: concurrent requests share one computation.
    body = await shared_computations(request).run(
        ("overview", first, last),
        lambda: views.overview(conn, settings, views.utc_now(), first, last),
    )
    return JsonBody(body)


@router.get(
    "/trend",
    summary="Daily output, energy and utilization of a scope",
    response_model=dict[str, Any],
)
async def trend(
    request: Request,
    caller: CallerDep,
    conn: Conn,
    scope: Annotated[
        str, Query(description="city, segment:<code>, district:<code>, enterprise:<id>")
    ] = "city",
    days: Annotated[int, Query(ge=1, le=400)] = 30,
) -> JsonBody:
    parsed = Scope.parse(scope)
    if parsed.kind == "device":
        parsed = Scope("enterprise", parsed.key.partition("/")[0])
        caller.require(Capability.DEVICE_DATA, parsed.key)
    await require_scope(conn, caller, parsed)
    settings = get_settings(request).kpi
    first, last = views.trend_days(settings, views.utc_now(), days)
    filters: dict[str, Any] = {}
    if parsed.kind in ("segment", "district"):
        filters[parsed.kind] = parsed.key
    elif parsed.kind == "enterprise":
        filters["enterprises"] = [parsed.key]

    async def compute() -> dict[str, Any]:
        return {"scope": scope, "days": await kpis.daily_trend(conn, first, last, **filters)}

    # Checked above for this caller; the days are the same for everyone who may see the scope.
    return JsonBody(await shared_computations(request).run(("trend", parsed, first, last), compute))


@router.get(
    "/live",
    summary="Server-sent events: the scope's page data whenever new data arrives",
    response_class=StreamingResponse,
)
async def live(
    request: Request,
    scope: Annotated[
        str, Query(description="as for /trend, or device:<enterprise>/<device>")
    ] = "city",
) -> StreamingResponse:
    """The caller is checked again every ``live_recheck_s`` (and whenever grants, tokens or
    sessions change); the stream ends with a ``closed`` event once it may no longer see the scope.
    """
    parsed = Scope.parse(scope)
    credential = presented_credential(request)
    settings = get_settings(request)
    pool = request.app.state.pool

    async def check() -> Caller:
        # Its own short-lived connection: a stream must not hold one of the pool's connections
        # for as long as a browser keeps the page open.
        async with pool.connection() as conn:
            caller = await load_caller(conn, credential, settings)
            await require_scope(conn, caller, parsed)
        return caller

    caller = await check()
    return StreamingResponse(
        request.app.state.hub.stream(request, caller, parsed, check),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )

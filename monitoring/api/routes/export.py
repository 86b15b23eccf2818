"""Upward reporting: daily KPI summaries per enterprise for a provincial platform.

``/export/daily`` is the original row export (JSON or CSV); ``/export/document`` is the
versioned document (docs/export.md) that the push also sends, ``/export/schema`` its JSON Schema
and ``/export/deliveries`` the record of the pushes.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from monitoring import kpis
from monitoring.api import export_doc, export_push, views
from monitoring.api.access import Capability
from monitoring.api.deps import CallerDep, Conn, get_settings
from monitoring.api.errors import BadInputError
from monitoring.api.scopes import parse_day

router = APIRouter(tags=["export"])

EXPORT_COLUMNS = (
    "day",
    "enterprise",
    "name",
    "segment",
    "district",
    "above_designated_size",
    "specialized",
    "little_giant",
    "devices",
    "networked",
    "networked_rate",
    "running_h",
    "utilization",
    "output",
    "good",
    "reject",
    "energy_kwh",
    "kwh_per_part",
)


@router.get(
    "/export/daily",
    summary="Daily KPI summary per enterprise (default: yesterday), JSON or CSV",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
async def export_daily(
    request: Request,
    caller: CallerDep,
    conn: Conn,
    day: Annotated[str | None, Query(description="YYYY-MM-DD; default yesterday")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    caller.require(Capability.CITY_KPIS)
    settings = get_settings(request).kpi
    chosen = parse_day(day, "day") or kpis.city_today(settings, views.utc_now()) - timedelta(days=1)
    rows = await kpis.daily_export_rows(conn, chosen)
    if format == "json":
        return {"day": chosen.isoformat(), "columns": list(EXPORT_COLUMNS), "rows": rows}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return Response(
        buffer.getvalue().encode("utf-8-sig"),  # the BOM lets Excel open Chinese names correctly
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="shulian-daily-{chosen}.csv"'},
    )


@router.get(
    "/export/document",
    summary="The versioned daily export document (default: yesterday); once pushed, what was sent",
    responses={200: {"content": {"application/json": {}}}},
)
async def export_document(
    request: Request,
    caller: CallerDep,
    conn: Conn,
    day: Annotated[str | None, Query(description="YYYY-MM-DD; default yesterday")] = None,
) -> Response:
    caller.require(Capability.CITY_KPIS)
    settings = get_settings(request).kpi
    now = views.utc_now()
    chosen = parse_day(day, "day") or kpis.city_today(settings, now) - timedelta(days=1)
    # A pushed day answers with the stored bytes, so pull and push never disagree about it.
    cursor = await conn.execute(
        "SELECT body, status FROM export_deliveries WHERE day = %s", (chosen,)
    )
    stored = await cursor.fetchone()
    if stored is not None:
        return Response(
            stored[0].encode("utf-8"),
            media_type="application/json",
            headers={"X-Shulian-Delivery": stored[1]},
        )
    try:
        document = await export_doc.build_daily_export(conn, settings, chosen, now)
    except ValueError as exc:
        raise BadInputError(f"day: {exc}", hint="Ask for a day before today.") from None
    return Response(document.to_bytes(), media_type="application/json")


@router.get("/export/schema", summary="JSON Schema of the daily export document")
async def export_schema(caller: CallerDep) -> dict[str, Any]:
    caller.require(Capability.CITY_KPIS)
    return export_doc.json_schema()


@router.get("/export/deliveries", summary="What the push sent per day and what was acknowledged")
async def export_deliveries(caller: CallerDep, conn: Conn) -> dict[str, Any]:
    caller.require(Capability.CITY_KPIS)
    deliveries = await export_push.list_deliveries(conn)
    return {"deliveries": [delivery.as_dict() for delivery in deliveries]}

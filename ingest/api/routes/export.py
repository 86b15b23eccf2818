"""Upward reporting: daily KPI summaries per enterprise as JSON or CSV for a provincial platform."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ingest import kpis
from ingest.api import views
from ingest.api.access import Capability
from ingest.api.deps import CallerDep, Conn, get_settings
from ingest.api.scopes import parse_day

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

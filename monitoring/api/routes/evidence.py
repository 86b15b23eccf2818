"""The pilot's acceptance evidence: per-enterprise before/after, baselines, the bureau's list.

The API answers JSON or CSV; the pages (``/enterprises/{id}/evidence``, ``/evidence``) are rendered
on the server from the same functions, after the same access checks, so the printed report (the
browser's "save as PDF" with the print stylesheet) carries exactly what the endpoints allow and
needs no script to finish before it is printed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from psycopg import AsyncConnection
from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitoring import evidence, integration, kpis
from monitoring.api import registry, views
from monitoring.api.access import Capability
from monitoring.api.deps import Caller, CallerDep, Conn, get_settings, visible_enterprise
from monitoring.api.errors import BadInputError
from monitoring.api.routes.pages import _page as serve_page
from monitoring.api.routes.pages import language, local_name, render
from monitoring.settings import KpiSettings

router = APIRouter(tags=["evidence"])
pages = APIRouter(include_in_schema=False)

Format = Annotated[Literal["json", "csv"], Query()]


class BaselineIn(BaseModel):
    """A baseline entry: figures from the pre-transformation diagnosis, or a measured window."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["entered", "measured"]
    measured_days: int | None = Field(default=None, ge=1, le=365)
    """``measured``: days from go-live; default ``kpi.evidence_baseline_days``."""
    source: str = Field(default="", max_length=500)
    """``entered``: the diagnosis it comes from (report title, issuer)."""
    diagnosed_on: date | None = None
    utilization: float | None = Field(default=None, ge=0, le=1)
    running_rate: float | None = Field(default=None, ge=0, le=1)
    output_per_day: float | None = Field(default=None, ge=0)
    reject_rate: float | None = Field(default=None, ge=0, le=1)
    kwh_per_part: float | None = Field(default=None, ge=0)
    oee: float | None = Field(default=None, ge=0, le=1)
    fault_h_per_day: float | None = Field(default=None, ge=0, le=24)
    note: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _complete_for_its_method(self) -> Self:
        given = [name for name in evidence.FIGURES if getattr(self, name) is not None]
        if self.method == "entered":
            missing = [name for name in ("source", "diagnosed_on") if not getattr(self, name)] + (
                [] if given else ["at least one figure"]
            )
            if missing:
                raise ValueError(f"an entered baseline needs {', '.join(missing)}")
            if self.measured_days is not None:
                raise ValueError("measured_days belongs to a measured baseline")
        elif given:
            raise ValueError(
                f"a measured baseline takes no figures (got {', '.join(given)}): they are measured"
            )
        return self


async def enterprise_evidence(
    conn: AsyncConnection[Any], settings: KpiSettings, caller: Caller, enterprise_id: str
) -> dict[str, Any]:
    """One enterprise's evidence; its devices only where the caller may see device status."""
    row = await visible_enterprise(conn, caller, enterprise_id, Capability.EVIDENCE)
    now = views.utc_now()
    found = await evidence.evidence(conn, settings, now, [enterprise_id])
    payload: dict[str, Any] = {
        "as_of": now.astimezone(UTC).isoformat(),
        "enterprise": row,
        "figures": list(evidence.FIGURES),
        **found[enterprise_id],
        "baseline_history": await evidence.baseline_history(conn, enterprise_id),
        "may_enter_baseline": caller.can(Capability.BASELINE, enterprise_id),
    }
    if caller.can(Capability.DEVICE_STATUS, enterprise_id):
        payload["devices"] = await evidence.devices_behind(conn, enterprise_id)
    payload["measures"] = await measures_trend(conn, settings, enterprise_id, payload, now)
    return payload


MEASURES = ("networked_share", "completeness", "longest_gap_h", "delay_p95_s", "class_coverage")
"""The data-integration measures (monitoring/integration.py) the evidence shows, in table order."""
RECENT_DAYS = 30
"""The bureau's list and the report's "recent" column judge integration over the last 30 days."""


def measures_row(label: str, found: integration.EnterpriseIntegration) -> dict[str, Any]:
    gap = found.longest_gap
    return {
        "label": label,
        "first_day": found.first_day.isoformat(),
        "last_day": found.last_day.isoformat(),
        "registered": found.registered,
        "networked": found.networked,
        "networked_share": found.networked_share,
        "completeness": found.completeness,
        "longest_gap_h": round(gap.seconds / 3600, 2) if gap else None,
        "longest_gap_signal": gap.signal if gap else None,
        "delay_p95_s": found.delay.p95_s,
        "class_coverage": found.class_coverage,
        "segment_classes": found.segment_classes,
    }


def recent_days(settings: KpiSettings, now: datetime) -> tuple[date, date]:
    yesterday = kpis.city_today(settings, now) - timedelta(days=1)
    return yesterday - timedelta(days=RECENT_DAYS - 1), yesterday


async def measures_trend(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    enterprise_id: str,
    found: dict[str, Any],
    now: datetime,
) -> list[dict[str, Any]]:
    """The integration measures over the baseline, each month, and the last 30 days."""
    periods = [(m["label"], m["first_day"], m["last_day"]) for m in found["months"]]
    if found["baseline"]["period"]:
        period = found["baseline"]["period"]
        periods.insert(0, ("baseline", period["first_day"], period["last_day"]))
    first, last = recent_days(settings, now)
    periods.append(("recent", first.isoformat(), last.isoformat()))
    rows = []
    for label, first_day, last_day in periods:
        (measured,) = await integration.enterprise_measures(
            conn,
            settings,
            date.fromisoformat(first_day),
            date.fromisoformat(last_day),
            enterprises=[enterprise_id],
            now=now,
        )
        rows.append(measures_row(label, measured))
    return rows


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], filename: str) -> Response:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return Response(
        buffer.getvalue().encode("utf-8-sig"),  # the BOM lets Excel open Chinese names correctly
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


PERIOD_COLUMNS = ("period", "first_day", "last_day", "days", *evidence.FIGURES)


def period_rows(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The before/after table: the baseline, then each month (CSV and the report's table)."""
    base = found["baseline"]
    period = base["period"] or {}
    rows = [
        {
            "period": "baseline",
            "first_day": period.get("first_day") or base.get("diagnosed_on") or "",
            "last_day": period.get("last_day") or base.get("diagnosed_on") or "",
            "days": base["days"],
            **base["figures"],
        }
    ]
    rows += [
        {
            "period": month["label"],
            "first_day": month["first_day"],
            "last_day": month["last_day"],
            "days": month["days"],
            **month["figures"],
        }
        for month in found["months"]
    ]
    return rows


@router.get(
    "/enterprises/{enterprise_id}/evidence",
    summary="An enterprise's go-live, baseline and monthly before/after figures (JSON or CSV)",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
async def get_evidence(
    enterprise_id: str, request: Request, caller: CallerDep, conn: Conn, format: Format = "json"
) -> Any:
    found = await enterprise_evidence(conn, get_settings(request).kpi, caller, enterprise_id)
    if format == "json":
        return found
    return _csv(period_rows(found), PERIOD_COLUMNS, f"shulian-evidence-{enterprise_id}.csv")


@router.get(
    "/enterprises/{enterprise_id}/baselines",
    summary="Every baseline entry of an enterprise, newest (in force) first: who, when, source",
)
async def list_baselines(enterprise_id: str, caller: CallerDep, conn: Conn) -> dict[str, Any]:
    await visible_enterprise(conn, caller, enterprise_id, Capability.EVIDENCE)
    return {"baselines": await evidence.baseline_history(conn, enterprise_id)}


@router.post(
    "/enterprises/{enterprise_id}/baselines",
    status_code=201,
    summary="Enter the baseline in force from now on (admin or the enterprise's provider)",
)
async def add_baseline(
    enterprise_id: str, entry: BaselineIn, request: Request, caller: CallerDep, conn: Conn
) -> dict[str, Any]:
    await visible_enterprise(conn, caller, enterprise_id, Capability.BASELINE)
    values = entry.model_dump()
    if entry.method == "measured" and entry.measured_days is None:
        values["measured_days"] = get_settings(request).kpi.evidence_baseline_days
    principal = caller.principal
    return await evidence.add_baseline(
        conn,
        enterprise_id,
        values,
        token_id=principal.token_id,
        role=principal.role.value,
        name=principal.name,
    )


# --------------------------------------------------------------------------- the bureau's list

SORT_KEYS = ("name", "go_live", *evidence.FIGURES, *MEASURES)


async def pilot_list(
    conn: AsyncConnection[Any], settings: KpiSettings, caller: Caller, sort: str, order: str
) -> list[dict[str, Any]]:
    """Enterprises the caller may see, with baseline, latest month and change of each figure.

    ``sort`` by a figure orders by its relative change from the baseline (missing last).
    """
    if sort not in SORT_KEYS:
        raise BadInputError(
            f"sort: {sort!r} is not one of {', '.join(SORT_KEYS)}",
            hint="Sort by name, go_live or a figure's change from the baseline.",
        )
    ents = await registry.enterprises(conn, only=caller.enterprise_filter())
    now = views.utc_now()
    found = await evidence.evidence(conn, settings, now, [e["id"] for e in ents])
    first, last = recent_days(settings, now)
    measured = {
        m.enterprise: measures_row("recent", m)
        for m in await integration.enterprise_measures(
            conn, settings, first, last, enterprises=[e["id"] for e in ents], now=now
        )
    }
    rows = []
    for ent in ents:
        item = found[ent["id"]]
        latest = item["latest"]
        change = latest["change"] if latest else evidence.compare(item["baseline"]["figures"], {})
        rows.append(
            {
                "enterprise": ent["id"],
                "name": ent["name"],
                "name_en": ent.get("name_en") or "",
                "segment": ent.get("segment"),
                "district": ent.get("district"),
                "district_name": ent.get("district_name"),
                "district_name_en": ent.get("district_name_en"),
                "go_live": item["go_live"],
                "baseline_method": item["baseline"]["method"],
                "baseline_complete": item["baseline"]["complete"],
                "latest_month": latest["label"] if latest else None,
                "change": change,
                "measures": measured.get(ent["id"]),
            }
        )
    reverse = order == "desc"

    def value(row: dict[str, Any]) -> Any:
        if sort in ("name", "go_live"):
            return row[sort] or ""
        if sort in MEASURES:
            return (row["measures"] or {}).get(sort)
        return row["change"][sort]["relative"]

    known = [r for r in rows if value(r) is not None]
    unknown = [r for r in rows if value(r) is None]
    return sorted(known, key=value, reverse=reverse) + unknown


def list_csv_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for row in rows:
        out = {k: v for k, v in row.items() if k not in ("change", "measures")}
        for name in MEASURES:
            out[name] = (row["measures"] or {}).get(name)
        for name in evidence.FIGURES:
            out[f"{name}_before"] = row["change"][name]["before"]
            out[f"{name}_after"] = row["change"][name]["after"]
            out[f"{name}_change"] = row["change"][name]["relative"]
        flat.append(out)
    return flat


LIST_COLUMNS = (
    "enterprise",
    "name",
    "name_en",
    "segment",
    "district",
    "go_live",
    "baseline_method",
    "baseline_complete",
    "latest_month",
    *MEASURES,
    *(f"{n}_{part}" for n in evidence.FIGURES for part in ("before", "after", "change")),
)


@router.get(
    "/evidence",
    summary="Pilot enterprises the caller may see with before/after change, sortable (JSON, CSV)",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
async def list_evidence(
    request: Request,
    caller: CallerDep,
    conn: Conn,
    sort: Annotated[str, Query(description=f"one of {', '.join(SORT_KEYS)}")] = "name",
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
    format: Format = "json",
) -> Any:
    rows = await pilot_list(conn, get_settings(request).kpi, caller, sort, order)
    if format == "json":
        return {
            "sort": sort,
            "order": order,
            "figures": list(evidence.FIGURES),
            "measures": list(MEASURES),
            "rows": rows,
        }
    return _csv(list_csv_rows(rows), LIST_COLUMNS, "shulian-evidence.csv")


# --------------------------------------------------------------------------- pages


def fmt_figure(name: str, value: float | None) -> str:
    """A figure as the report prints it: rates as percentages, the rest as numbers."""
    if value is None:
        return "–"
    if name in ("utilization", "running_rate", "reject_rate", "oee"):
        return f"{value * 100:.1f}%"
    if name == "kwh_per_part":
        return f"{value:.3f}"
    return f"{value:,.1f}"


def fmt_measure(name: str, value: float | None) -> str:
    if value is None:
        return "–"
    if name in ("networked_share", "completeness", "class_coverage"):
        return f"{value * 100:.1f}%"
    return f"{value:,.2f}" if name == "longest_gap_h" else f"{value:,.1f}"


def fmt_change(change: dict[str, Any]) -> str:
    relative = change.get("relative")
    if relative is None:
        return "–"
    return f"{relative * 100:+.1f}%"


@pages.get("/enterprises/{enterprise_id}/evidence", response_class=HTMLResponse)
async def evidence_page(enterprise_id: str, request: Request, conn: Conn) -> Response:
    async def build(caller: Caller) -> Response:
        found = await enterprise_evidence(conn, get_settings(request).kpi, caller, enterprise_id)
        return render(
            request,
            "evidence.html",
            "evidence",
            caller,
            scope=f"enterprise:{enterprise_id}",
            title=local_name(request, found["enterprise"]),
            ev=found,
            rows=period_rows(found),
            fmt=fmt_figure,
            fmt_change=fmt_change,
            fmt_measure=fmt_measure,
            measures=MEASURES,
            is_en=language(request) == "en",
        )

    return await serve_page(request, conn, build)


@pages.get("/evidence", response_class=HTMLResponse)
async def evidence_list_page(
    request: Request,
    conn: Conn,
    sort: str = "name",
    order: Literal["asc", "desc"] = "asc",
) -> Response:
    async def build(caller: Caller) -> Response:
        rows = await pilot_list(conn, get_settings(request).kpi, caller, sort, order)
        for row in rows:
            row["local_name"] = local_name(request, row)
        return render(
            request,
            "evidence_list.html",
            "evidence_list",
            caller,
            rows=rows,
            figures=evidence.FIGURES,
            sort=sort,
            order=order,
            fmt=fmt_figure,
            fmt_change=fmt_change,
            fmt_measure=fmt_measure,
            measures=MEASURES,
        )

    return await serve_page(request, conn, build)

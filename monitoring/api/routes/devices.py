"""A device: KPIs, current signal values, series from the rollups, and its state timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from monitoring.api import registry, views
from monitoring.api.access import Capability
from monitoring.api.deps import CallerDep, Conn, get_settings
from monitoring.api.errors import NotFoundError
from monitoring.api.scopes import Scope

router = APIRouter(tags=["devices"])

_PATH = "/enterprises/{enterprise_id}/devices/{device_id}"


async def _device(
    conn: Conn, caller: CallerDep, enterprise_id: str, device_id: str
) -> dict[str, Any]:
    row = await registry.device(conn, enterprise_id, device_id)
    caller.require_device(
        Capability.DEVICE_DATA, f"{enterprise_id}/{device_id}", enterprise_id if row else None
    )
    assert row is not None
    return row


@router.get(_PATH, summary="A device's KPIs today, signals and state timeline (the device page)")
async def device(
    enterprise_id: str, device_id: str, request: Request, caller: CallerDep, conn: Conn
) -> dict[str, Any]:
    return await views.device_live(
        conn,
        get_settings(request).kpi,
        caller,
        Scope("device", f"{enterprise_id}/{device_id}"),
        views.utc_now(),
    )


@router.get(_PATH + "/signals", summary="Latest value of each signal")
async def signals(
    enterprise_id: str, device_id: str, caller: CallerDep, conn: Conn
) -> dict[str, Any]:
    row = await _device(conn, caller, enterprise_id, device_id)
    return {"signals": await views.current_signals(conn, row["key"])}


@router.get(_PATH + "/series", summary="One signal over time from the 1-minute or 1-hour rollup")
async def series(
    enterprise_id: str,
    device_id: str,
    caller: CallerDep,
    conn: Conn,
    signal: Annotated[str, Query(max_length=80)],
    hours: Annotated[float, Query(gt=0, le=24 * 400)] = 6,
) -> dict[str, Any]:
    """Buckets of 1 minute up to 48 hours back, of 1 hour beyond."""
    row = await _device(conn, caller, enterprise_id, device_id)
    view = "telemetry_1m" if hours <= 48 else "telemetry_1h"
    since = datetime.now(UTC) - timedelta(hours=hours)
    points = await registry.fetch_all(
        conn,
        f"""SELECT r.bucket, r.avg_value, r.min_value, r.max_value FROM {view} r
            JOIN signals g ON g.id = r.signal_id
            WHERE r.device_key = %s AND g.name = %s AND r.bucket >= %s ORDER BY r.bucket""",
        (row["key"], signal, since),
    )
    if (
        not points
        and await registry.fetch_one(conn, "SELECT 1 AS ok FROM signals WHERE name = %s", (signal,))
        is None
    ):
        raise NotFoundError(f"signal {signal!r} not found", hint="See the device's /signals.")
    return {
        "signal": signal,
        "bucket": "1m" if view == "telemetry_1m" else "1h",
        "points": [
            {
                "ts": p["bucket"].isoformat(),
                "avg": p["avg_value"],
                "min": p["min_value"],
                "max": p["max_value"],
            }
            for p in points
        ],
    }


@router.get(_PATH + "/states", summary="State intervals (the timeline) in a time range")
async def states(
    enterprise_id: str,
    device_id: str,
    caller: CallerDep,
    conn: Conn,
    hours: Annotated[float, Query(gt=0, le=24 * 31)] = 24,
) -> dict[str, Any]:
    row = await _device(conn, caller, enterprise_id, device_id)
    now = datetime.now(UTC)
    return {
        "intervals": await views.state_intervals(
            conn, row["key"], now - timedelta(hours=hours), now
        )
    }

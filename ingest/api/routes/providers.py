"""A service provider's view: the enterprises that chose it, with gateway and device status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ingest.api import views
from ingest.api.deps import CallerDep, Conn, get_settings

router = APIRouter(tags=["providers"])


@router.get(
    "/providers/{provider_id}",
    summary="The enterprises a service provider serves, with their gateways' and devices' status",
)
async def provider(
    provider_id: str, request: Request, caller: CallerDep, conn: Conn
) -> dict[str, Any]:
    """For that provider's tokens and admin; the live stream's ``scope=provider:<id>`` sends the
    same payload whenever data arrives."""
    return await views.provider_page(
        conn, get_settings(request).kpi, caller, provider_id, views.utc_now()
    )

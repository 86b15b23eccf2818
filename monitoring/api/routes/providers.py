"""A service provider's view: the enterprises that chose it, with gateway and device status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from monitoring.api import fleet, views
from monitoring.api.deps import CallerDep, Conn, get_settings
from monitoring.api.json_body import JsonBody
from monitoring.api.scopes import Scope, require_scope
from monitoring.api.shared import shared_computations

router = APIRouter(tags=["providers"])


@router.get(
    "/providers/{provider_id}",
    summary="The enterprises a service provider serves, with their gateways' and devices' status",
    response_model=dict[str, Any],
)
async def provider(provider_id: str, request: Request, caller: CallerDep, conn: Conn) -> JsonBody:
    """For that provider's tokens and admin; the live stream's ``scope=provider:<id>`` sends the
    same payload whenever data arrives."""
    scope = Scope("provider", provider_id)
    await require_scope(conn, caller, scope)  # each caller's own check, before sharing
    settings = get_settings(request).kpi
    body = await shared_computations(request).run(
        (scope.kind, scope.key),
        lambda: views.provider_page(conn, settings, caller, provider_id, views.utc_now()),
    )
    return JsonBody(body)


@router.get(
    "/fleet/{key}",
    summary="The fleet console: every gateway of a provider's enterprises (admin: key 'all')",
)
async def fleet_console(key: str, caller: CallerDep, conn: Conn) -> dict[str, Any]:
    """Per gateway: online/offline and since when, version, buffer depth (samples, bytes, fill,
    age of the oldest sample), dropped samples, problems; per device: connection, last good
    read, last error, reads per second. ``key`` is the caller's provider id (admin: any provider
    or ``all``). The live stream's ``scope=fleet:<key>`` sends the same payload on every change."""
    return await fleet.fleet_page(conn, caller, key, views.utc_now())


@router.get(
    "/fleet/{key}/dead-letters",
    summary="The newest dead letters of the fleet's gateways, with their reasons",
)
async def fleet_dead_letters(
    key: str,
    caller: CallerDep,
    conn: Conn,
    limit: int = Query(100, ge=1, le=1000, description="How many, newest first"),
) -> dict[str, Any]:
    return await fleet.dead_letters(conn, caller, key, limit)

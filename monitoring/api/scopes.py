"""Scopes of the KPI endpoints and the live stream: city, segment, district, enterprise, device,
and a service provider's page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg import AsyncConnection

from monitoring import kpis
from monitoring.api import registry
from monitoring.api.access import Capability, can_see_provider
from monitoring.api.deps import Caller, visible_enterprise
from monitoring.api.errors import BadInputError, ForbiddenError, NotFoundError
from monitoring.auth import Role
from monitoring.settings import KpiSettings


@dataclass(frozen=True, slots=True)
class Scope:
    kind: str
    key: str = ""

    @classmethod
    def parse(cls, text: str) -> Scope:
        kind, _, key = text.partition(":")
        if kind not in ("city", "segment", "district", "enterprise", "device", "provider", "fleet"):
            raise BadInputError(
                f"scope {text!r}: unknown kind {kind!r}",
                hint="Use city, segment:<code>, district:<code>, enterprise:<id>, "
                "device:<enterprise>/<device>, provider:<id> or fleet:<provider id or all>.",
            )
        if kind != "city" and not key:
            raise BadInputError(f"scope {text!r}: {kind} needs a key, e.g. {kind}:<id>")
        return cls(kind, key)


def parse_day(text: str | None, what: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise BadInputError(f"{what}: {text!r} is not a date", hint="Use YYYY-MM-DD.") from exc


async def require_scope(conn: AsyncConnection[Any], caller: Caller, scope: Scope) -> dict[str, Any]:
    """Check the caller may read ``scope``'s KPIs; return the scope's registry row."""
    if scope.kind == "city":
        caller.require(Capability.CITY_KPIS)
        return {}
    if scope.kind in ("segment", "district"):
        caller.require(Capability.CITY_KPIS)
        row = await (registry.segment if scope.kind == "segment" else registry.district)(
            conn, scope.key
        )
        if row is None:
            raise NotFoundError(
                f"{scope.kind} {scope.key!r} not found",
                params={"kind": scope.kind, "key": scope.key},
            )
        return row
    if scope.kind == "enterprise":
        return await visible_enterprise(conn, caller, scope.key, Capability.ENTERPRISE_SUMMARY)
    if scope.kind == "fleet":
        return await _require_fleet(conn, caller, scope.key)
    if scope.kind == "provider":
        if not can_see_provider(caller.principal, scope.key):
            if caller.role is Role.PROVIDER:
                raise NotFoundError(
                    f"service provider {scope.key!r} not found",
                    params={"kind": "provider", "key": scope.key},
                )
            raise ForbiddenError(
                f"role {caller.role.value!r} may not read the page of service provider "
                f"{scope.key!r}",
                hint="A service provider's page is for that provider's tokens (and admin).",
                reason="provider_only",
            )
        row = await registry.provider(conn, scope.key)
        if row is None:
            raise NotFoundError(
                f"service provider {scope.key!r} not found",
                params={"kind": "provider", "key": scope.key},
            )
        return row
    enterprise_id, _, device_id = scope.key.partition("/")
    row = await registry.device(conn, enterprise_id, device_id)
    caller.require_device(Capability.DEVICE_DATA, scope.key, enterprise_id if row else None)
    assert row is not None
    return row


async def scope_figures(
    conn: AsyncConnection[Any],
    settings: KpiSettings,
    scope: Scope,
    row: dict[str, Any],
    window: kpis.Window,
    now: datetime,
) -> list[kpis.DeviceFigures]:
    filters: dict[str, Any] = {}
    if scope.kind in ("segment", "district", "enterprise"):
        filters[scope.kind] = scope.key
    elif scope.kind == "device":
        filters["device_key"] = row["key"]
    return await kpis.device_figures(conn, settings, window, now, **filters)


async def _require_fleet(conn: AsyncConnection[Any], caller: Caller, key: str) -> dict[str, Any]:
    """The fleet console: a provider's own fleet (``fleet:<provider>``), admin any or ``all``."""
    mine = caller.role is Role.PROVIDER and key == caller.principal.provider
    if caller.role is not Role.ADMIN and not mine:
        if caller.role is Role.PROVIDER:
            raise NotFoundError(
                f"service provider {key!r} not found", params={"kind": "provider", "key": key}
            )
        raise ForbiddenError(
            f"role {caller.role.value!r} may not open the fleet console",
            hint="The fleet console is for a service provider's tokens (its own fleet) and admin.",
            reason="provider_only",
        )
    if key == "all" and caller.role is Role.ADMIN:
        return {"id": key}
    row = await registry.provider(conn, key)
    if row is None:
        raise NotFoundError(
            f"service provider {key!r} not found", params={"kind": "provider", "key": key}
        )
    return row

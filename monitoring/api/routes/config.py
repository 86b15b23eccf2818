"""Remote configuration (docs/remote-config.md): upload versions, assign them, see what gateways did.

Who may: a provider for the enterprises that chose it (another provider's or enterprise's
library and gateways answer 404), admin for all; an enterprise reads its gateways' assignments
and refuses them; the bureau reads only where an enterprise granted it device data.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from monitoring.api import remote_config as rc
from monitoring.api.access import Capability, visible_enterprises_filter
from monitoring.api.deps import CallerDep, Conn
from monitoring.api.errors import BadInputError, NotFoundError
from monitoring.api.registry import fetch_one
from monitoring.auth import Role

router = APIRouter(prefix="/config", tags=["remote configuration"])


class Upload(BaseModel):
    name: str = Field(description="File name the gateway will use, e.g. 'cnc_lathe.yaml'")
    kind: Literal["profile", "site"]
    content: str = Field(max_length=1_000_000)


class GatewayRef(BaseModel):
    enterprise: str
    gateway: str


class Assign(BaseModel):
    gateways: list[GatewayRef] = Field(min_length=1)
    files: dict[str, int] = Field(
        min_length=1, description="name -> version number; other files stay as in force"
    )


class Refuse(BaseModel):
    reason: str = Field(default="", max_length=2000)


def _require_provider(caller: CallerDep, provider: str) -> None:
    """The library is the provider's own: its tokens and admin; anyone else gets 404."""
    principal = caller.principal
    if principal.role is Role.ADMIN or (
        principal.role is Role.PROVIDER and principal.provider == provider
    ):
        return
    raise NotFoundError(
        f"service provider {provider!r} not found", params={"kind": "provider", "key": provider}
    )


@router.post(
    "/providers/{provider}/files", summary="Upload a new version of a profile or site file"
)
async def upload(provider: str, body: Upload, caller: CallerDep, conn: Conn) -> dict[str, Any]:
    """Validated as ``shulian profile validate`` does; refused (422) with every error message."""
    _require_provider(caller, provider)
    problem = rc.name_problem(body.name)
    if problem:
        raise BadInputError(problem)
    if await fetch_one(conn, "SELECT 1 FROM service_providers WHERE id = %s", (provider,)) is None:
        raise NotFoundError(f"service provider {provider!r} not found")
    result = await rc.validate_upload(
        body.name, body.content, await rc.library(conn, provider), kind=body.kind
    )
    if result.errors:
        raise BadInputError(
            f"{body.name} has {len(result.errors)} error(s); nothing was stored:\n"
            + "\n".join(result.errors),
            hint="Fix the file and upload again; `shulian profile validate` shows the same.",
        )
    row = await rc.store_version(
        conn, provider, body.name, body.kind, body.content, caller.principal
    )
    return {**row, "warnings": result.warnings}


@router.get("/providers/{provider}/files", summary="Every version in a provider's library")
async def files(provider: str, caller: CallerDep, conn: Conn) -> dict[str, Any]:
    _require_provider(caller, provider)
    return {"provider": provider, "versions": await rc.versions(conn, provider)}


@router.get(
    "/providers/{provider}/files/{name}/versions/{number}", summary="One version with its text"
)
async def file_version(
    provider: str, name: str, number: int, caller: CallerDep, conn: Conn
) -> dict[str, Any]:
    _require_provider(caller, provider)
    row = await rc.version(conn, provider, name, number)
    if row is None:
        raise NotFoundError(f"{name} version {number} not found in the library of {provider}")
    return row


async def _gateway(
    conn: Conn, caller: CallerDep, enterprise: str, gateway: str, cap: Capability
) -> dict[str, Any]:
    row = await rc.gateway_row(conn, enterprise, gateway)
    if row is None or not caller.can(Capability.CONFIG_READ, enterprise):
        raise NotFoundError(
            f"gateway {enterprise}/{gateway} not found",
            params={"kind": "gateway", "key": f"{enterprise}/{gateway}"},
        )
    caller.require(cap, enterprise)
    return row


@router.post(
    "/assignments", summary="Assign file versions to gateways (a rollback is an older one)"
)
async def assign(body: Assign, caller: CallerDep, conn: Conn) -> dict[str, Any]:
    """Every gateway is checked before any is assigned, so a refusal assigns nothing."""
    rows = [
        await _gateway(conn, caller, g.enterprise, g.gateway, Capability.CONFIG_ASSIGN)
        for g in body.gateways
    ]
    for row in rows:
        if row["provider_id"] is None:
            raise BadInputError(f"enterprise {row['enterprise_id']!r} has no service provider")
        if caller.role is Role.PROVIDER and row["provider_id"] != caller.principal.provider:
            raise NotFoundError(f"gateway {row['id']!r} not found")
    out = []
    for row in rows:
        try:
            out.append(await rc.assign(conn, row, body.files, caller.principal))
        except LookupError as exc:
            raise BadInputError(str(exc)) from None
    return {"assignments": out}


@router.get(
    "/enterprises/{enterprise}/gateways/{gateway}",
    summary="A gateway's configuration: assigned, delivered, applied, refusal messages",
)
async def gateway_state(
    enterprise: str, gateway: str, caller: CallerDep, conn: Conn
) -> dict[str, Any]:
    await _gateway(conn, caller, enterprise, gateway, Capability.CONFIG_READ)
    return await rc.gateway_state(conn, enterprise, gateway)


@router.post("/assignments/{revision}/refuse", summary="The enterprise refuses an assignment")
async def refuse(revision: int, body: Refuse, caller: CallerDep, conn: Conn) -> dict[str, Any]:
    row = await rc.assignment(conn, revision)
    if row is None or not caller.can(Capability.CONFIG_READ, row["enterprise_id"]):
        raise NotFoundError(f"assignment {revision} not found")
    caller.require(Capability.CONFIG_REFUSE, row["enterprise_id"])
    refused = await rc.refuse(conn, revision, caller.principal, body.reason)
    if refused is None:
        raise BadInputError(f"assignment {revision} was already refused")
    return refused


@router.get("/audit", summary="Every assignment the caller may see, newest first")
async def audit(caller: CallerDep, conn: Conn) -> dict[str, Any]:
    if caller.role is Role.BUREAU:
        visible: frozenset[str] | None = caller.reach.granted
    else:
        visible = visible_enterprises_filter(caller.principal, caller.reach)
    return {"assignments": await rc.audit(conn, visible)}

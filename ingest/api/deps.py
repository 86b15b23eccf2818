"""FastAPI dependencies: a pooled connection, the calling principal, and access checks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ingest.api import registry
from ingest.api.access import Capability, Reach, can, knows_of, visible_enterprises_filter
from ingest.api.errors import ForbiddenError, NotFoundError, UnauthorizedError
from ingest.api.settings import MonitoringSettings
from ingest.auth import Principal, Role, authenticate

COOKIE_NAME: Final = "shulian_token"


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection[Any]]:
    """One pooled connection for the request, in autocommit mode (reads only see committed rows)."""
    async with request.app.state.pool.connection() as conn:
        yield conn


Conn = Annotated[AsyncConnection[Any], Depends(get_conn)]

SPARE_WAIT_S: Final = 0.05


@contextlib.asynccontextmanager
async def spare_connection(
    pool: AsyncConnectionPool[Any],
) -> AsyncIterator[AsyncConnection[Any] | None]:
    """A second pooled connection if one is free within 50 ms, else None (queries run in turn).

    Never waits longer: whoever asks already holds a connection, and holders waiting for a second
    could otherwise take the whole pool and wait for each other.
    """
    try:
        conn = await pool.getconn(timeout=SPARE_WAIT_S)
    except PoolTimeout:
        conn = None
    if conn is None:
        yield None
        return
    try:
        yield conn
    finally:
        await pool.putconn(conn)


async def get_side_conn(request: Request) -> AsyncIterator[AsyncConnection[Any] | None]:
    """A spare connection for the independent queries of the overview and group pages."""
    async with spare_connection(request.app.state.pool) as conn:
        yield conn


SideConn = Annotated[AsyncConnection[Any] | None, Depends(get_side_conn)]


def get_settings(request: Request) -> MonitoringSettings:
    settings: MonitoringSettings = request.app.state.api_settings
    return settings


def presented_token(request: Request) -> str | None:
    """The bearer token of the request: the Authorization header first, then the sign-in cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE_NAME) or None


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller with what they can reach, and the checks every route uses."""

    principal: Principal
    reach: Reach

    @property
    def role(self) -> Role:
        return self.principal.role

    def can(self, capability: Capability, enterprise: str | None = None) -> bool:
        return can(self.principal, capability, enterprise, self.reach)

    def require(self, capability: Capability, enterprise: str | None = None) -> None:
        """Raise 403 (or 404 when the caller may not know the enterprise exists) unless allowed."""
        if self.can(capability, enterprise):
            return
        if enterprise is not None and not knows_of(self.principal, enterprise, self.reach):
            raise NotFoundError(f"enterprise {enterprise!r} not found")
        raise ForbiddenError(
            f"role {self.role.value!r} may not read {capability.value.replace('_', ' ')}"
            + (f" of enterprise {enterprise!r}" if enterprise else ""),
            hint=_hint(self.role, capability),
        )

    def require_device(self, capability: Capability, device: str, enterprise: str | None) -> None:
        """Like ``require`` for a device; an invisible device is reported as not found."""
        if enterprise is None or not knows_of(self.principal, enterprise, self.reach):
            raise NotFoundError(f"device {device!r} not found")
        self.require(capability, enterprise)

    def enterprise_filter(self) -> frozenset[str] | None:
        return visible_enterprises_filter(self.principal, self.reach)


def _hint(role: Role, capability: Capability) -> str:
    if role is Role.BUREAU and capability in (Capability.DEVICE_DATA, Capability.DEVICE_STATUS):
        return "The enterprise has not granted the bureau access to its device data."
    if capability is Capability.CITY_KPIS:
        return "City, segment and district KPIs are for bureau and admin tokens."
    return "Ask the bureau's administrator for a token with the right role."


async def get_caller(request: Request, conn: Conn) -> Caller:
    """Authenticate the request's token; 401 when it is missing, unknown, revoked or expired."""
    secret = presented_token(request)
    if not secret:
        raise UnauthorizedError(
            "missing bearer token",
            hint="Send 'Authorization: Bearer <token>' (create one with `shulian ingest token create`).",
        )
    principal = await authenticate(conn, secret)
    if principal is None:
        raise UnauthorizedError(
            "unknown, revoked or expired token",
            hint="Create a new one with `shulian ingest token create`.",
        )
    reach = await registry.load_reach(conn, principal)
    return Caller(principal, reach)


CallerDep = Annotated[Caller, Depends(get_caller)]

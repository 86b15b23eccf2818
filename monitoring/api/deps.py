"""FastAPI dependencies: a pooled connection, the calling principal, and access checks.

A caller presents either a bearer token (``Authorization: Bearer slk_…``: API clients) or the
UI's session cookie (``shulian_session``: a browser that signed in). A state-changing request
(POST, PUT, PATCH, DELETE) that rests on the cookie must come from one of the app's origins, told
by its ``Origin`` header (or ``Referer``); otherwise it is refused with 403 ``bad_origin``, so
another site cannot make a signed-in browser change anything. Bearer requests carry no ambient
credential and are not checked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from monitoring.api import registry
from monitoring.api.access import Capability, Reach, can, knows_of, visible_enterprises_filter
from monitoring.api.errors import BadOriginError, ForbiddenError, NotFoundError, UnauthorizedError
from monitoring.auth import Principal, Role, authenticate, authenticate_session
from monitoring.settings import MonitoringSettings

SESSION_COOKIE: Final = "shulian_session"
OLD_TOKEN_COOKIE: Final = "shulian_token"
"""Before sessions, the cookie held the token itself; it is no longer read, only deleted."""
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def read_pool(request: Request) -> AsyncConnectionPool[Any]:
    """The pool a request's reads use: ``db.read_url``'s (a replica) for GET and HEAD, else the
    write pool (``db.url``). The app sets both; they are one pool when no read URL is set."""
    pool: AsyncConnectionPool[Any] = request.app.state.read_pool
    return pool


def write_pool(request: Request) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    return pool


def _request_pool(request: Request) -> AsyncConnectionPool[Any]:
    """GET and HEAD read (the read pool); every other method changes something (the write pool)."""
    return write_pool(request) if request.method in UNSAFE_METHODS else read_pool(request)


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection[Any]]:
    """One pooled connection for the request, in autocommit mode (reads only see committed rows):
    from the read pool for GET and HEAD, from the write pool for state changes."""
    async with _request_pool(request).connection() as conn:
        yield conn


Conn = Annotated[AsyncConnection[Any], Depends(get_conn)]


def get_settings(request: Request) -> MonitoringSettings:
    settings: MonitoringSettings = request.app.state.api_settings
    return settings


@dataclass(frozen=True, slots=True)
class Credential:
    """What the request presented: a bearer token, or the UI's session id from its cookie."""

    kind: Literal["bearer", "session"]
    secret: str


def presented_credential(request: Request) -> Credential | None:
    """The request's credential: the Authorization header first, then the session cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return Credential("bearer", value.strip())
    session = request.cookies.get(SESSION_COOKIE)
    return Credential("session", session) if session else None


async def authenticate_credential(
    conn: AsyncConnection[Any], credential: Credential, settings: MonitoringSettings
) -> Principal | None:
    """The principal behind a credential, or None when it is unknown or has ended."""
    if credential.kind == "bearer":
        return await authenticate(conn, credential.secret)
    return await authenticate_session(conn, credential.secret, settings.session_idle_s)


def own_origin(request: Request) -> str:
    """The origin the request was sent to (scheme as uvicorn saw it, after trusted proxies)."""
    host = request.headers.get("host") or request.url.netloc
    return f"{request.url.scheme}://{host}".lower()


def request_origin(request: Request) -> tuple[str, str] | None:
    """``(origin, header it came from)``: the ``Origin`` header, else the ``Referer``'s origin."""
    origin = request.headers.get("origin", "").strip()
    if origin and origin != "null":
        return origin.rstrip("/").lower(), "Origin"
    referer = request.headers.get("referer", "").strip()
    if referer:
        parts = urlsplit(referer)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}".lower(), "Referer"
    return None


def check_origin(request: Request, *, required: bool) -> None:
    """Refuse (403 ``bad_origin``) a request whose Origin or Referer is not one of the app's.

    Args:
        required: refuse a request that names no origin at all (cookie-authenticated requests);
            otherwise only a foreign origin is refused (sign-in, which API clients call too).
    """
    settings = get_settings(request)
    allowed = {own_origin(request), *(o.rstrip("/").lower() for o in settings.allowed_origins)}
    found = request_origin(request)
    where = f"{request.method} {request.url.path}"
    hint = (
        "Send this from the app's own pages, or from an origin listed in "
        "allowed_origins (SHULIAN_MONITORING_ALLOWED_ORIGINS). "
        "Scripts and API clients authenticate with 'Authorization: Bearer <token>' instead of "
        "the browser's session cookie."
    )
    if found is None:
        if required:
            raise BadOriginError(
                f"{where}: a request signed in with the session cookie must carry an Origin or "
                f"Referer header naming one of this app's origins ({', '.join(sorted(allowed))})",
                hint=hint,
            )
        return
    origin, header = found
    if origin not in allowed:
        raise BadOriginError(
            f"{where}: {header} {origin!r} is not one of this app's origins "
            f"({', '.join(sorted(allowed))}); refused so another site cannot act with your session",
            hint=hint,
        )


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
            raise NotFoundError(
                f"enterprise {enterprise!r} not found",
                params={"kind": "enterprise", "key": enterprise},
            )
        raise ForbiddenError(
            f"role {self.role.value!r} may not read {capability.value.replace('_', ' ')}"
            + (f" of enterprise {enterprise!r}" if enterprise else ""),
            hint=_hint(self.role, capability),
            reason=_reason(self.role, capability),
            params={"enterprise": enterprise or ""},
        )

    def require_device(self, capability: Capability, device: str, enterprise: str | None) -> None:
        """Like ``require`` for a device; an invisible device is reported as not found."""
        if enterprise is None or not knows_of(self.principal, enterprise, self.reach):
            raise NotFoundError(
                f"device {device!r} not found", params={"kind": "device", "key": device}
            )
        self.require(capability, enterprise)

    def enterprise_filter(self) -> frozenset[str] | None:
        return visible_enterprises_filter(self.principal, self.reach)


async def visible_enterprise(
    conn: AsyncConnection[Any], caller: Caller, enterprise_id: str, capability: Capability
) -> dict[str, Any]:
    """The enterprise's registry row once the caller holds ``capability`` for it; 404 if none."""
    caller.require(capability, enterprise_id)
    row = await registry.enterprise(conn, enterprise_id)
    if row is None:
        raise NotFoundError(
            f"enterprise {enterprise_id!r} not found",
            params={"kind": "enterprise", "key": enterprise_id},
        )
    return row


def _reason(role: Role, capability: Capability) -> str:
    """The page text for ``_hint``'s cases (``error.message.<reason>`` in monitoring/web/i18n/)."""
    if role is Role.BUREAU and capability in (Capability.DEVICE_DATA, Capability.DEVICE_STATUS):
        return "no_grant"
    if capability is Capability.CITY_KPIS:
        return "city_only"
    return "wrong_role"


def _hint(role: Role, capability: Capability) -> str:
    if role is Role.BUREAU and capability in (Capability.DEVICE_DATA, Capability.DEVICE_STATUS):
        return "The enterprise has not granted the bureau access to its device data."
    if capability is Capability.CITY_KPIS:
        return "City, segment and district KPIs are for bureau and admin tokens."
    return "Ask the bureau's administrator for a token with the right role."


async def load_caller(
    conn: AsyncConnection[Any], credential: Credential | None, settings: MonitoringSettings
) -> Caller:
    """Authenticate a credential and load what it reaches; 401 when it is missing or ended."""
    if credential is None:
        raise UnauthorizedError(
            "missing bearer token or session",
            hint="Send 'Authorization: Bearer <token>' (create one with `shulian monitoring token "
            "create`), or sign in at /login.",
        )
    principal = await authenticate_credential(conn, credential, settings)
    if principal is None and credential.kind == "bearer":
        raise UnauthorizedError(
            "unknown, revoked or expired token",
            hint="Create a new one with `shulian monitoring token create`.",
        )
    if principal is None:
        raise UnauthorizedError(
            "the session has ended (signed out, expired, idle too long, or its token was "
            "revoked or expired)",
            hint="Sign in again at /login.",
        )
    reach = await registry.load_reach(conn, principal)
    return Caller(principal, reach)


async def get_caller(request: Request, conn: Conn) -> Caller:
    """The request's caller; cookie-authenticated state changes must also pass the Origin check.

    The caller is always loaded from the write pool (the primary), whatever pool the request's
    data comes from: a session just created, a token just revoked and a grant just withdrawn
    count at once rather than after a replica's lag, and touching a session is a write.
    """
    credential = presented_credential(request)
    if credential is not None and credential.kind == "session":
        if request.method in UNSAFE_METHODS:
            check_origin(request, required=True)
    settings = get_settings(request)
    primary = write_pool(request)
    if _request_pool(request) is primary:  # the request's connection is the primary's already
        return await load_caller(conn, credential, settings)
    async with primary.connection() as write_conn:
        return await load_caller(write_conn, credential, settings)


CallerDep = Annotated[Caller, Depends(get_caller)]

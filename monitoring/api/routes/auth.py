"""Who am I, and the UI's sign-in: a token exchanged for a server-side browser session.

``POST /api/auth/session`` checks the token, stores a new session (monitoring/auth.py) and sets the
session id as an HttpOnly, SameSite=Lax cookie (``Secure`` per ``cookie_secure``);
the token itself never goes into the browser's storage. ``DELETE`` deletes the session.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from monitoring.api.deps import (
    OLD_TOKEN_COOKIE,
    SESSION_COOKIE,
    CallerDep,
    Conn,
    check_origin,
    get_settings,
)
from monitoring.api.errors import UnauthorizedError
from monitoring.api.schemas import SessionIn
from monitoring.auth import Principal, Role, TokenError, authenticate, create_session, end_session

router = APIRouter(tags=["auth"])


def home_of(principal: Principal) -> str:
    """Where the UI takes a principal after sign-in."""
    if principal.role is Role.ENTERPRISE:
        return f"/enterprises/{principal.enterprise}"
    if principal.role is Role.PROVIDER:
        return "/provider"
    return "/"


def _me(principal: Principal) -> dict[str, Any]:
    return {
        "role": principal.role.value,
        "enterprise": principal.enterprise,
        "provider": principal.provider,
        "name": principal.name,
        "home": home_of(principal),
    }


def is_secure_cookie(request: Request) -> bool:
    """``cookie_secure``: true or false as set; ``auto`` follows the request's scheme."""
    setting = get_settings(request).cookie_secure
    if setting == "auto":
        return request.url.scheme == "https"
    return bool(setting)


@router.get("/me", summary="The caller's role and binding")
async def me(caller: CallerDep) -> dict[str, Any]:
    return _me(caller.principal)


@router.post(
    "/auth/session",
    summary="Sign the UI in: check a token and start a browser session (cookie)",
)
async def sign_in(
    body: SessionIn, request: Request, response: Response, conn: Conn
) -> dict[str, Any]:
    # Login CSRF: a browser's request from another site is refused; API clients send no Origin.
    check_origin(request, required=False)
    principal = await authenticate(conn, body.token.strip())
    if principal is None:
        raise UnauthorizedError(
            "unknown, revoked or expired token",
            hint="Ask the bureau's administrator for a token (`shulian monitoring token create`).",
        )
    settings = get_settings(request)
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        await end_session(conn, previous)
    try:
        session = await create_session(conn, principal, settings.session_lifetime_s)
    except TokenError as exc:
        raise UnauthorizedError(str(exc)) from exc
    max_age = max(1, int((session.expires_at - datetime.now(UTC)).total_seconds()))
    response.set_cookie(
        SESSION_COOKIE,
        session.secret,
        httponly=True,
        samesite="lax",
        secure=is_secure_cookie(request),
        max_age=max_age,
        path="/",
    )
    response.delete_cookie(OLD_TOKEN_COOKIE)
    return {**_me(principal), "expires_at": session.expires_at.isoformat()}


@router.delete("/auth/session", summary="Sign the UI out: end the browser session")
async def sign_out(request: Request, response: Response, conn: Conn) -> dict[str, str]:
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        check_origin(request, required=True)
        await end_session(conn, secret)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    response.delete_cookie(OLD_TOKEN_COOKIE)
    return {"status": "signed out"}

"""Who am I, and the UI's sign-in: a token exchanged for an HttpOnly cookie."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from ingest.api.deps import COOKIE_NAME, CallerDep, Conn, get_settings
from ingest.api.errors import UnauthorizedError
from ingest.api.schemas import SessionIn
from ingest.auth import Principal, Role, authenticate

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


@router.get("/me", summary="The caller's role and binding")
async def me(caller: CallerDep) -> dict[str, Any]:
    return _me(caller.principal)


@router.post("/auth/session", summary="Sign the UI in: check a token and set it as a cookie")
async def sign_in(
    body: SessionIn, request: Request, response: Response, conn: Conn
) -> dict[str, Any]:
    principal = await authenticate(conn, body.token.strip())
    if principal is None:
        raise UnauthorizedError("unknown, revoked or expired token")
    response.set_cookie(
        COOKIE_NAME,
        body.token.strip(),
        httponly=True,
        samesite="strict",
        secure=get_settings(request).cookie_secure is True,
        max_age=30 * 86_400,
    )
    return _me(principal)


@router.delete("/auth/session", summary="Sign the UI out")
async def sign_out(response: Response) -> dict[str, str]:
    response.delete_cookie(COOKIE_NAME)
    return {"status": "signed out"}

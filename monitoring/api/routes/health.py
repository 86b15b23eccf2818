"""Liveness and readiness of the monitoring app (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter

from monitoring.api.deps import Conn

router = APIRouter(tags=["health"])


@router.get("/health", summary="The app runs and its database answers")
async def health(conn: Conn) -> dict[str, str]:
    await conn.execute("SELECT 1")
    return {"status": "ok"}

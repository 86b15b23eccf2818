"""Pages computed once for concurrent requests still answer each caller by its own access, and
never from an earlier computation (monitoring/api/shared.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from conftest import ServedApp
from monitoring_data import device_key, issue_tokens, set_current


def _concurrently(base: str, requests: list[tuple[str, str]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.get(path, headers={"Authorization": f"Bearer {token}"})
                        for token, path in requests
                    )
                )
            )

    return asyncio.run(run())


def test_concurrent_callers_each_get_their_own_access(
    monitoring_db: str, serve: Callable[..., ServedApp]
) -> None:
    """ent-a (device data), the bureau (no grant: no device rows), ent-b (not its enterprise)
    and the provider (status only) ask for ent-a's page at once, many times over: whoever's
    computation they join, each gets what its own access allows; likewise the overview and a
    provider's page."""
    tokens = issue_tokens(monitoring_db)
    app = serve()

    def seen(response: httpx.Response) -> tuple[int, int | None]:
        body = response.json()
        return response.status_code, len(body["devices"]) if "devices" in body else None

    who = ["ent-a", "bureau", "ent-b", "provider"]
    alone = {
        c: seen(_concurrently(app.url, [(tokens[c], "/api/enterprises/ent-a")])[0]) for c in who
    }
    assert alone["ent-a"] == (200, 3)
    assert alone["bureau"] == (200, None)  # no grant: no device rows
    assert alone["ent-b"][0] == 404
    callers = who * 8
    responses = _concurrently(app.url, [(tokens[c], "/api/enterprises/ent-a") for c in callers])
    for caller, response in zip(callers, responses, strict=True):
        assert seen(response) == alone[caller], caller
    # The overview: the bureau's answers while ent-a (not allowed city KPIs) asks too.
    callers = ["bureau", "ent-a"] * 8
    responses = _concurrently(app.url, [(tokens[c], "/api/overview") for c in callers])
    for caller, response in zip(callers, responses, strict=True):
        assert response.status_code == (200 if caller == "bureau" else 403), caller
    # A provider's page: the provider's own answers, all the same, while the bureau is refused.
    callers = ["provider", "bureau"] * 8
    responses = _concurrently(app.url, [(tokens[c], "/api/providers/sp-1") for c in callers])
    own = [r.json() for c, r in zip(callers, responses, strict=True) if c == "provider"]
    assert [e["id"] for e in own[0]["served"]] == ["ent-a"]
    assert len(own[0]["served"][0]["devices"]) == 3
    assert all(body["served"] == own[0]["served"] for body in own)
    for caller, response in zip(callers, responses, strict=True):
        assert response.status_code == (200 if caller == "provider" else 403), caller


def test_an_answer_after_a_change_shows_it(
    monitoring_db: str, serve: Callable[..., ServedApp]
) -> None:
    """Nothing is kept once a computation ends: an alarm raised between two requests shows.

    Without the refresh jobs, so the counts of now are the request's own rather than the status
    snapshot's (taken every few seconds; test_monitoring_scope_kpis.py covers that)."""
    tokens = issue_tokens(monitoring_db)
    app = serve(refresh={"enabled": False})
    press = device_key(monitoring_db, "ent-b", "press-1")
    now = datetime.now(UTC)

    def alarms() -> Any:
        [response] = _concurrently(app.url, [(tokens["bureau"], "/api/overview")])
        return response.json()["summary"]["alarms_active"]

    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        set_current(conn, press, "machine_state", now - timedelta(seconds=5), None, "running")
        set_current(conn, press, "alarm_active", now - timedelta(seconds=5), 0)
    before = alarms()
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        set_current(conn, press, "alarm_active", datetime.now(UTC), 1)
    assert alarms() == before + 1

"""An open /api/live stream ends once its caller may no longer see it, through a real uvicorn.

Each test opens the SSE stream over HTTP, reads the first ``update``, takes access away the way an
operator or an enterprise does (``shulian monitoring token revoke``, ``DELETE .../grants/bureau``,
signing out), and reads on: the stream must send a ``closed`` event with ``{code, message, hint}``
and end within 5 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from conftest import ServedApp
from monitoring_data import issue_tokens
from typer.testing import CliRunner

from monitoring.api.cli import token_app
from monitoring.auth import hash_secret

DEVICE_SCOPE = "device:ent-a/lathe-1"
CLOSE_WITHIN_S = 5.0


def _events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event name, decoded data) for each SSE event; comments are skipped."""
    name, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def _stream(client: httpx.Client, scope: str, **kwargs: Any) -> Any:
    # A read timeout above the keep-alive period would hide a stream that never closes; 10 s is
    # longer than the 5 s the test allows and shorter than the 15 s keep-alive.
    return client.stream(
        "GET", "/api/live", params={"scope": scope}, timeout=httpx.Timeout(10.0), **kwargs
    )


def _closed_after(events: Iterator[tuple[str, Any]], started: float) -> tuple[float, Any]:
    """Read until the stream ends; return the seconds since ``started`` and the closing reason."""
    reason = None
    for name, data in events:
        if name == "closed":
            reason = data
    return time.monotonic() - started, reason


def _token_id(url: str, secret: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT id FROM api_tokens WHERE token_hash = %s", (hash_secret(secret),)
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture()
def world(
    monitoring_db: str, serve: Callable[..., ServedApp]
) -> tuple[ServedApp, dict[str, str], str]:
    return serve(live_poll_s=0.5), issue_tokens(monitoring_db), monitoring_db


def test_stream_closes_within_5_s_of_the_token_being_revoked(world: Any) -> None:
    served, tokens, url = world
    headers = {"Authorization": f"Bearer {tokens['ent-a']}"}
    with (
        httpx.Client(base_url=served.url) as client,
        _stream(client, DEVICE_SCOPE, headers=headers) as response,
    ):
        assert response.status_code == 200
        events = _events(response)
        assert next(events)[0] == "update"
        result = CliRunner().invoke(
            token_app, ["revoke", str(_token_id(url, tokens["ent-a"])), "--db", url]
        )
        assert result.exit_code == 0, result.output
        elapsed, reason = _closed_after(events, time.monotonic())
    assert reason is not None and reason["code"] == "unauthorized", reason
    assert set(reason) == {"code", "message", "hint"}
    assert elapsed < CLOSE_WITHIN_S, f"closed {elapsed:.1f} s after the revocation"


def test_stream_closes_within_5_s_of_the_token_expiring(world: Any) -> None:
    """Expiry changes nothing the hub watches: the periodic re-check alone must catch it."""
    served, tokens, url = world
    headers = {"Authorization": f"Bearer {tokens['ent-a']}"}
    with (
        httpx.Client(base_url=served.url) as client,
        _stream(client, DEVICE_SCOPE, headers=headers) as response,
    ):
        events = _events(response)
        assert next(events)[0] == "update"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE api_tokens SET expires_at = now() WHERE id = %s",
                (_token_id(url, tokens["ent-a"]),),
            )
        elapsed, reason = _closed_after(events, time.monotonic())
    assert reason is not None and reason["code"] == "unauthorized", reason
    assert elapsed < CLOSE_WITHIN_S, f"closed {elapsed:.1f} s after the expiry"


def test_stream_closes_within_5_s_of_the_enterprise_withdrawing_the_grant(world: Any) -> None:
    served, tokens, _ = world
    owner = {"Authorization": f"Bearer {tokens['ent-a']}"}
    bureau = {"Authorization": f"Bearer {tokens['bureau']}"}
    with httpx.Client(base_url=served.url) as client:
        assert client.put("/api/enterprises/ent-a/grants/bureau", headers=owner).status_code == 200
        with _stream(client, DEVICE_SCOPE, headers=bureau) as response:
            assert response.status_code == 200
            events = _events(response)
            assert next(events)[0] == "update"
            withdrawn = client.delete("/api/enterprises/ent-a/grants/bureau", headers=owner)
            assert withdrawn.status_code == 200
            elapsed, reason = _closed_after(events, time.monotonic())
        assert reason is not None and reason["code"] == "forbidden", reason
        assert elapsed < CLOSE_WITHIN_S, f"closed {elapsed:.1f} s after the withdrawal"
        # Opening it again is refused like the device endpoint.
        assert (
            client.get("/api/live", params={"scope": DEVICE_SCOPE}, headers=bureau).status_code
            == 403
        )


def test_enterprise_stream_drops_the_device_list_when_the_grant_is_withdrawn(world: Any) -> None:
    served, tokens, _ = world
    owner = {"Authorization": f"Bearer {tokens['ent-a']}"}
    bureau = {"Authorization": f"Bearer {tokens['bureau']}"}
    with httpx.Client(base_url=served.url) as client:
        client.put("/api/enterprises/ent-a/grants/bureau", headers=owner)
        with _stream(client, "enterprise:ent-a", headers=bureau) as response:
            events = _events(response)
            name, first = next(events)
            assert name == "update" and "devices" in first
            client.delete("/api/enterprises/ent-a/grants/bureau", headers=owner)
            started = time.monotonic()
            for name, data in events:
                assert name == "update", (name, data)  # the summary stays the bureau's to see
                if "devices" not in data:
                    break
            assert time.monotonic() - started < CLOSE_WITHIN_S


def test_stream_of_a_browser_session_closes_within_5_s_of_signing_out(world: Any) -> None:
    served, tokens, _ = world
    with httpx.Client(base_url=served.url) as browser:
        assert browser.post("/api/auth/session", json={"token": tokens["ent-a"]}).status_code == 200
        with _stream(browser, DEVICE_SCOPE) as response:
            assert response.status_code == 200
            events = _events(response)
            assert next(events)[0] == "update"
            with httpx.Client(base_url=served.url, cookies=browser.cookies) as other_tab:
                out = other_tab.delete("/api/auth/session", headers={"Origin": served.url})
                assert out.status_code == 200
            elapsed, reason = _closed_after(events, time.monotonic())
    assert reason is not None and reason["code"] == "unauthorized", reason
    assert elapsed < CLOSE_WITHIN_S


def test_open_streams_hold_no_pool_connection(
    monitoring_db: str, serve: Callable[..., ServedApp]
) -> None:
    """Three streams on a pool of two: the API still answers at once (each stream's re-checks
    borrow a connection briefly, never for the stream's life)."""
    served = serve(pool_size=2)
    headers = {"Authorization": f"Bearer {issue_tokens(monitoring_db)['admin']}"}
    with httpx.Client(base_url=served.url, headers=headers) as client:
        opened = []
        try:
            for _ in range(3):
                stream = _stream(client, "enterprise:ent-a")
                response = stream.__enter__()
                opened.append(stream)
                assert next(_events(response))[0] == "update"
            started = time.monotonic()
            assert client.get("/api/me", timeout=10).status_code == 200
            assert time.monotonic() - started < 2.0
        finally:
            for stream in opened:
                stream.__exit__(None, None, None)

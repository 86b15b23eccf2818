"""Browser sessions: what the cookie holds, how sessions end, Secure cookies and the Origin check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import ServedApp
from fastapi.testclient import TestClient
from monitoring_data import issue_tokens
from typer.testing import CliRunner

from monitoring.api.app import create_app
from monitoring.api.cli import parse_duration, token_app
from monitoring.auth import hash_secret
from monitoring.settings import MonitoringSettings, load_settings

GRANT = "/api/enterprises/ent-a/grants/bureau"
OWN = "http://testserver"


@pytest.fixture()
def tokens(monitoring_db: str) -> dict[str, str]:
    return issue_tokens(monitoring_db)


def _app(url: str, **monitoring: Any) -> Any:
    return create_app(MonitoringSettings(db={"url": url}, **monitoring))


@pytest.fixture()
def browser(monitoring_db: str) -> Iterator[TestClient]:
    with TestClient(_app(monitoring_db, allowed_origins=["https://portal.example.cn"])) as client:
        yield client


def _sign_in(client: TestClient | httpx.Client, token: str) -> httpx.Response:
    response = client.post("/api/auth/session", json={"token": token})
    assert response.status_code == 200, response.text
    return response


def _cookie_flags(response: httpx.Response) -> list[str]:
    """The attributes of the session cookie the response sets (lower case)."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith("shulian_session="):
            return [part.strip().lower() for part in header.split(";")]
    raise AssertionError(f"no session cookie in {response.headers.get_list('set-cookie')}")


def _sessions(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "SELECT session_hash, token_id, expires_at, last_seen_at FROM web_sessions ORDER BY id"
        )
        names = [c.name for c in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _token_id(url: str, secret: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT id FROM api_tokens WHERE token_hash = %s", (hash_secret(secret),)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_cookie_holds_a_session_id_stored_only_as_its_hash(
    browser: TestClient, tokens: dict[str, str], monitoring_db: str
) -> None:
    response = _sign_in(browser, tokens["ent-a"])
    session_id = browser.cookies["shulian_session"]
    assert session_id.startswith("sls_")
    assert all(tokens["ent-a"] not in h for h in response.headers.get_list("set-cookie"))
    flags = _cookie_flags(response)
    assert "httponly" in flags and "samesite=lax" in flags and "secure" not in flags
    assert "max-age=43200" in flags or any(f.startswith("max-age=4319") for f in flags)
    (stored,) = _sessions(monitoring_db)
    assert bytes(stored["session_hash"]) == hash_secret(session_id)
    assert stored["token_id"] == _token_id(monitoring_db, tokens["ent-a"])
    lifetime = stored["expires_at"] - datetime.now(UTC)
    assert timedelta(hours=11, minutes=59) < lifetime <= timedelta(hours=12)
    assert browser.get("/api/me").json()["enterprise"] == "ent-a"


def test_sign_out_deletes_the_session_so_a_copied_cookie_stops_working(
    browser: TestClient, tokens: dict[str, str], monitoring_db: str
) -> None:
    _sign_in(browser, tokens["ent-a"])
    copied = browser.cookies["shulian_session"]
    assert browser.delete("/api/auth/session", headers={"Origin": OWN}).status_code == 200
    assert _sessions(monitoring_db) == []
    browser.cookies.clear()
    response = browser.get("/api/me", cookies={"shulian_session": copied})
    assert response.status_code == 401
    assert response.json()["hint"] == "Sign in again at /login."
    page = browser.get(
        "/enterprises/ent-a", cookies={"shulian_session": copied}, follow_redirects=False
    )
    assert (page.status_code, page.headers["location"]) == (303, "/login")


def test_revoking_the_token_ends_its_sessions(
    browser: TestClient, tokens: dict[str, str], monitoring_db: str
) -> None:
    _sign_in(browser, tokens["ent-a"])
    assert browser.get("/api/me").status_code == 200
    result = CliRunner().invoke(
        token_app, ["revoke", str(_token_id(monitoring_db, tokens["ent-a"])), "--db", monitoring_db]
    )
    assert result.exit_code == 0, result.output
    assert _sessions(monitoring_db) == []
    assert browser.get("/api/me").status_code == 401


@pytest.mark.parametrize(
    ("what", "sql"),
    [
        ("lifetime over", "UPDATE web_sessions SET expires_at = now() - interval '1 s'"),
        ("idle 2 h", "UPDATE web_sessions SET last_seen_at = now() - interval '2 h 1 s'"),
        ("token expired", "UPDATE api_tokens SET expires_at = now() - interval '1 s'"),
    ],
)
def test_a_session_ends_when_it_expires_idles_or_its_token_expires(
    browser: TestClient, tokens: dict[str, str], monitoring_db: str, what: str, sql: str
) -> None:
    _sign_in(browser, tokens["ent-a"])
    assert browser.get("/api/me").status_code == 200
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        conn.execute(sql)
    assert browser.get("/api/me").status_code == 401, what


def test_use_keeps_a_session_from_idling_out(
    browser: TestClient, tokens: dict[str, str], monitoring_db: str
) -> None:
    _sign_in(browser, tokens["ent-a"])
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        conn.execute("UPDATE web_sessions SET last_seen_at = now() - interval '1 h 59 min'")
    assert browser.get("/api/me").status_code == 200
    (stored,) = _sessions(monitoring_db)
    assert datetime.now(UTC) - stored["last_seen_at"] < timedelta(minutes=1)


def test_token_expiry_is_set_at_creation_and_caps_its_sessions(
    browser: TestClient, monitoring_db: str
) -> None:
    runner = CliRunner()
    result = runner.invoke(
        token_app, ["create", "--role", "bureau", "--expires-in", "1h", "--db", monitoring_db]
    )
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip().splitlines()[0]
    assert "expires" in result.stderr
    _sign_in(browser, secret)
    (stored,) = _sessions(monitoring_db)
    assert timedelta(minutes=59) < stored["expires_at"] - datetime.now(UTC) <= timedelta(hours=1)
    listed = runner.invoke(token_app, ["list", "--db", monitoring_db]).stdout
    assert "live until" in listed
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 s'")
    assert "expired" in runner.invoke(token_app, ["list", "--db", monitoring_db]).stdout
    assert browser.get("/api/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    bad = runner.invoke(token_app, ["create", "--role", "bureau", "--expires-in", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.output


def test_durations_read_as_written() -> None:
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("1d12h") == timedelta(hours=36)
    assert parse_duration("30m") == timedelta(minutes=30)


def test_cookie_state_changes_need_the_apps_origin(
    browser: TestClient, tokens: dict[str, str]
) -> None:
    _sign_in(browser, tokens["ent-a"])
    for headers in ({}, {"Origin": "https://evil.example"}, {"Referer": "https://evil.example/x"}):
        response = browser.put(GRANT, headers=headers)
        assert response.status_code == 403, headers
        body = response.json()
        assert set(body) == {"code", "message", "hint"} and body["code"] == "bad_origin"
        assert "Bearer" in body["hint"] and "allowed_origins" in body["hint"]
    assert (
        "'https://evil.example'"
        in browser.put(GRANT, headers={"Origin": "https://evil.example"}).json()["message"]
    )
    assert browser.put(GRANT, headers={"Origin": OWN}).status_code == 200
    assert browser.delete(GRANT, headers={"Referer": OWN + "/enterprises/ent-a"}).status_code == 200
    assert browser.put(GRANT, headers={"Origin": "https://portal.example.cn"}).status_code == 200
    # Reading needs no Origin; sign-out with the cookie does.
    assert browser.get("/api/enterprises/ent-a").status_code == 200
    assert browser.delete("/api/auth/session").json()["code"] == "bad_origin"


def test_bearer_clients_need_no_origin_and_foreign_sign_in_is_refused(
    browser: TestClient, tokens: dict[str, str]
) -> None:
    bearer = {"Authorization": f"Bearer {tokens['ent-a']}"}
    assert browser.put(GRANT, headers=bearer).status_code == 200
    assert (
        browser.delete(GRANT, headers={**bearer, "Origin": "https://evil.example"}).status_code
        == 200
    )
    refused = browser.post(
        "/api/auth/session",
        json={"token": tokens["ent-a"]},
        headers={"Origin": "https://evil.example"},
    )
    assert refused.status_code == 403 and refused.json()["code"] == "bad_origin"
    assert "shulian_session" not in browser.cookies


def test_pages_and_data_are_not_cached(browser: TestClient, tokens: dict[str, str]) -> None:
    _sign_in(browser, tokens["ent-a"])
    assert browser.get("/enterprises/ent-a").headers["cache-control"] == "no-store"
    assert browser.get("/api/enterprises/ent-a").headers["cache-control"] == "no-store"
    assert "no-store" not in browser.get("/static/app.js").headers.get("cache-control", "")


@pytest.mark.parametrize(
    ("setting", "forwarded", "secure"),
    [("auto", None, False), ("auto", "https", True), (True, None, True), (False, "https", False)],
)
def test_secure_cookie_follows_the_setting_and_https_behind_a_proxy(
    serve: Callable[..., ServedApp],
    tokens: dict[str, str],
    setting: Any,
    forwarded: str | None,
    secure: bool,
) -> None:
    served = serve(cookie_secure=setting)
    headers = {"X-Forwarded-Proto": forwarded} if forwarded else {}
    response = httpx.post(
        served.url + "/api/auth/session", json={"token": tokens["bureau"]}, headers=headers
    )
    assert response.status_code == 200
    flags = _cookie_flags(response)
    assert ("secure" in flags) is secure, flags


@pytest.mark.parametrize("hosted", [False, True], ids=["own-file", "ingest-file-section"])
def test_cookie_secure_from_the_settings_file_reaches_the_app(
    monitoring_db: str,
    tokens: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hosted: bool,
) -> None:
    """From the monitoring's own file, and from the ``monitoring:`` section of the ingest's file
    when the ingest hosts it (``--with-monitoring``), whose database URL it then shares."""
    for name in ("SHULIAN_MONITORING_COOKIE_SECURE", "SHULIAN_MONITORING_DB__URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    file = tmp_path / "settings.yaml"
    if hosted:
        from ingest.settings import load_settings as load_ingest
        from shulian.hosting import monitoring_settings

        file.write_text(f"db:\n  url: {monitoring_db}\nmonitoring:\n  cookie_secure: true\n")
        settings = monitoring_settings(load_ingest(file), file)
    else:
        file.write_text(f"db:\n  url: {monitoring_db}\ncookie_secure: true\n")
        settings = load_settings(file)
    with TestClient(create_app(settings)) as client:
        response = _sign_in(client, tokens["bureau"])
    assert "secure" in _cookie_flags(response)

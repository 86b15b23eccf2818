"""The monitoring served in a process of its own as its database roles (issue 15's must-show).

``shulian monitoring roles`` creates the monitoring's role (``db.url``) and the read-only role
(``db.read_url``). The app runs under uvicorn in a subprocess with those two URLs; the bureau, an
enterprise and a provider sign in and fetch every page and API GET route the app has (enumerated
from the app, so a new route cannot be missed), each answering as the access matrix
(test_monitoring_access.py) says. Neither role can insert, update or delete the ingest's tables;
the pages' reads really go through the read-only URL.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from monitoring_data import (
    add_interval,
    device_key,
    issue_tokens,
    prepare_schema,
    seed_registry,
    signal_id,
)
from psycopg.conninfo import make_conninfo
from support import wait_until
from test_monitoring_access import CITY, DEVICE, MATRIX, PAGES, PROVIDER_SP1

from monitoring.api.app import create_app
from monitoring.db.roles import INGEST_WRITES, RoleNames, apply_roles, monitoring_tables
from monitoring.settings import MonitoringSettings
from shulian.devservices import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CALLERS = ("bureau", "ent-a", "provider")
EVERYONE = {caller: 200 for caller in ("admin", *CALLERS)}
NOT_FOUND = {caller: 404 for caller in ("admin", *CALLERS)}

# Routes the access matrix of test_monitoring_access.py does not list, with their answers.
EXTRA: list[tuple[str, dict[str, int]]] = [
    ("/api/health", EVERYONE),
    ("/login", EVERYONE),
    ("/docs", EVERYONE),
    ("/docs/oauth2-redirect", EVERYONE),
    ("/redoc", EVERYONE),
    ("/openapi.json", EVERYONE),
    ("/api/config/providers/sp-1/files", {**PROVIDER_SP1, "bureau": 404, "ent-a": 404}),
    ("/api/config/providers/sp-1/files/lathe.yaml/versions/1", NOT_FOUND),  # none uploaded
    (
        "/api/config/enterprises/ent-a/gateways/gw-ent-a",
        {"bureau": 404, "ent-a": 200, "provider": 200},
    ),
    ("/api/config/audit", EVERYONE),
    # A stream that is refused answers at once; an allowed one never ends (the live tests).
    ("/api/live?scope=city", {**CITY, "bureau": None}),
]
SKIPPED = {
    "/static": "a mount of files, not a route (no database)",
}


@dataclass
class Served:
    url: str
    db: str
    names: RoleNames
    tokens: dict[str, str]


def _role_url(url: str, role: str) -> str:
    return make_conninfo(url, user=role)


def _get_routes() -> list[str]:
    """Every GET route of the app, as path templates (``/api/enterprises/{enterprise_id}``)."""
    app = create_app(MonitoringSettings(db={"url": "postgresql://unused"}))
    paths: set[str] = set()
    for route in app.routes:
        # FastAPI 0.16x keeps included routers whole; older ones flatten them to routes.
        contexts = getattr(route, "effective_route_contexts", None)
        for each in contexts() if callable(contexts) else [route]:
            methods = getattr(each, "methods", None)
            if methods is None:
                paths.add(str(getattr(each, "path", "")))  # a mount
            elif "GET" in methods:
                paths.add(str(each.path))
    return sorted(paths)


def _covered(template: str, paths: list[str]) -> bool:
    pattern = re.compile("^" + re.sub(r"\\{[a-z_]+\\}", "[^/]+", re.escape(template)) + "$")
    return any(pattern.match(path.split("?")[0]) for path in paths)


def _fetches() -> list[tuple[str, dict[str, int | None]]]:
    api = [(path, dict(table)) for method, path, table in MATRIX if method == "GET"]
    pages = [(path, dict(table)) for path, table in PAGES]
    return [*api, *pages, *((p, dict(t)) for p, t in EXTRA)]


def test_every_get_route_of_the_app_is_fetched_or_named_as_skipped():
    """Adding a route without adding it here (or to the access matrix) fails this test."""
    fetched = [path for path, _ in _fetches()]
    missing = [
        route for route in _get_routes() if route not in SKIPPED and not _covered(route, fetched)
    ]
    assert missing == []
    assert len(_get_routes()) > 40


def _seed_data(url: str) -> None:
    """A little history, so device pages read real telemetry (TimescaleDB: chunks of it)."""
    now = datetime.now(UTC).replace(microsecond=0)
    key = device_key(url, "ent-a", "lathe-1")
    with psycopg.connect(url, autocommit=True) as conn:
        add_interval(conn, key, "running", now - timedelta(hours=2), None)
        speed = signal_id(conn, "spindle_speed")
        for minutes in range(0, 90, 5):
            conn.execute(
                "INSERT INTO telemetry (ts, value, device_key, signal_id) VALUES (%s, %s, %s, %s)",
                (now - timedelta(minutes=minutes), 1200.0 + minutes, key, speed),
            )


@pytest.fixture()
def split_db(pg_url: str, storage_path: str) -> Iterator[tuple[str, RoleNames, dict[str, str]]]:
    prepare_schema(pg_url, storage_path)
    seed_registry(pg_url)
    _seed_data(pg_url)
    tokens = issue_tokens(pg_url)
    suffix = uuid.uuid4().hex[:8]  # roles belong to the whole server, which other tests share
    names = RoleNames(f"shulian_mon_{suffix}", f"shulian_monread_{suffix}")
    apply_roles(pg_url, names)
    yield pg_url, names, tokens
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
            ([names.monitoring, names.read_only],),
        )
        for role in (names.monitoring, names.read_only):
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


@pytest.fixture()
def serve_split(
    split_db: tuple[str, RoleNames, dict[str, str]], tmp_path: Path
) -> Iterator[Callable[..., Served]]:
    """Start the app as a subprocess over the two roles' URLs (``read=False``: no read URL)."""
    url, names, tokens = split_db
    started: list[subprocess.Popen[bytes]] = []

    def start(*, read: bool = True) -> Served:
        port = free_port()
        env = {
            **os.environ,
            "SHULIAN_MONITORING_DB__URL": _role_url(url, names.monitoring),
            "SHULIAN_MONITORING_HTTP__PORT": str(port),
        }
        if read:
            env["SHULIAN_MONITORING_DB__READ_URL"] = _role_url(url, names.read_only)
        log = (tmp_path / f"app-{port}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "shulian", "monitoring", "run", "--host", "127.0.0.1",
             "--log-level", "WARNING"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append(process)
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert process.poll() is None, (tmp_path / f"app-{port}.log").read_text()
            try:
                return httpx.get(f"{base}/api/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, 30, what="the monitoring app to answer")
        return Served(base, url, names, tokens)

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def _sign_in(served: Served, caller: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, follow_redirects=False, timeout=30) as client:
        signed = client.post("/api/auth/session", json={"token": served.tokens[caller]})
        assert signed.status_code == 200, signed.text
        assert "shulian_session" in client.cookies
        yield client


def _fetch_everything(served: Served) -> dict[tuple[str, str], int]:
    """Status of every fetch for each caller, signed in with a session cookie as a browser is."""
    seen: dict[tuple[str, str], int] = {}
    for caller in CALLERS:
        with _sign_in(served, caller) as client:
            for path, table in _fetches():
                if table[caller] is None:
                    continue  # an allowed live stream: it never ends
                seen[(caller, path)] = client.get(path).status_code
    return seen


def _expected() -> dict[tuple[str, str], int]:
    return {
        (caller, path): status
        for caller in CALLERS
        for path, table in _fetches()
        if (status := table[caller]) is not None
    }


def _users_of(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT DISTINCT usename FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"  # not TimescaleDB's job scheduler
        ).fetchall()
    return {r[0] for r in rows}


def test_monitoring_as_its_roles_serves_every_route_as_the_access_matrix_says(
    serve_split: Callable[..., Served],
):
    served = serve_split()
    assert len(_expected()) > 150
    assert _fetch_everything(served) == _expected()
    # The read-only role reads raw telemetry through the hypertable or partitioned table and its
    # real-time aggregate (TimescaleDB: chunks and a continuous aggregate; no grants of their own).
    with _sign_in(served, "ent-a") as client:
        series = client.get(DEVICE + "/series?signal=spindle_speed&hours=2")
        assert series.status_code == 200 and len(series.json()["points"]) >= 15
    # Both pools connected, as the two roles and nobody else.
    assert _users_of(served.db) == {served.names.monitoring, served.names.read_only}
    # The refresh jobs ran on the write pool: the monitoring's role wrote today's KPI rows.
    wait_until(
        lambda: _count(served.db, "kpi_daily_state") > 0, 30, what="the KPI refresh to write"
    )


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_the_read_url_carries_the_page_reads(serve_split: Callable[..., Served]):
    """With the monitoring's role left only what signing in needs, every page and API GET still
    answers as the matrix says: their data comes through the read-only URL. Taking one table from
    the read-only role then breaks the page that reads it, so the check can fail."""
    served = serve_split()
    url, names = served.db, served.names
    sign_in_reads = {"api_tokens", "web_sessions", "data_grants", "enterprises"}
    with psycopg.connect(url, autocommit=True) as conn:
        for (relation,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')"
        ).fetchall():
            if relation not in sign_in_reads:
                conn.execute(f'REVOKE SELECT ON "{relation}" FROM "{names.monitoring}"')
    assert _fetch_everything(served) == _expected()

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'REVOKE SELECT ON kpi_daily_state FROM "{names.read_only}"')
    with _sign_in(served, "bureau") as client:
        assert client.get("/api/overview").status_code == 500


def test_without_a_read_url_the_monitoring_role_serves_alone(serve_split: Callable[..., Served]):
    served = serve_split(read=False)
    with _sign_in(served, "ent-a") as client:
        assert client.get("/api/enterprises/ent-a").status_code == 200
        assert client.get("/enterprises/ent-a").status_code == 200
    assert _users_of(served.db) == {served.names.monitoring}


def _write_statements(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    row = conn.execute(
        "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attnum > 0 AND NOT attisdropped AND attidentity <> 'a' AND attgenerated = '' "
        "ORDER BY attnum LIMIT 1",
        (table,),
    ).fetchone()
    assert row is not None
    column = row[0]
    return {
        "INSERT": f"INSERT INTO {table} DEFAULT VALUES",
        "UPDATE": f"UPDATE {table} SET {column} = {column} WHERE false",
        "DELETE": f"DELETE FROM {table} WHERE false",
    }


def _ingest_tables(url: str) -> list[str]:
    """Every table but the monitoring's own: the ingest's, and the migration runner's."""
    own = set(monitoring_tables())
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "ORDER BY 1"  # with the runner's schema_migrations and storage_info
        ).fetchall()
    return [r[0] for r in rows if r[0] not in own]


def _refused(conn: psycopg.Connection[Any], statement: str) -> str:
    with pytest.raises(psycopg.Error) as failed, conn.transaction():
        conn.execute(statement)
    return str(failed.value)


def test_neither_role_can_write_telemetry_or_the_other_ingest_tables(
    split_db: tuple[str, RoleNames, dict[str, str]], storage_path: str
):
    url, names, _ = split_db
    tables = _ingest_tables(url)
    assert {"telemetry", "counter_increments", "current_values", "batch_ledger"} <= set(tables)
    if storage_path == "timescaledb":
        with psycopg.connect(url) as conn:
            chunk = conn.execute("SELECT show_chunks('telemetry')::text LIMIT 1").fetchone()
        assert chunk is not None
        tables.append(chunk[0])  # a chunk written directly, bypassing its hypertable
    refused: list[str] = []
    for role in (names.monitoring, names.read_only):
        with psycopg.connect(_role_url(url, role), autocommit=True) as conn:
            if role == names.read_only:
                # First line of defence: every transaction is read-only (as on a replica)...
                assert "read-only transaction" in _refused(conn, "DELETE FROM telemetry")
                # ...and past it (a session may change its own default) the grants hold.
                conn.execute("SET default_transaction_read_only = off")
            for table in tables:
                for verb, statement in _write_statements(conn, table).items():
                    allowed = role == names.monitoring and verb in INGEST_WRITES.get(table, ())
                    if allowed:
                        continue
                    message = _refused(conn, statement)
                    assert "permission denied" in message, (role, statement, message)
                    refused.append(f"{role} {verb} {table}")
    assert f"{names.monitoring} INSERT telemetry" in refused
    assert f"{names.read_only} DELETE telemetry" in refused


def test_the_monitoring_role_writes_what_the_web_writes_in_ingest_tables(
    split_db: tuple[str, RoleNames, dict[str, str]],
):
    """What INGEST_WRITES allows really works for it (and the read-only role cannot)."""
    url, names, _ = split_db
    with psycopg.connect(_role_url(url, names.monitoring), autocommit=True) as conn:
        conn.execute("UPDATE enterprises SET name_en = 'A' WHERE id = 'ent-a'")
        conn.execute("INSERT INTO devices (enterprise_id, device_id) VALUES ('ent-a', 'new-1')")
        conn.execute("DELETE FROM kpi_late_data WHERE false")
        conn.execute(
            "INSERT INTO api_tokens (token_hash, hint, role) VALUES ('\\x00', 'x', 'bureau')"
        )
    with psycopg.connect(_role_url(url, names.read_only), autocommit=True) as conn:
        assert "read-only transaction" in _refused(
            conn, "UPDATE enterprises SET name_en = 'B' WHERE id = 'ent-a'"
        )


def test_the_app_refuses_to_start_when_db_url_cannot_write(
    split_db: tuple[str, RoleNames, dict[str, str]], tmp_path: Path
):
    """db.url at the read-only role (as at a standby): the refresh jobs and sign-in could never
    write, so the app stops at start-up naming db.read_url instead of failing request by request."""
    url, names, _ = split_db
    env = {
        **os.environ,
        "SHULIAN_MONITORING_DB__URL": _role_url(url, names.read_only),
        "SHULIAN_MONITORING_HTTP__PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", "shulian", "monitoring", "run", "--host", "127.0.0.1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "db.url reaches a read-only login" in done.stderr + done.stdout
    assert "db.read_url" in done.stderr + done.stdout


def test_roles_cli_prints_the_sql_and_refuses_an_unmigrated_database(pg_url: str):
    from typer.testing import CliRunner

    from monitoring.db.cli import app as db_app

    runner = CliRunner()
    printed = runner.invoke(db_app, ["roles", "--monitoring-role", "m_one", "--read-role", "r_one"])
    assert printed.exit_code == 0, printed.output
    assert 'CREATE ROLE "m_one" LOGIN' in printed.output
    assert 'ALTER ROLE "r_one" SET default_transaction_read_only = on' in printed.output
    assert 'GRANT INSERT, UPDATE, DELETE ON "api_tokens"' in printed.output
    assert "telemetry" not in printed.output  # no write grant names it
    refused = runner.invoke(db_app, ["roles", "--apply", pg_url])
    assert refused.exit_code == 1
    assert "Run `shulian ingest migrate --db URL` and `shulian monitoring migrate" in refused.output
    bad = runner.invoke(db_app, ["roles", "--read-role", "Robert'); DROP"])
    assert bad.exit_code == 2 and "is not a plain SQL name" in bad.output

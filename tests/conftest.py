"""Shared fixtures: markers by folder, free ports, waiting, private brokers and fresh databases.

Tests never use the machine's shared Mosquitto: each session starts its own with the project's
config. PostgreSQL tests get a fresh database on the server at SHULIAN_TEST_PG_URL (default: the
local server at 127.0.0.1:5432); tests that stop or kill a database start a PrivatePostgres.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_until, wait_until_async

from shulian.devservices import (
    Mosquitto,
    ServiceError,
    create_database,
    drop_database,
    free_port,
    mosquitto_binary,
)

REPO = Path(__file__).resolve().parent.parent
PG_SERVER_URL = os.environ.get(
    "SHULIAN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

_FOLDER_MARKERS = {"integration": "integration", "e2e": "e2e", "browser": "browser"}

__all__ = ["free_port", "wait_until", "wait_until_async"]  # re-exported from support.py


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        marker = _FOLDER_MARKERS.get(parts[0]) if parts else None
        if marker:
            item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture()
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private broker for one test, with the project's config; the test may stop or kill it."""
    if mosquitto_binary() is None:
        pytest.skip("needs a mosquitto binary (apt-get install mosquitto)")
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    import psycopg

    try:
        with psycopg.connect(PG_SERVER_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        pytest.skip(f"needs PostgreSQL at {PG_SERVER_URL} (set SHULIAN_TEST_PG_URL): {exc}")
    return PG_SERVER_URL


@pytest.fixture()
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"shulian_test_{uuid.uuid4().hex[:12]}"
    try:
        url = create_database(pg_server_url, name)
    except ServiceError as exc:  # pragma: no cover - message only
        pytest.skip(str(exc))
    yield url
    drop_database(pg_server_url, name)

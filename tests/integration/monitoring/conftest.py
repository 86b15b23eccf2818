"""Fixtures: a migrated database with the constructed registry, an app client over it, and the
app served by a real uvicorn (for the live stream and cookies as a browser gets them)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The tests that feed data through the real ingest use its fixtures and helpers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ingest"))

import uvicorn
from fastapi.testclient import TestClient
from ingest_fixtures import fake_gateway, start_ingest
from monitoring_data import prepare_schema, seed_registry
from support import wait_until

from ingest.db.migrate import Chain
from monitoring.api.app import create_app
from monitoring.db.migrate import ALL_CHAINS
from monitoring.settings import MonitoringSettings
from shulian.devservices import free_port

__all__ = ["fake_gateway", "start_ingest"]  # the ingest's fixtures, used by name


@pytest.fixture()
def migration_chains() -> tuple[Chain, ...]:
    """An ingest started by these tests migrates the monitoring's chain too (``start_ingest``)."""
    return ALL_CHAINS


@pytest.fixture()
def monitoring_db(pg_url: str) -> str:
    prepare_schema(pg_url)
    seed_registry(pg_url)
    return pg_url


@pytest.fixture()
def client(monitoring_db: str) -> Iterator[TestClient]:
    app = create_app(MonitoringSettings(db={"url": monitoring_db}))
    with TestClient(app) as test_client:
        yield test_client


class ServedApp:
    """The monitoring app behind a real uvicorn on a free port, in a thread of this process."""

    def __init__(self, settings: MonitoringSettings) -> None:
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Like `uvicorn.run` in the service: proxy headers trusted from 127.0.0.1 only.
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> ServedApp:
        self._thread.start()
        wait_until(lambda: self._server.started, 20, what="uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)


@pytest.fixture()
def serve(monitoring_db: str) -> Iterator[Callable[..., ServedApp]]:
    """Start the app over the monitoring database with some ``MonitoringSettings`` changed."""
    started: list[ServedApp] = []

    def start(**monitoring: Any) -> ServedApp:
        settings = MonitoringSettings(db={"url": monitoring_db}, **monitoring)
        served = ServedApp(settings).__enter__()
        started.append(served)
        return served

    yield start
    for served in started:
        served.__exit__(None, None, None)

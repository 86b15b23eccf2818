"""Fixtures: a migrated database with the constructed registry, and an app client over it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from monitoring_data import prepare_schema, seed_registry
from pydantic import SecretStr

from ingest.api.app import create_app
from ingest.api.settings import AppSettings


@pytest.fixture()
def monitoring_db(pg_url: str) -> str:
    prepare_schema(pg_url)
    seed_registry(pg_url)
    return pg_url


@pytest.fixture()
def client(monitoring_db: str) -> Iterator[TestClient]:
    app = create_app(AppSettings(db_url=SecretStr(monitoring_db)))
    with TestClient(app) as test_client:
        yield test_client

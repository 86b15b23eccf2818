"""``uvicorn --factory served_monitoring:app``: the monitoring app in a process of its own, its
database URLs from SHULIAN_TEST_MONITORING_DB_URL and SHULIAN_TEST_MONITORING_READ_URL.

TODO(issue 15): once ``shulian monitoring run`` lands, the tests start that instead."""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import SecretStr

from monitoring.api.app import create_app
from monitoring.settings import AppSettings


def app() -> FastAPI:
    read_url = os.environ.get("SHULIAN_TEST_MONITORING_READ_URL")
    return create_app(
        AppSettings(
            db_url=SecretStr(os.environ["SHULIAN_TEST_MONITORING_DB_URL"]),
            read_url=SecretStr(read_url) if read_url else None,
        )
    )

"""JsonBody (orjson) writes what FastAPI writes for a route returning ``dict[str, Any]``."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from monitoring.api.json_body import JsonBody
from monitoring.auth import Role

_CITY = "Asia/Shanghai"
_BODY = {
    "as_of": datetime(2026, 12, 5, 4, 1, 2, 345678, tzinfo=UTC),
    "window": {"first_day": date(2026, 12, 5), "end": datetime(2026, 12, 5, 4, 0, tzinfo=UTC)},
    "local": datetime(2026, 12, 5, 12, 0, tzinfo=timezone(timedelta(hours=8))),
    "zoned": [datetime(2026, 12, 5, 12, 0, tzinfo=ZoneInfo(name)) for name in ("UTC", _CITY)],
    "summary": {"oee": 0.6123, "output": 1234.5, "registered": 10_000, "good": None},
    "median_whole": Decimal("12"),
    "median_half": Decimal("12.5"),
    "role": Role.ADMIN,
    "enterprises": [{"id": "ent-042", "name": "大连机床", "kpis": {"utilization": 1 / 3}}],
    "by_kind": {"cnc_lathe": 3, "other": 0},
    "flags": (True, False),
    "kinds": {"lathe"},
}


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/fastapi")
    async def fastapi_way() -> dict[str, Any]:
        return _BODY

    @app.get("/ours", response_model=dict[str, Any])
    async def ours() -> JsonBody:
        return JsonBody(_BODY)

    return app


def test_same_json_as_a_fastapi_route() -> None:
    with TestClient(_app()) as client:
        theirs, ours = client.get("/fastapi"), client.get("/ours")
    assert theirs.status_code == ours.status_code == 200
    assert ours.headers["content-type"] == "application/json"
    assert json.loads(ours.content) == json.loads(theirs.content)
    assert ours.json()["median_half"] == "12.5"  # a Decimal stays a string, as before
    assert ours.json()["as_of"] == "2026-12-05T04:01:02.345678Z"


def test_openapi_schema_is_unchanged() -> None:
    paths = _app().openapi()["paths"]
    ours, theirs = (paths[p]["get"]["responses"]["200"] for p in ("/ours", "/fastapi"))
    for schema in (ours, theirs):
        del schema["content"]["application/json"]["schema"]["title"]  # named after the function
    assert ours == theirs


def test_unknown_value_names_its_type() -> None:
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        JsonBody({"a": object()})

"""Before/after evidence on constructed months with known answers, through the app and database.

evidence_data.py describes the months. Runs on both storage paths (the ``pg_url`` fixture).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import psycopg
import pytest
from evidence_data import JUNE, MAY, MEASURED_3_DAYS, NOW, build_history
from fastapi.testclient import TestClient
from monitoring_data import device_key, issue_tokens, set_current

from monitoring.api import views
from monitoring.api.app import create_app
from monitoring.settings import MonitoringSettings

EVIDENCE = "/api/enterprises/ent-a/evidence"
BASELINES = "/api/enterprises/ent-a/baselines"


@pytest.fixture()
def evidence_app(
    monitoring_db: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    build_history(monitoring_db)
    tokens = issue_tokens(monitoring_db)
    monkeypatch.setattr(views, "utc_now", lambda: NOW)
    with TestClient(create_app(MonitoringSettings(db={"url": monitoring_db}))) as client:
        yield client, tokens


def _as(tokens: dict[str, str], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[who]}"}


def _sign_in(client: TestClient, token: str) -> None:
    """Sign in as the browser does: the session cookie stays in the client."""
    client.cookies.clear()
    client.post("/api/auth/session", json={"token": token}).raise_for_status()


def _assert_figures(found: dict[str, Any], expected: dict[str, float]) -> None:
    for name, value in expected.items():
        assert found[name] == pytest.approx(value, abs=1e-4), name


def test_without_an_entry_the_baseline_is_the_first_30_days_from_go_live(
    evidence_app: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = evidence_app
    body = client.get(EVIDENCE, headers=_as(tokens, "ent-a")).json()
    assert body["go_live"] == "2025-04-28"
    assert body["gateways"] == [
        {
            "gateway": "gw-ent-a",
            "first_birth": "2025-04-28T01:00:00+00:00",
            "first_data_day": "2025-04-28",
            "go_live": "2025-04-28",
        }
    ]
    base = body["baseline"]
    assert (base["method"], base["measured_days"], base["id"], base["complete"]) == (
        "measured",
        30,
        None,
        True,
    )
    assert base["period"] == {"label": "baseline", "first_day": "2025-04-28",
                              "last_day": "2025-05-27"}  # fmt: skip
    assert base["days"] == 5  # the three April days and May 10-11
    assert [m["label"] for m in body["months"]] == ["2025-05", "2025-06"]
    assert body["months"][0]["first_day"] == "2025-05-28"
    assert body["months"][0]["days"] == 0
    assert body["through"] == "2025-06-09"


def test_measured_baseline_and_months_have_the_known_figures_and_changes(
    evidence_app: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = evidence_app
    answer = client.post(
        BASELINES, json={"method": "measured", "measured_days": 3}, headers=_as(tokens, "provider")
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["entered_by_role"] == "provider"

    body = client.get(EVIDENCE, headers=_as(tokens, "ent-a")).json()
    base = body["baseline"]
    assert base["period"]["last_day"] == "2025-04-30" and base["days"] == 3
    _assert_figures(base["figures"], MEASURED_3_DAYS)
    months = {m["label"]: m for m in body["months"]}
    assert list(months) == ["2025-05", "2025-06"]
    assert (months["2025-05"]["days"], months["2025-06"]["days"]) == (2, 1)  # 06-06 is empty
    _assert_figures(months["2025-05"]["figures"], MAY)
    _assert_figures(months["2025-06"]["figures"], JUNE)

    # The integration measures (monitoring/integration.py, tested on known answers in
    # test_integration_measures.py) for the same periods and the last 30 days.
    labels = [m["label"] for m in body["measures"]]
    assert labels == ["baseline", "2025-05", "2025-06", "recent"]
    assert body["measures"][-1]["first_day"] == "2025-05-11"
    assert all(m["registered"] == 3 for m in body["measures"])

    change = body["latest"]["change"]
    assert body["latest"]["label"] == "2025-06"
    assert change["utilization"]["relative"] == pytest.approx(1.0)  # 12.5 % -> 25 %
    assert change["utilization"]["improved"] is True
    assert change["output_per_day"]["relative"] == pytest.approx(2.0)  # 100 -> 300 a day
    assert change["reject_rate"]["relative"] == pytest.approx(-0.9)  # 10 % -> 1 %
    assert change["reject_rate"]["improved"] is True
    assert change["kwh_per_part"]["relative"] == pytest.approx(-0.4)
    assert change["fault_h_per_day"]["relative"] == pytest.approx(-1.0)
    assert change["running_rate"]["delta"] == 0 and change["running_rate"]["improved"] is None

    rows = list(csv.DictReader(io.StringIO(
        client.get(EVIDENCE + "?format=csv", headers=_as(tokens, "ent-a")).content.decode("utf-8-sig")
    )))  # fmt: skip
    assert [r["period"] for r in rows] == ["baseline", "2025-05", "2025-06"]
    assert float(rows[0]["utilization"]) == pytest.approx(0.125)
    assert float(rows[2]["output_per_day"]) == 300


def test_an_entered_baseline_is_compared_from_go_live_and_audited(
    evidence_app: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = evidence_app
    client.post(BASELINES, json={"method": "measured", "measured_days": 3},
                headers=_as(tokens, "admin")).raise_for_status()  # fmt: skip
    entry = {
        "method": "entered",
        "source": "改造前诊断报告 DL-2025-017（大连数联科技）",
        "diagnosed_on": "2025-03-15",
        "utilization": 0.2,
        "output_per_day": 150,
    }
    answer = client.post(BASELINES, json=entry, headers=_as(tokens, "provider"))
    assert answer.status_code == 201, answer.text

    body = client.get(EVIDENCE, headers=_as(tokens, "bureau")).json()
    base = body["baseline"]
    assert (base["method"], base["source"], base["diagnosed_on"]) == (
        "entered",
        entry["source"],
        "2025-03-15",
    )
    assert base["figures"]["utilization"] == 0.2 and base["figures"]["oee"] is None
    assert [m["label"] for m in body["months"]] == ["2025-04", "2025-05", "2025-06"]
    _assert_figures(body["months"][0]["figures"], MEASURED_3_DAYS)  # April = the 3 first days
    change = body["latest"]["change"]
    assert change["utilization"]["relative"] == pytest.approx(0.25)  # 20 % -> 25 %
    assert change["output_per_day"]["relative"] == pytest.approx(1.0)  # 150 -> 300
    assert change["oee"]["relative"] is None  # not in the diagnosis
    assert "devices" not in body  # the bureau has no grant from ent-a

    history = client.get(BASELINES, headers=_as(tokens, "ent-a")).json()["baselines"]
    assert [(h["method"], h["entered_by_role"]) for h in history] == [
        ("entered", "provider"),
        ("measured", "admin"),
    ]


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"method": "entered", "utilization": 0.3}, "source, diagnosed_on"),
        ({"method": "entered", "source": "x", "diagnosed_on": "2025-03-01"}, "at least one figure"),
        ({"method": "measured", "utilization": 0.3}, "takes no figures (got utilization)"),
        ({"method": "entered", "source": "x", "diagnosed_on": "2025-03-01", "oee": 1.5},
         "oee"),
        ({"method": "measured", "measured_days": 0}, "measured_days"),
    ],
)  # fmt: skip
def test_a_bad_baseline_entry_is_refused_naming_the_field(
    evidence_app: tuple[TestClient, dict[str, str]], entry: dict[str, Any], words: str
) -> None:
    client, tokens = evidence_app
    answer = client.post(BASELINES, json=entry, headers=_as(tokens, "admin"))
    assert answer.status_code == 422
    assert words in answer.json()["message"]
    assert client.get(BASELINES, headers=_as(tokens, "admin")).json()["baselines"] == []


def test_the_bureau_list_sorts_by_change_and_exports_csv(
    evidence_app: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = evidence_app
    client.post(BASELINES, json={"method": "measured", "measured_days": 3},
                headers=_as(tokens, "provider")).raise_for_status()  # fmt: skip
    body = client.get("/api/evidence?sort=utilization&order=desc", headers=_as(tokens, "bureau"))
    rows = body.json()["rows"]
    assert [r["enterprise"] for r in rows] == ["ent-a", "ent-b", "ent-c"]  # no data: last
    assert rows[0]["change"]["utilization"]["relative"] == pytest.approx(1.0)
    assert rows[1]["go_live"] is None and rows[1]["latest_month"] is None
    assert rows[0]["measures"]["registered"] == 3

    answer = client.get("/api/evidence?format=csv&sort=name", headers=_as(tokens, "bureau"))
    table = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert [r["name"] for r in table] == sorted(r["name"] for r in table)
    table = sorted(table, key=lambda r: r["enterprise"])
    assert table[0]["name"] == "大连甲轴承有限公司"
    assert float(table[0]["utilization_before"]) == pytest.approx(0.125)
    assert float(table[0]["utilization_after"]) == pytest.approx(0.25)
    assert float(table[0]["output_per_day_change"]) == pytest.approx(2.0)

    bad = client.get("/api/evidence?sort=colour", headers=_as(tokens, "bureau"))
    assert bad.status_code == 422 and "sort: 'colour'" in bad.json()["message"]
    # A provider's list holds the enterprises it serves; an enterprise's only itself.
    for who, expected in (("provider", ["ent-a"]), ("ent-b", ["ent-b"])):
        listed = client.get("/api/evidence", headers=_as(tokens, who)).json()["rows"]
        assert [r["enterprise"] for r in listed] == expected


@pytest.mark.parametrize(
    ("who", "status"),
    [("admin", 201), ("provider", 201), ("bureau", 403), ("ent-a", 403), ("ent-b", 404)],
)
def test_only_admin_and_the_enterprises_provider_enter_its_baseline(
    evidence_app: tuple[TestClient, dict[str, str]], who: str, status: int
) -> None:
    client, tokens = evidence_app
    answer = client.post(BASELINES, json={"method": "measured"}, headers=_as(tokens, who))
    assert answer.status_code == status, answer.text
    stored = client.get(BASELINES, headers=_as(tokens, "admin")).json()["baselines"]
    assert len(stored) == (1 if status == 201 else 0)
    if status == 201:
        assert stored[0]["measured_days"] == 30  # the documented default


def test_devices_behind_the_evidence_follow_the_bureaus_grant(
    evidence_app: tuple[TestClient, dict[str, str]], monitoring_db: str
) -> None:
    client, tokens = evidence_app
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        lathe = device_key(monitoring_db, "ent-a", "lathe-1")
        for signal, value in (("part_count", 600.0), ("spindle_speed", 1450.0)):
            set_current(conn, lathe, signal, NOW, value)
    assert "devices" not in client.get(EVIDENCE, headers=_as(tokens, "bureau")).json()
    owner = client.get(EVIDENCE, headers=_as(tokens, "ent-a")).json()
    devices = {d["id"]: d for d in owner["devices"]}
    assert devices["lathe-1"]["first_data_day"] == "2025-04-28"
    assert devices["lathe-1"]["kpi_signals"] == ["part_count"]  # not the spindle speed
    assert devices["lathe-1"]["last_seen"] == NOW.astimezone(UTC).isoformat()
    assert devices["grinder-2"]["first_data_day"] is None
    _sign_in(client, tokens["bureau"])
    page = client.get("/enterprises/ent-a/evidence").text
    client.cookies.clear()
    assert 'id="devices-hidden"' in page and "尚未授权主管部门查看其设备数据" in page
    client.put("/api/enterprises/ent-a/grants/bureau", headers=_as(tokens, "ent-a"))
    granted = client.get(EVIDENCE, headers=_as(tokens, "bureau")).json()
    assert [d["id"] for d in granted["devices"]] == ["grinder-1", "grinder-2", "lathe-1"]

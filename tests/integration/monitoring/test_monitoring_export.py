"""The upward export: the versioned document on a constructed day with known answers, and its
push to a real HTTPS receiver (export_receiver.py) that fails twice, then accepts.

The day: 2025-06-10 in Asia/Shanghai, complete.
- lathe-1 (ent-a, rated cycle 30 s): running 08-16, idle 16-18; 900 parts, 100 rejects, 90 kWh.
  OEE = min(800 good x 30 s, 36,000 s planned) / 36,000 s = 2/3.
- grinder-1 (ent-a): running 08-12, no counters. grinder-2 (ent-a): never reported.
- ent-a's baseline: the 7 days before, 1,200 parts and 100 kWh each: output 75 % -> blue.
- ent-b, ent-c: nothing reported that day.
- Data integration: lathe-1 declares machine_state may stay silent 3,600 s and sends it on every
  hour except 10:00 and 11:00 (22 samples): its longest gap is 09:00-12:00 (10,800 s); of it
  3,605 s are covered (silence + 5 s tolerance), so 7,195 of 86,400 s are missing. The grinders
  send no telemetry: ent-a's networked share is 1/3.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import psycopg
import pytest
from export_receiver import TOKEN, Receiver, start_receiver
from fastapi.testclient import TestClient
from monitoring_data import add_increment, add_interval, device_key, issue_tokens, signal_id
from pydantic import SecretStr
from support import wait_until

from monitoring.api import export_push
from monitoring.api.export_doc import build_daily_export
from monitoring.settings import ExportPushSettings, KpiSettings, MonitoringSettings

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2025, 6, 10)
SCHEMA = json.loads(
    (Path(__file__).resolve().parents[3] / "docs" / "export.schema.json").read_text("utf-8")
)
HUAWEI = "914403001922038216"


def local(hour: int, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=TZ)


def build_day(url: str) -> None:
    lathe, grinder = device_key(url, "ent-a", "lathe-1"), device_key(url, "ent-a", "grinder-1")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE enterprises SET credit_code = %s WHERE id = 'ent-a'", (HUAWEI,))
        add_interval(conn, lathe, "running", local(8), local(16))
        add_interval(conn, lathe, "idle", local(16), local(18))
        add_interval(conn, grinder, "running", local(8), local(12))
        add_increment(conn, lathe, "part_count", local(9), 900)
        add_increment(conn, lathe, "reject_count", local(9), 100)
        add_increment(conn, lathe, "active_energy", local(9), 90)
        conn.execute(
            """UPDATE devices SET max_silence_s = '{"machine_state": 3600}' WHERE key = %s""",
            (lathe,),
        )
        state = signal_id(conn, "machine_state")
        for hour in [h for h in range(24) if h not in (10, 11)]:
            conn.execute(
                """INSERT INTO telemetry (ts, device_key, signal_id, quality, value_text)
                   VALUES (%s, %s, %s, 0, 'running')""",
                (local(hour), lathe, state),
            )
        for back in range(1, 8):
            conn.execute(
                """INSERT INTO kpi_enterprise_daily (day, enterprise_id, devices, reported,
                       running_s, calendar_s, parts, good, reject, energy_kwh)
                   VALUES (%s, 'ent-a', 3, 2, 40000, 172800, 1200, 1100, 100, 100)""",
                (DAY - timedelta(days=back),),
            )


async def _document(url: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        from monitoring import integration, kpis

        later = local(1, DAY + timedelta(days=2))
        await kpis.refresh_day(conn, KpiSettings(), DAY, later)
        await integration.refresh_day(conn, KpiSettings(), DAY, later)
        doc = await build_daily_export(conn, KpiSettings(), DAY, local(10, DAY + timedelta(2)))
        return dict(json.loads(doc.to_bytes()))


def test_document_carries_known_figures_and_follows_the_published_schema(
    monitoring_db: str,
) -> None:
    build_day(monitoring_db)
    document = asyncio.run(_document(monitoring_db))
    jsonschema.validate(document, SCHEMA)
    assert (document["document"], document["schema_version"]) == ("shulian.daily_export", "1.0")
    assert document["day"] == "2025-06-10"
    by_id = {e["enterprise_id"]: e for e in document["enterprises"]}
    assert sorted(by_id) == ["ent-a", "ent-b", "ent-c"]
    a = by_id["ent-a"]
    assert a["credit_code"] == HUAWEI
    assert (a["district_code"], a["segment_code"]) == ("210211", "345")
    assert (a["devices_registered"], a["devices_reported"]) == (3, 2)
    assert a["online_rate"] == 0.6667 and a["running_rate"] == 1.0
    assert a["utilization"] == 0.25  # 12 h running of 2 x 24 h
    assert a["running_h"] == 12.0
    assert (a["output"], a["good"], a["reject"]) == (900, 800, 100)
    assert (a["energy_kwh"], a["kwh_per_part"]) == (90, 0.1)
    assert a["oee"] == 0.6667
    assert a["warning_colour"] == "blue"
    assert "产量为基线的75%" in a["warning_reason"]
    measures = a["integration"]
    assert measures["networked_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert measures["completeness"] == pytest.approx(1 - 7195 / 86400, abs=1e-4)
    assert (measures["samples"], measures["expected_samples"]) == (22, 24.0)
    assert (measures["longest_gap_s"], measures["longest_gap_signal"]) == (10800, "machine_state")
    assert by_id["ent-b"]["integration"]["networked_share"] == 0.0
    b = by_id["ent-b"]
    assert b["credit_code"] is None
    assert (b["devices_reported"], b["online_rate"], b["running_rate"]) == (0, 0.0, None)
    assert (b["utilization"], b["oee"], b["output"], b["warning_colour"]) == (None, None, 0, "grey")


def test_document_leaves_out_integration_measures_not_refreshed_to_the_days_end(
    monitoring_db: str,
) -> None:
    """Measures of half a day would read as missing data: the block is omitted instead."""
    build_day(monitoring_db)

    async def run() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(monitoring_db, autocommit=True) as conn:
            from monitoring import integration, kpis

            later = local(1, DAY + timedelta(days=2))
            await kpis.refresh_day(conn, KpiSettings(), DAY, later)
            await integration.refresh_day(conn, KpiSettings(), DAY, local(12))
            doc = await build_daily_export(conn, KpiSettings(), DAY, later)
            return dict(json.loads(doc.to_bytes()))

    document = asyncio.run(run())
    jsonschema.validate(document, SCHEMA)
    assert all("integration" not in e for e in document["enterprises"])
    assert document["enterprises"][0]["output"] == 900  # the rest is there


def test_document_endpoint_serves_the_document(client: TestClient, monitoring_db: str) -> None:
    build_day(monitoring_db)
    tokens = issue_tokens(monitoring_db)
    headers = {"Authorization": f"Bearer {tokens['bureau']}"}
    response = client.get("/api/export/document?day=2025-06-10", headers=headers)
    assert response.status_code == 200, response.text
    jsonschema.validate(response.json(), SCHEMA)
    assert client.get("/api/export/schema", headers=headers).json() == SCHEMA
    future = client.get("/api/export/document?day=2999-01-01", headers=headers)
    assert future.status_code == 422 and "not complete" in future.json()["message"]


# --------------------------------------------------------------------------- push


@pytest.fixture()
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    made, server = start_receiver(tmp_path)
    yield made
    server.shutdown()
    server.server_close()


def push_settings(receiver: Receiver, **changes: Any) -> MonitoringSettings:
    export = {
        "enabled": True,
        "url": receiver.url,
        "token": SecretStr(TOKEN),
        "ca_file": receiver.ca_file,
        "attempts": 5,
        "backoff_s": 0.05,
        "backoff_max_s": 0.2,
        **changes,
    }
    return MonitoringSettings(export=ExportPushSettings(**export))


def stored(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        deliveries = conn.execute(
            """SELECT day, status, attempts, schema_version, content_sha256, last_error,
                      accepted_at IS NOT NULL, ack_status, ack_body FROM export_deliveries"""
        ).fetchall()
        attempts = conn.execute(
            "SELECT attempt, http_status, error FROM export_delivery_attempts ORDER BY attempt"
        ).fetchall()
    return deliveries, attempts


def test_push_fails_twice_then_is_accepted_once(monitoring_db: str, receiver: Receiver) -> None:
    build_day(monitoring_db)
    settings = push_settings(receiver)
    delivery = asyncio.run(export_push.push_day(monitoring_db, settings, DAY))
    assert (delivery.status, delivery.attempts) == ("accepted", 3)
    assert [r.answered for r in receiver.requests] == [503, 503, 200]
    assert len(receiver.accepted) == 1
    # Every try sent the same bytes under the same key, and that is what was recorded.
    assert {r.key for r in receiver.requests} == {"shulian-daily-export-2025-06-10"}
    assert {hashlib.sha256(r.body).hexdigest() for r in receiver.requests} == {
        delivery.content_sha256
    }
    assert receiver.requests[0].headers["x-shulian-schema-version"] == "1.0"
    jsonschema.validate(json.loads(receiver.requests[-1].body), SCHEMA)

    deliveries, attempts = stored(monitoring_db)
    assert len(deliveries) == 1
    day, status, count, version, sha, last_error, has_time, ack_status, ack = deliveries[0]
    assert (day, status, count, version, sha) == (
        DAY,
        "accepted",
        3,
        "1.0",
        delivery.content_sha256,
    )
    assert (last_error, has_time, ack_status) == (None, True, 200)
    assert json.loads(ack) == {"receipt": "r-shulian-daily-export-2025-06-10", "duplicate": False}
    assert [(n, s) for n, s, _ in attempts] == [(1, 503), (2, 503), (3, 200)]
    assert "busy, try later" in attempts[0][2] and attempts[2][2] is None

    # Pushing the day again sends nothing: an accepted day is final.
    again = asyncio.run(export_push.push_day(monitoring_db, settings, DAY))
    assert (again.status, again.attempts, len(receiver.requests)) == ("accepted", 3, 3)
    # And the database refuses a second record of the day whatever the code does.
    with psycopg.connect(monitoring_db) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            """INSERT INTO export_deliveries (day, schema_version, idempotency_key, endpoint,
                   body, content_sha256) VALUES (%s, '1.0', 'other-key', 'x', '{}', 'x')""",
            (DAY,),
        )

    # The pull now answers with exactly what was sent.
    with TestClient(_app(monitoring_db)) as client:
        token = issue_tokens(monitoring_db)["bureau"]
        pulled = client.get(
            "/api/export/document?day=2025-06-10", headers={"Authorization": f"Bearer {token}"}
        )
        assert pulled.content == receiver.requests[-1].body
        listed = client.get(
            "/api/export/deliveries", headers={"Authorization": f"Bearer {token}"}
        ).json()["deliveries"]
        assert [(d["day"], d["status"], d["attempts"]) for d in listed] == [
            ("2025-06-10", "accepted", 3)
        ]


def _app(url: str) -> Any:
    from monitoring.api.app import create_app
    from monitoring.settings import MonitoringSettings

    return create_app(MonitoringSettings(db={"url": url}))


def test_push_refuses_an_unverified_receiver_and_a_refusal_is_not_retried(
    monitoring_db: str, receiver: Receiver
) -> None:
    """Without the receiver's CA the TLS check fails (nothing is sent); a wrong token gets 401,
    which resending cannot fix, so the day is left ``refused`` after one try."""
    receiver.fail_first = 0
    untrusted = push_settings(receiver, ca_file=None, attempts=2)
    delivery = asyncio.run(export_push.push_day(monitoring_db, untrusted, DAY))
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert "CERTIFICATE_VERIFY_FAILED" in (delivery.last_error or "")
    assert receiver.requests == []

    missing_ca = push_settings(receiver, ca_file=receiver.folder / "missing.crt")
    with pytest.raises(export_push.ExportPushError, match=r"export\.ca_file: cannot load"):
        asyncio.run(export_push.push_day(monitoring_db, missing_ca, DAY))

    wrong_token = push_settings(receiver, token=SecretStr("nope"))
    delivery = asyncio.run(export_push.push_day(monitoring_db, wrong_token, DAY))
    assert (delivery.status, delivery.attempts) == ("refused", 3)
    assert delivery.last_error is not None and delivery.last_error.startswith("HTTP 401")
    assert receiver.accepted == {}


# --------------------------------------------------------------------------- restarts


def _cli_push(url: str, receiver: Receiver, backoff_s: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SHULIAN_MONITORING_DB__URL": url,
        "SHULIAN_MONITORING_EXPORT__URL": receiver.url,
        "SHULIAN_MONITORING_EXPORT__TOKEN": TOKEN,
        "SHULIAN_MONITORING_EXPORT__CA_FILE": str(receiver.ca_file),
        "SHULIAN_MONITORING_EXPORT__BACKOFF_S": str(backoff_s),
        "SHULIAN_MONITORING_EXPORT__BACKOFF_MAX_S": str(backoff_s),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "shulian", "monitoring", "export", "push", "--day", str(DAY)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_a_push_killed_between_retries_resumes_without_a_second_delivery(
    monitoring_db: str, receiver: Receiver
) -> None:
    build_day(monitoring_db)
    first = _cli_push(monitoring_db, receiver, backoff_s=60)  # waits a minute after try 1
    wait_until(lambda: len(receiver.requests) == 1, 30, what="the first try")
    wait_until(lambda: stored(monitoring_db)[1][0][1] == 503, 10, what="try 1 recorded")
    first.send_signal(signal.SIGKILL)
    first.wait(10)

    second = _cli_push(monitoring_db, receiver, backoff_s=0.05)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err.decode()
    assert "2025-06-10: accepted after 3 attempt(s)" in out.decode()
    assert [r.answered for r in receiver.requests] == [503, 503, 200]
    assert len(receiver.accepted) == 1
    assert len({hashlib.sha256(r.body).hexdigest() for r in receiver.requests}) == 1
    deliveries, attempts = stored(monitoring_db)
    assert [(d[1], d[2]) for d in deliveries] == [("accepted", 3)]
    assert [s for _, s, _ in attempts] == [503, 503, 200]


def test_a_push_killed_after_the_receiver_accepted_is_not_delivered_twice(
    monitoring_db: str, tmp_path: Path
) -> None:
    """The receiver records the delivery, then holds its answer; the sender dies before it
    records the acceptance. The resend carries the same key, so the receiver keeps one."""
    receiver, server = start_receiver(tmp_path, fail_first=0, answer_delay_s=30)
    try:
        build_day(monitoring_db)
        first = _cli_push(monitoring_db, receiver, backoff_s=0.05)
        wait_until(lambda: len(receiver.accepted) == 1, 30, what="the receiver to accept")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        deliveries, attempts = stored(monitoring_db)
        assert [(d[1], d[2]) for d in deliveries] == [("pending", 1)]
        assert attempts[0][2] == "no answer recorded (stopped while sending)"

        receiver.answer_delay_s = 0
        second = _cli_push(monitoring_db, receiver, backoff_s=0.05)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 0, err.decode()
        assert "2025-06-10: accepted after 2 attempt(s)" in out.decode()
        assert len(receiver.accepted) == 1
        assert [r.answered for r in receiver.requests] == [200, 200]
        deliveries, _ = stored(monitoring_db)
        assert [(d[1], d[2]) for d in deliveries] == [("accepted", 2)]
        assert json.loads(deliveries[0][8])["duplicate"] is True
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- the service


def test_the_service_pushes_yesterday_once_after_its_kpi_refresh(
    monitoring_db: str, receiver: Receiver
) -> None:
    """The monitoring app with the push enabled: the due day (yesterday, after ``at``) is
    delivered once, through the same retries."""
    from monitoring.api.app import create_app

    settings = push_settings(receiver, at="00:00", check_s=0.2, backfill_days=1)
    yesterday = datetime.now(TZ).date() - timedelta(days=1)
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO kpi_daily_state (day, through, refreshed_at) VALUES (%s, now(), now())",
            (yesterday - timedelta(days=5),),
        )
    settings.db.url = SecretStr(monitoring_db)
    app = create_app(settings)
    with TestClient(app):
        wait_until(lambda: len(receiver.accepted) == 1, 30, what="the service's push")
        deliveries = wait_until(
            lambda: [d for d in stored(monitoring_db)[0] if d[1] == "accepted"], 10, what="record"
        )
        assert [(d[0], d[2]) for d in deliveries] == [(yesterday, 3)]
        assert [r.answered for r in receiver.requests] == [503, 503, 200]


def test_cli_prints_a_document_and_lists_deliveries(monitoring_db: str, receiver: Receiver) -> None:
    from typer.testing import CliRunner

    from monitoring.cli import app

    build_day(monitoring_db)
    runner = CliRunner()
    shown = runner.invoke(app, ["export", "document", "--day", str(DAY), "--db", monitoring_db])
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.output)
    jsonschema.validate(document, SCHEMA)
    assert {e["enterprise_id"]: e["output"] for e in document["enterprises"]}["ent-a"] == 900
    assert "integration" in document["enterprises"][0]  # refreshed by the command

    asyncio.run(export_push.push_day(monitoring_db, push_settings(receiver), DAY))
    listed = runner.invoke(app, ["export", "deliveries", "--db", monitoring_db])
    assert listed.exit_code == 0, listed.output
    (line,) = listed.output.splitlines()
    record = json.loads(line)
    assert (record["day"], record["status"], record["attempts"]) == (str(DAY), "accepted", 3)
    bad_day = runner.invoke(app, ["export", "push", "--day", "2025-13-01", "--db", monitoring_db])
    assert bad_day.exit_code == 2 and "is not a day" in bad_day.output

"""The ingest on the demo's amqtt broker (MQTT 3.1.1); its own HTTP endpoint (/metrics, health)
when it runs alone; and hosting the monitoring in its process (``--with-monitoring``)."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from ingest_support import FakeGateway, ingest_settings, machine_samples, now_ms, scalar, wait_until

from ingest.service import IngestService
from shulian.devservices import free_port, wait_listening

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture()
def amqtt_url() -> str:
    port = free_port()
    code = f"from shulian.devservices import serve_amqtt; serve_amqtt({port})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        wait_listening("127.0.0.1", port, 30, "amqtt")
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def test_mqtt_3_1_1_without_shared_subscriptions_on_amqtt(amqtt_url, pg_url):
    settings = ingest_settings(pg_url, amqtt_url, mqtt={"protocol": "3.1.1", "share_group": ""})
    service = IngestService(settings)
    service.start(wait_for_db_s=10)
    gw = FakeGateway(amqtt_url, "ent-am", "gw-am", ["d1", "d2"], protocol=paho.MQTTv311)
    try:
        assert service.consumer is not None and service.consumer.subscribed.wait(10)
        gw.connect()
        gw.birth()
        batches = [gw.batch(machine_samples(gw.devices, now_ms() - 1000 + n, n)) for n in range(5)]
        for batch in batches:
            gw.send(batch)
        expected = sum(len(b.samples) for b in batches)
        wait_until(
            lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") == expected,
            timeout_s=20,
            what="the batches through amqtt",
        )
        assert scalar(pg_url, "SELECT count(*) FROM batch_ledger") == 5
    finally:
        gw.close()
        service.stop()


def _get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    """GET without following redirects: /metrics must answer itself, not redirect."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _ok(port: int, path: str, token: str | None = None) -> str:
    status, body = _get(port, path, token)
    assert status == 200, f"GET {path}: {status} {body[:300]}"
    return body


def _bureau_token(pg_url: str) -> str:
    import asyncio

    import psycopg

    from monitoring.auth import Role, create_token

    async def token() -> str:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            return (await create_token(conn, Role.BUREAU, name="hosting test")).secret

    return asyncio.run(token())


def _start(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shulian", *argv],
        cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True).start()
    return proc, lines


def _store_one_batch(fake_gateway, pg_url: str, enterprise: str) -> int:
    gw = fake_gateway(enterprise=enterprise, gateway=f"gw-{enterprise}", devices=["d1"])
    gw.birth()
    batch = gw.batch(machine_samples(gw.devices, now_ms(), 1))
    gw.send(batch)
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") == len(batch.samples),
        timeout_s=20,
        what="the batch stored",
    )
    return len(batch.samples)


def test_run_alone_serves_metrics_and_health_but_no_monitoring(
    mosquitto, pg_url, storage_path, fake_gateway
):
    port = free_port()
    env = {
        "DATABASE_URL": pg_url,
        "MQTT_URL": mosquitto.url,
        "SHULIAN_INGEST_API__ENABLED": "true",
        "SHULIAN_INGEST_API__PORT": str(port),
        "SHULIAN_INGEST_WRITER__MAX_DELAY_MS": "50",
    }
    proc, lines = _start(
        ["ingest", "run", "--client-id", f"api-{uuid.uuid4().hex[:6]}",
         "--auto-register-gateways"], env
    )  # fmt: skip
    try:
        wait_listening("127.0.0.1", port, 60, "the ingest's endpoint")
        points = _store_one_batch(fake_gateway, pg_url, "ent-api")
        wait_until(
            lambda: f"shulian_ingest_points_total {float(points)}" in _ok(port, "/metrics"),
            what="the points counter on /metrics",
        )
        health = _ok(port, "/api/ingest/health")
        assert f'"storage_path":"{storage_path}"' in health and '"mqtt_connected":true' in health
        # No monitoring here: no pages, no monitoring API, and not even its tables (the ingest
        # applies its own migration chain only; `shulian monitoring migrate` adds the rest).
        for path in ("/", "/login", "/api/overview", "/api/health", "/static/app.js"):
            assert _get(port, path, None)[0] == 404, path
        assert scalar(pg_url, "SELECT to_regclass('kpi_daily_state') IS NULL") is True
        assert scalar(pg_url, "SELECT to_regclass('device_presence') IS NOT NULL") is True
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, "".join(lines[-30:])
    wait_until(lambda: any("ingest stopped" in line for line in lines), what="a graceful stop")
    assert "monitoring" not in "".join(lines), "".join(lines)[-3000:]


def test_with_monitoring_serves_pages_api_metrics_and_health_on_one_port(
    mosquitto, pg_url, storage_path, fake_gateway, tmp_path
):
    """The small-site form: the monitoring's settings from the `monitoring:` section of the
    ingest's file, its database the ingest's, one port for everything, the refresh running."""
    port = free_port()
    config = tmp_path / "ingest.yaml"
    config.write_text(
        "writer:\n  max_delay_ms: 50\n"
        f"monitoring:\n  http:\n    port: {port}\n  refresh:\n    daily_s: 1\n"
    )
    env = {"DATABASE_URL": pg_url, "MQTT_URL": mosquitto.url}
    proc, lines = _start(
        ["ingest", "run", "--config", str(config), "--with-monitoring", "--client-id",
         f"both-{uuid.uuid4().hex[:6]}", "--auto-register-gateways"], env
    )  # fmt: skip
    try:
        wait_listening("127.0.0.1", port, 60, "the ingest with the monitoring")
        points = _store_one_batch(fake_gateway, pg_url, "ent-both")
        token = _bureau_token(pg_url)
        assert "<form" in _ok(port, "/login")
        assert '"summary"' in _ok(port, "/api/overview", token)
        wait_until(
            lambda: f"shulian_ingest_points_total {float(points)}" in _ok(port, "/metrics"),
            what="the points counter on /metrics",
        )
        health = _ok(port, "/api/ingest/health")
        assert f'"storage_path":"{storage_path}"' in health and '"mqtt_connected":true' in health
        wait_until(
            lambda: scalar(pg_url, "SELECT count(*) FROM kpi_daily_state") >= 2,
            what="the hosted monitoring's KPI refresh",
        )
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, "".join(lines[-30:])
    wait_until(lambda: any("ingest stopped" in line for line in lines), what="a graceful stop")


def test_with_monitoring_refuses_a_bad_monitoring_setting_naming_it(tmp_path, pg_url):
    config = tmp_path / "ingest.yaml"
    config.write_text("monitoring:\n  kpi:\n    timezone: Europe/Berlin\n  htp: {}\n")
    proc, lines = _start(["ingest", "run", "--config", str(config), "--with-monitoring"],
                         {"DATABASE_URL": pg_url})  # fmt: skip
    assert proc.wait(60) == 2
    time.sleep(0.2)
    output = "".join(lines)
    assert f"{config}: monitoring.htp: Extra inputs are not permitted" in output, output


def test_sigterm_with_a_dashboard_stream_open_stops_the_ingest_cleanly(mosquitto, pg_url):
    """An open /api/live stream (a dashboard left open) made uvicorn wait for it forever on
    SIGTERM, so the demo killed the ingest after its timeout; and a stream cancelled mid-way
    left "Future exception was never retrieved" in the log."""
    port = free_port()
    env = {
        "DATABASE_URL": pg_url,
        "MQTT_URL": mosquitto.url,
        "SHULIAN_MONITORING_HTTP__PORT": str(port),
    }
    proc, lines = _start(
        ["ingest", "run", "--with-monitoring", "--client-id", f"live-{uuid.uuid4().hex[:6]}"], env
    )
    stream = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        wait_listening("127.0.0.1", port, 60, "the monitoring app")
        secret = _bureau_token(pg_url)
        stream.request("GET", "/api/live?scope=city", headers={"Authorization": f"Bearer {secret}"})
        response = stream.getresponse()
        assert response.status == 200
        assert b"event: update" in response.read1(65536)  # the stream is open and serving
        proc.terminate()
        started = time.monotonic()
        assert proc.wait(20) == 0, "".join(lines[-30:])
        assert time.monotonic() - started < 15
    finally:
        stream.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_until(lambda: any("ingest stopped" in line for line in lines), what="a graceful stop")
    output = "".join(lines)
    assert "never retrieved" not in output and "Traceback" not in output, output[-3000:]

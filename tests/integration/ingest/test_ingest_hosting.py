"""The ingest on the demo's amqtt broker (MQTT 3.1.1), and hosting the monitoring app."""

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


def test_run_with_api_serves_metrics_and_ingest_health(
    mosquitto, pg_url, storage_path, fake_gateway
):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "MQTT_URL": mosquitto.url,
        "SHULIAN_INGEST_API__ENABLED": "true",
        "SHULIAN_INGEST_API__PORT": str(port),
        "SHULIAN_INGEST_WRITER__MAX_DELAY_MS": "50",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "shulian", "ingest", "run", "--client-id",
         f"api-{uuid.uuid4().hex[:6]}", "--auto-register-gateways"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True).start()
    try:
        wait_listening("127.0.0.1", port, 60, "the monitoring app")
        gw = fake_gateway(enterprise="ent-api", gateway="gw-api", devices=["d1"])
        gw.birth()
        batch = gw.batch(machine_samples(gw.devices, now_ms(), 1))
        gw.send(batch)
        wait_until(
            lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") == len(batch.samples),
            timeout_s=20,
            what="the batch stored",
        )

        def get(path: str) -> str:
            """GET without following redirects: /metrics must answer itself, not redirect."""
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read().decode()
            finally:
                conn.close()
            assert response.status == 200, f"GET {path}: {response.status} {response.headers}"
            return body

        wait_until(
            lambda: f"shulian_ingest_points_total {float(len(batch.samples))}" in get("/metrics"),
            what="the points counter on /metrics",
        )
        health = get("/api/ingest/health")
        assert f'"storage_path":"{storage_path}"' in health and '"mqtt_connected":true' in health
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, "".join(lines[-30:])
    wait_until(lambda: any("ingest stopped" in line for line in lines), what="a graceful stop")


def test_sigterm_with_a_dashboard_stream_open_stops_the_ingest_cleanly(mosquitto, pg_url):
    """An open /api/live stream (a dashboard left open) made uvicorn wait for it forever on
    SIGTERM, so the demo killed the ingest after its timeout; and a stream cancelled mid-way
    left "Future exception was never retrieved" in the log."""
    import asyncio

    import psycopg

    from monitoring.auth import Role, create_token

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "MQTT_URL": mosquitto.url,
        "SHULIAN_INGEST_API__ENABLED": "true",
        "SHULIAN_INGEST_API__PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "shulian", "ingest", "run", "--client-id",
         f"live-{uuid.uuid4().hex[:6]}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True).start()
    stream = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        wait_listening("127.0.0.1", port, 60, "the monitoring app")

        async def token() -> str:
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                return (await create_token(conn, Role.BUREAU, name="live test")).secret

        secret = asyncio.run(token())
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

"""Batches published with plain paho through a real Mosquitto become rows in a real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from ingest_support import duplicate_rows, machine_samples, now_ms, rows, scalar, wait_until

from wire.codec import encode

REPO = Path(__file__).resolve().parents[3]


def test_batches_are_stored_once_even_when_redelivered(start_ingest, fake_gateway, pg_url):
    service = start_ingest()
    gw = fake_gateway(devices=["grinder-1", "hobber-1", "meter-1"])
    gw.birth()
    sent = []
    t0 = now_ms() - 60_000
    for step in range(1, 31):
        batch = gw.batch(machine_samples(gw.devices, t0 + step * 1000, step))
        gw.send(batch)
        sent.append(batch)
    gw.send(sent[4])  # a redelivered batch (same boot and seq): must add nothing
    gw.send(gw.batch(machine_samples(gw.devices, t0 + 99_000, 99), seq=sent[9].seq))  # replay
    expected = sum(len(b.samples) for b in sent)

    wait_until(
        lambda: service.metrics.duplicate_batches._value.get() >= 2,
        timeout_s=20,
        what="both duplicate batches to be seen",
    )
    assert scalar(pg_url, "SELECT count(*) FROM telemetry") == expected
    assert scalar(pg_url, "SELECT count(*) FROM batch_ledger") == len(sent)
    assert duplicate_rows(pg_url) == 0
    assert scalar(pg_url, "SELECT count(*) FROM dead_letters") == 0
    # every value arrived as sent: the newest spindle speed of each device, and bools as 1/0
    latest = dict(
        rows(
            pg_url,
            """SELECT d.device_id, c.value FROM current_values c
               JOIN devices d ON d.key = c.device_key JOIN signals s ON s.id = c.signal_id
               WHERE s.name = 'spindle_speed'""",
        )
    )
    assert latest == {"grinder-1": 1030.0, "hobber-1": 1031.0, "meter-1": 1032.0}
    bools = rows(
        pg_url,
        "SELECT DISTINCT value FROM telemetry t JOIN signals s ON s.id = t.signal_id "
        "WHERE s.name = 'alarm_active'",
    )
    assert sorted(r[0] for r in bools) == [0.0, 1.0]
    boot = rows(pg_url, "SELECT max_seq, batches FROM gateway_boots WHERE boot = %s", (gw.boot,))
    assert boot == [(30, 30)]


def test_cli_run_stores_telemetry_and_stops_cleanly_on_sigterm(
    mosquitto, pg_url, storage_path, fake_gateway
):
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "MQTT_URL": mosquitto.url,
        "SHULIAN_INGEST_WRITER__MAX_DELAY_MS": "50",
    }
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "shulian", "ingest", "run",
            "--client-id", f"cli-{uuid.uuid4().hex[:6]}", "--auto-register-gateways",
        ],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: any("connected to the broker" in line for line in lines),
            timeout_s=30,
            what="the ingest to connect",
        )
        assert any(f"storage path: {storage_path}" in ln for ln in lines)
        gw = fake_gateway(enterprise="ent-cli", gateway="gw-cli", devices=["press-1"])
        gw.birth()
        batch = gw.batch(machine_samples(gw.devices, now_ms(), 1))
        gw.send(batch)
        wait_until(
            lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") == len(batch.samples),
            timeout_s=20,
            what="the batch's rows",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    assert any("ingest stopped" in line for line in lines), "".join(lines[-20:])


def test_status_and_metrics_update_the_registry(start_ingest, fake_gateway, pg_url):
    start_ingest()
    gw = fake_gateway(enterprise="ent-reg", gateway="gw-reg", devices=["lathe-1"])
    gw.birth()
    gw.device_status("lathe-2", "connected", profile="cnc_lathe")
    from wire import topics
    from wire.payloads import GatewayMetrics

    gw.publish(
        topics.metrics("ent-reg", "gw-reg"),
        encode(GatewayMetrics(gateway="gw-reg", ts_ms=now_ms(), figures={"buffer_bytes": 12.0})),
    )
    wait_until(
        lambda: (
            scalar(pg_url, "SELECT count(*) FROM devices WHERE gateway_id = 'gw-reg'") == 2
            and scalar(pg_url, "SELECT metrics->>'buffer_bytes' FROM gateways WHERE id = 'gw-reg'")
        ),
        timeout_s=20,
        what="devices and metrics to be registered",
    )
    assert rows(
        pg_url,
        "SELECT device_id, profile, connection, auto_registered FROM devices ORDER BY device_id",
    ) == [("lathe-1", "", "unknown", True), ("lathe-2", "cnc_lathe", "connected", True)]
    assert rows(pg_url, "SELECT enterprise_id, online, boot FROM gateways") == [
        ("ent-reg", True, gw.boot)
    ]
    assert scalar(pg_url, "SELECT count(*) FROM profiles WHERE name = 'cnc_lathe'") == 1

"""The fleet console's data through the real parts: a real gateway process (fake devices) over
real Mosquitto into the ingest and PostgreSQL (both storage paths), read through the API.

The gateway reads lathe-1 and cannot connect to grinder-1. The console must show the gateway
online with its version and buffer figures, lathe-1 connected with a last good read and reads per
second (the gateway's own per-device figure), grinder-1 with the gateway's error text, a dead
letter of the gateway with its reason, and, after the gateway is killed, the gateway offline
since the broker delivered its Last Will.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import Popen
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient
from ingest_support import now_ms, scalar
from monitoring_data import issue_tokens, seed_registry
from support import wait_until

from monitoring.api.app import create_app
from monitoring.settings import MonitoringSettings
from shulian.devservices import Mosquitto
from wire import topics

REPO = Path(__file__).resolve().parents[3]
MAIN = REPO / "tests" / "integration" / "gateway" / "fake_gateway_main.py"


def start_gateway(mqtt_url: str, tmp_path: Path, devices: list[dict[str, Any]]) -> Popen[bytes]:
    """ent-a's gateway gw-ent-a as a real gateway process, metrics every second."""
    spec = {
        "gateway": {"id": "gw-ent-a", "enterprise": "ent-a", "data_dir": str(tmp_path / "gw")},
        "mqtt": {"url": mqtt_url, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "buffer": {"batch_max_delay_ms": 50},
        "metrics": {"port": 0, "publish_interval_s": 1},
        "reload": {"watch_interval_s": 0},
        "devices": devices,
    }
    (tmp_path / "spec.json").write_bytes(orjson.dumps(spec))
    with (tmp_path / "gateway.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, str(MAIN), str(tmp_path / "spec.json")],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )


@pytest.fixture()
def gateway_process(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Callable[[], Popen[bytes]]]:
    """Starts the gateway (once the registry is seeded); killed at the end."""
    started: list[Popen[bytes]] = []

    def start() -> Popen[bytes]:
        devices = [{"id": "lathe-1", "interval_ms": 100}, {"id": "grinder-1", "unreachable": True}]
        started.append(start_gateway(mosquitto.url, tmp_path, devices))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_fleet_console_shows_buffer_device_errors_dead_letters_and_the_last_will(
    pg_url: str,
    start_ingest: Any,
    fake_gateway: Any,
    gateway_process: Callable[[], Popen[bytes]],
) -> None:
    start_ingest()  # migrates the schema
    seed_registry(pg_url)
    proc = gateway_process()
    provider = {"Authorization": f"Bearer {issue_tokens(pg_url)['provider']}"}
    with TestClient(create_app(MonitoringSettings(db={"url": pg_url}))) as client:

        def gateway() -> dict[str, Any]:
            body = client.get("/api/fleet/sp-1", headers=provider).json()
            (only,) = body["gateways"]  # ent-b's and ent-c's gateways are not sp-1's
            return only

        def ready() -> bool:
            g = gateway()
            devices = {d["id"]: d for d in g["devices"]}
            return bool(
                g["online"]
                and g["buffer_samples"] is not None
                and (devices["lathe-1"]["reads_per_s"] or 0) > 0
                and devices["grinder-1"]["error"]
            )

        wait_until(ready, 30, what="gateway online with figures and grinder-1's error")
        g = gateway()
        devices = {d["id"]: d for d in g["devices"]}
        assert g["enterprise_id"] == "ent-a" and g["version"]
        assert g["buffer_bytes"] is not None and 0 <= g["buffer_fill"] < 0.5
        assert g["buffer_dropped_samples"] == 0
        assert devices["lathe-1"]["connection"] == "connected"
        assert devices["lathe-1"]["last_good_at"] is not None and not devices["lathe-1"]["error"]
        assert devices["grinder-1"]["connection"] != "connected"
        assert "connection refused" in devices["grinder-1"]["error"]
        assert devices["grinder-2"]["connection"] == "unknown"  # registered, never reported
        assert g["problems"] == ["device"]

        # A broken message on the gateway's telemetry topic is a dead letter with its reason.
        sender = fake_gateway("ent-a", "gw-ent-a", ["lathe-1"])
        sender.publish(topics.telemetry("ent-a", "gw-ent-a"), b"not a batch")
        wait_until(
            lambda: client.get("/api/fleet/sp-1/dead-letters", headers=provider).json()[
                "dead_letters"
            ],
            15,
            what="dead letter listed",
        )
        (letter,) = client.get("/api/fleet/sp-1/dead-letters", headers=provider).json()[
            "dead_letters"
        ]
        assert (letter["enterprise_id"], letter["gateway_id"]) == ("ent-a", "gw-ent-a")
        assert letter["reason"] and letter["detail"]
        assert "payload" not in letter

        proc.send_signal(signal.SIGKILL)
        killed_ms = now_ms()
        proc.wait()
        wait_until(lambda: not gateway()["online"], 15, what="gateway offline (Last Will)")
        g = gateway()
        assert g["problems"][0] == "offline"
        since_ms = scalar(
            pg_url,
            "SELECT (extract(epoch FROM status_at) * 1000)::bigint FROM gateways "
            "WHERE enterprise_id = 'ent-a' AND id = 'gw-ent-a'",
        )
        assert abs(since_ms - killed_ms) <= 3000, (
            f"offline since {since_ms - killed_ms} ms from kill"
        )
        assert g["since"].startswith(
            str(scalar(pg_url, "SELECT status_at::date FROM gateways WHERE id = 'gw-ent-a'"))
        )

        every = client.get("/api/fleet/all", headers=provider)
        assert every.status_code == 404  # a provider never sees the whole fleet


def test_fleet_console_shows_configuration_assigned_applied_and_refused(
    client: TestClient, monitoring_db: str
) -> None:
    """Assignments go through the remote-configuration API; the gateway's reports are stored as
    rows of config_reports (what the ingest keeps of a wire ConfigReport)."""
    tokens = issue_tokens(monitoring_db)
    provider = {"Authorization": f"Bearer {tokens['provider']}"}
    profile = (REPO / "tests" / "data" / "profiles" / "servo_press_cabinet.yaml").read_text()

    def gateway() -> dict[str, Any]:
        (only,) = client.get("/api/fleet/sp-1", headers=provider).json()["gateways"]
        return only

    assert (gateway()["config_assigned"], gateway()["config_applied"]) == (None, None)
    revisions = []
    for n in (1, 2):
        upload = client.post(
            "/api/config/providers/sp-1/files",
            headers=provider,
            json={"name": "p.yaml", "kind": "profile", "content": profile + f"\n# v{n}\n"},
        )
        assert upload.status_code == 200, upload.text
        assigned = client.post(
            "/api/config/assignments",
            headers=provider,
            json={
                "gateways": [{"enterprise": "ent-a", "gateway": "gw-ent-a"}],
                "files": {"p.yaml": n},
            },
        )
        assert assigned.status_code == 200, assigned.text
        revisions.append(assigned.json()["assignments"][0]["revision"])
    messages = ["p.yaml:12: signals[0].scale: not a number"]
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        for revision, status, said in (
            (revisions[0], "applied", []),
            (revisions[1], "refused", messages),
        ):
            conn.execute(
                "INSERT INTO config_reports (enterprise_id, gateway_id, revision, status, "
                "messages, reported_at) VALUES ('ent-a', 'gw-ent-a', %s, %s, %s, now())",
                (revision, status, orjson.dumps(said).decode()),
            )
    g = gateway()
    assert (g["config_assigned"], g["config_applied"]) == (revisions[1], revisions[0])
    assert g["config_refusal"] == {"revision": revisions[1], "messages": messages}
    assert "config" in g["problems"]

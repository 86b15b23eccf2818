"""A gateway killed with SIGKILL is stored offline at the time it died, not at its start (issue 12).

A real gateway process, a real Mosquitto and the ingest: the Last Will is registered at connect, so
its ts_ms is the connect time; the ingest takes the broker's delivery as the offline time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from ingest_support import now_ms, scalar, wait_until

from shulian.devservices import Mosquitto

REPO = Path(__file__).resolve().parents[3]
MAIN = REPO / "tests" / "integration" / "gateway" / "fake_gateway_main.py"


def test_a_killed_gateway_is_stored_offline_when_it_died_not_when_it_started(
    start_ingest: Any, mosquitto: Mosquitto, pg_url: str, tmp_path: Path
) -> None:
    start_ingest()
    spec = {
        "gateway": {"id": "gw-w", "enterprise": "ent-w", "data_dir": str(tmp_path / "gw")},
        "mqtt": {"url": mosquitto.url, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "buffer": {"batch_max_delay_ms": 50},
        "metrics": {"port": 0, "publish_interval_s": 0},
        "reload": {"watch_interval_s": 0},
        "devices": [{"id": "w1", "interval_ms": 200}],
    }
    (tmp_path / "spec.json").write_bytes(orjson.dumps(spec))
    with (tmp_path / "gateway.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(MAIN), str(tmp_path / "spec.json")],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    try:
        online = "SELECT online FROM gateways WHERE enterprise_id = 'ent-w' AND id = 'gw-w'"
        wait_until(lambda: scalar(pg_url, online) is True, what="gateway online", timeout_s=30)
        up_since = time.monotonic()
        # Let it run well past its connect, so the connect time and the death time differ.
        wait_until(lambda: time.monotonic() - up_since > 6, what="6 s of service", timeout_s=10)
        proc.send_signal(signal.SIGKILL)
        killed_ms = now_ms()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_until(lambda: scalar(pg_url, online) is False, what="gateway offline", timeout_s=15)
    status_ms = scalar(
        pg_url,
        "SELECT (extract(epoch FROM status_at) * 1000)::bigint FROM gateways "
        "WHERE enterprise_id = 'ent-w' AND id = 'gw-w'",
    )
    assert abs(status_ms - killed_ms) <= 3000, f"offline at {status_ms - killed_ms} ms from kill"

"""`shulian gateway run` as a process: real site file, real drivers; SIGHUP reloads, SIGTERM stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway_fakes import eventually_sync

from shulian.devservices import Mosquitto, free_port
from wire.codec import decode_device_status, decode_status
from wire.payloads import DeviceConnection

PROFILE = """\
id: cli-meter
protocol: modbus
groups: [{name: default, interval_ms: 200}]
signals:
  - {name: active_power, address: 0, type: float32, unit: W}
"""


def test_run_reports_status_reloads_on_sighup_and_stops_on_sigterm(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    (tmp_path / "meter.yaml").write_text(PROFILE)
    site = tmp_path / "gateway.yaml"
    dead_port = free_port()  # nothing listens: the device must show up as disconnected
    site.write_text(
        f"gateway: {{id: gw-cli, enterprise: ent-c, data_dir: '{tmp_path / 'var'}'}}\n"
        f"mqtt: {{url: '{mosquitto.url}'}}\n"
        "metrics: {port: 0}\n"
        "devices:\n"
        f"  - {{id: meter-1, profile: meter.yaml, endpoint: 'tcp://127.0.0.1:{dead_port}'}}\n"
    )
    sub = collect(mosquitto.url, "shulian/v1/ent-c/gw-cli/#")
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shulian.cli", "gateway", "run", "--config", str(site)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SHULIAN_GW_LOG__FORMAT": "json"},
    )
    try:

        def status() -> Any:
            msgs = [m for m in sub.snapshot() if m.topic.endswith("gw-cli/status")]
            return decode_status(msgs[-1].payload) if msgs else None

        def device() -> Any:
            msgs = [m for m in sub.snapshot() if m.topic.endswith("meter-1/status")]
            return decode_device_status(msgs[-1].payload) if msgs else None

        eventually_sync(lambda: status() and status().online, what="online", timeout_s=30)
        eventually_sync(lambda: device(), what="device status", timeout_s=10)
        assert device().connection is DeviceConnection.DISCONNECTED
        assert str(dead_port) in (device().error or "")
        first_hash = status().config_hash

        site.write_text(site.read_text().replace("meter-1", "meter-2"))
        proc.send_signal(signal.SIGHUP)
        eventually_sync(lambda: status().config_hash != first_hash, what="reload", timeout_s=10)
        assert status().devices == ["meter-2"]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        eventually_sync(lambda: status().online is False, what="offline status")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (tmp_path / "gateway.log").read_text()
    assert '"msg":"gateway stopped"' in text, text[-2000:]

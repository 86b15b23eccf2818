"""bench/soak.py --quick: a few OPC UA server restarts and Modbus outages under one real gateway."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shulian.devservices import mosquitto_binary

SOAK = Path(__file__).resolve().parents[3] / "bench" / "soak.py"


@pytest.mark.slow
@pytest.mark.timeout(320)
@pytest.mark.skipif(mosquitto_binary() is None, reason="needs a mosquitto binary")
def test_soak_quick_recovers_from_every_restart_and_outage() -> None:
    result = subprocess.run(
        [sys.executable, str(SOAK), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert figures["bench"] == "soak" and figures["worker_errors"] == []
    assert (figures["opcua_restarts"], figures["modbus_outages"]) == (4, 2)
    for protocol, devices in (("opcua", 3), ("modbus", 4)):
        recovery = figures["recovery"][protocol]
        # Every device of every restarted server sent good data again and said so in its status.
        assert recovery["devices_per_event"] == devices, recovery
        assert recovery["device_not_recovered"] == 0, recovery
        assert recovery["device_recoveries"] == recovery["events"] * devices, recovery
        assert set(recovery["sample_recovery_s"]) == {"p50", "p95", "max"}
        # Back within the reconnect cap (10 s) plus a poll and a publish, on a loaded machine.
        assert 0 < recovery["sample_recovery_s"]["max"] < 20, recovery
        assert recovery["status_recovery_s"]["max"] is not None, recovery
        # One "disconnected" per device and restart (two only if the gateway got back in while a
        # server stopping in order still answered), never "connected" while the server is down.
        assert "0" not in recovery["not_connected_reports_per_device_event"], recovery
        assert recovery["extra_not_connected_reports"] == 0, recovery
        assert recovery["connected_while_down"] == 0, recovery
        assert recovery["events_by_stop"] == {"term": recovery["events"] // 2,
                                              "kill": recovery["events"] // 2}  # fmt: skip
    assert figures["devices_connected_at_end"] == figures["devices"] == 10
    assert figures["duplicate_samples"] == 0, figures["duplicate_examples"]
    assert figures["unexplained_gaps"] == 0, figures["unexplained_gap_examples"]
    rss = figures["rss_mb"]
    assert set(rss) == {"start", "after_warmup", "before_restarts", "at_half", "end", "peak"}
    assert 20 < rss["start"] <= rss["peak"] < 500, rss
    assert set(figures["rss_growth_mb"]) == {
        "calm_baseline", "calm_baseline_s", "first_half", "last_half", "end_minus_before_restarts"
    }  # fmt: skip
    assert figures["verdict"] in {"rss settles", "rss grows"}
    assert "last_half_growth_vs_first_half" in figures["ratios"]
    log = figures["gateway_log"]
    assert log["error_lines"] == 0 and log["tracebacks"] == 0, log
    assert log["unformatted_lines"] == 0, log
    assert figures["gateway_exit_code"] == 0

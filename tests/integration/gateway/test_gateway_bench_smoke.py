"""bench/gateway.py runs for a few seconds and prints one JSON line with its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shulian.devservices import mosquitto_binary

BENCH = Path(__file__).resolve().parents[3] / "bench" / "gateway.py"


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(mosquitto_binary() is None, reason="needs a mosquitto binary")
def test_gateway_bench_smoke() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--seconds", "3", "--devices", "6", "--rate", "300",
         "--warmup", "2", "--no-ramp", "--sim-procs", "1", "--no-worst-case",
         "--baseline-seconds", "3"],
        capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert figures["bench"] == "gateway" and figures["devices"] == 6
    assert figures["points_per_s"] > 0 and figures["devices_connected"] >= 4
    assert 0 < figures["gateway_cpu_share"] < 2 and 20 < figures["gateway_peak_rss_mb"] < 500
    assert (
        figures["modbus_requests_per_cycle"] <= figures["modbus_requests_per_cycle_one_per_signal"]
    )
    assert figures["latency_ms_p50"] is not None
    bare = figures["baseline_bare_pymodbus"]
    # A 3 s baseline may cost less than one /proc clock tick (10 ms) of CPU: its share can read 0.
    assert bare["requests_per_s"] > 0 and bare["failures"] == 0 and bare["cpu_share"] >= 0, bare
    ratio = figures["ratios"]["gateway_cpu_vs_bare_pymodbus_reads"]
    assert (ratio > 0) if bare["cpu_share"] > 0 else (ratio is None), (ratio, bare)
    assert set(figures["targets_met"]) == {"rate", "cpu", "peak_rss", "rss_drift"}
    assert figures["simulators_cpu_share"] > 0 and figures["worst_case_layout"] is None


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(mosquitto_binary() is None, reason="needs a mosquitto binary")
def test_gateway_bench_scale_smoke() -> None:
    """``--scale N``: N light devices on the bare responder; prints points/s and CPU µs/point."""
    result = subprocess.run(
        [sys.executable, str(BENCH), "--scale", "24", "--scale-units-per-port", "4",
         "--scale-rate", "1200", "--seconds", "2", "--ramp-steps", "1"],
        capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert figures["bench"] == "gateway-scale" and figures["inputs"]["ports"] == 6
    (step,) = figures["steps"]
    assert step["devices"] == 24 and step["devices_connected"] == 24, step
    assert step["points_per_s"] > 0 and step["cpu_us_per_point"] > 0, step
    assert step["gateway_open_descriptors"] > 6, step
    assert "max_sustained_points_per_s" in figures and "cpu_us_per_point_at_max" in figures

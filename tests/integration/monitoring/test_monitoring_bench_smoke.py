"""bench/monitoring.py still runs end to end at a small scale and prints one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_the_monitoring_benchmark_runs_briefly_and_reports(pg_server_url: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "monitoring.py"),
            "--seconds",
            "2",
            "--enterprises",
            "10",
            "--devices-per-enterprise",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SHULIAN_TEST_PG_URL": pg_server_url},
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert figures["rows"]["devices"] == 50
    latency = figures["latency"]
    for name in ("overview", "overview_one_connection", "segment", "enterprise", "trend_30d"):
        assert latency[name]["n"] >= 3
        # loose: this guards against rot; the figures themselves go to docs/monitoring.md
        assert 0 < latency[name]["p50_ms"] <= latency[name]["p95_ms"] < 10_000
    assert latency["baseline_from_rollups"]["n"] == 3
    assert figures["overview_vs_baseline"] > 0
    assert "loadavg_1m_before" in figures["environment"]

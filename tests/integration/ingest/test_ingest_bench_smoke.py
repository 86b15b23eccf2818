"""bench/ingest.py still runs end to end and prints one JSON line with its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shulian.devservices import mosquitto_binary

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_the_ingest_benchmark_runs_briefly_and_reports(pg_server_url, storage_path):
    if mosquitto_binary() is None:
        pytest.skip("needs a mosquitto binary (apt-get install mosquitto)")
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "ingest.py"), "--seconds", "3", "--gateways", "4"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SHULIAN_TEST_PG_URL": pg_server_url},
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    # loose limits: this guards against rot, the figures themselves go to docs/scaling.md
    assert figures["sustained_points_per_s"] > 2_000
    assert figures["raw_copy_points_per_s"] > figures["sustained_points_per_s"] * 0.5
    assert 0 < figures["publish_to_commit_p99_ms"] < 10_000
    assert figures["latency_samples"] > 10
    assert figures["ledger_duplicates"] == 0
    assert figures["inputs"]["storage_path"] == storage_path

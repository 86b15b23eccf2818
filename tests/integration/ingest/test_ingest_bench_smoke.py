"""bench/ingest.py still runs end to end on each storage path and prints one JSON line."""

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
    # The bench takes its server from the variable of its --storage; point it at this session's.
    server_variable = {"postgresql": "SHULIAN_TEST_PG_URL", "timescaledb": "SHULIAN_TEST_TSDB_URL"}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "ingest.py"),
            "--seconds",
            "3",
            "--gateways",
            "4",
            "--storage",
            storage_path,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, server_variable[storage_path]: pg_server_url},
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    # loose limits: this guards against rot, the figures themselves go to docs/scaling.md
    assert figures["inputs"]["storage_path"] == storage_path
    assert figures["inputs"]["variant"] == "defaults"
    assert figures["sustained_points_per_s"] > 2_000
    assert figures["raw_copy_points_per_s"] > figures["sustained_points_per_s"] * 0.5
    assert figures["raw_copy_connections"] == figures["inputs"]["lanes"]
    assert 0 < figures["ratio_to_raw_copy"] < 2
    assert 0 < figures["publish_to_commit_p99_ms"] < 10_000
    assert figures["latency_samples"] > 10
    assert figures["ledger_duplicates"] == 0
    # the ingest's own peak: more than an interpreter, far less than the machine
    assert figures["rss_before_ingest_mb"] < figures["ingest_peak_rss_mb"] < 2_000
    assert figures["stored_rows"] >= figures["raw_copy_rows"] > 0
    assert 20 < figures["stored_bytes_per_point"] < 1_000
    if storage_path == "timescaledb":
        assert figures["environment"]["server"]["timescaledb"]
        assert 0 < figures["compressed_bytes_per_point"] < figures["stored_bytes_per_point"] / 2
    else:
        assert figures["compressed_bytes_per_point"] is None

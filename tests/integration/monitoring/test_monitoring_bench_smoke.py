"""bench/monitoring.py --smoke still runs end to end on each storage path and prints one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PAGES = ("overview", "segment", "district", "enterprise", "provider")


@pytest.mark.slow
@pytest.mark.browser
def test_the_monitoring_benchmark_runs_briefly_and_reports(
    pg_server_url: str, storage_path: str
) -> None:
    env = {**os.environ, "SHULIAN_TEST_PG_URL": pg_server_url}
    if storage_path == "timescaledb":
        env["SHULIAN_TEST_TSDB_URL"] = pg_server_url
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "monitoring.py"),
            "--smoke",
            "--storage",
            storage_path,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert figures["storage_path"] == storage_path
    generation = figures["generation"]
    # The history went through the writer and the refreshes: every table the pages read is filled.
    rows = generation["rows"]
    assert rows["devices"] == 24
    assert rows["telemetry"] == generation["history_points"] > 0
    assert rows["counter_increments"] > 0 and rows["state_intervals"] > 0
    assert rows["kpi_device_daily"] == 24 * 2  # two days, every device
    for section in (figures, figures["baseline"]):
        for name in PAGES:
            page = section["pages"][name]
            # loose: this guards against rot; the figures themselves go to bench/README.md
            assert page["n"] >= 1
            assert 0 < page["p50_ms"] <= page["p95_ms"] <= page["p99_ms"] < 30_000
    for name in ("overview.html", "api/overview", "api/trend", "api/segments", "api/districts",
                 "api/enterprises", "api/enterprises/devices", "api/providers"):  # fmt: skip
        assert figures["requests"][name]["n"] >= 1, name
    assert figures["requests_per_s"] > 0
    assert 0 < figures["db_share"] < 1
    assert 0 < figures["baseline"]["db_share"] < 1
    # The ingest wrote during the load phase, at about the asked rate (2,000 points/s)
    assert 1_000 < figures["ingest_points_per_s"] < 3_000
    assert set(figures["p95_vs_baseline"]["pages"]) == set(PAGES)
    assert all(ratio > 0 for ratio in figures["p95_vs_baseline"]["requests"].values())
    browser = figures["browser_overview_filled_ms"]
    assert len(browser["baseline"]) == len(browser["load"]) == 1
    assert all(0 < ms < 60_000 for ms in browser["baseline"] + browser["load"])
    for key in ("load_average_before", "load_average_after"):
        assert len(figures[key]) == 3
    assert figures["environment"]["commit"]

"""Simulators → gateway → Mosquitto → ingest → PostgreSQL, as separate processes, against ground truth.

The simulators record every value they serve (in canonical units) to a JSONL file; after the run,
the rows in the database must agree with it: every stored value was really served, every change
of a state or counter that lasted longer than the sampling tolerance was captured, counters are
exact, and no row is stored twice.
"""

from __future__ import annotations

import bisect
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support import wait_until

from shulian.devservices import Mosquitto, free_port, is_listening

pytestmark = [pytest.mark.slow, pytest.mark.needs_pg, pytest.mark.needs_broker]

ENTERPRISE = "ent-e2e"
RUN_S = 30.0
POLL_TOLERANCE_MS = 2500  # longest group interval in the profiles used (slow: 5 s) is not needed
"""A change must be captured when it lasted at least this long (fast groups poll every 1 s)."""

SCENARIO = """\
name: e2e
seed: 7
tick_ms: 100
dwell_scale: 0.2
time_scale: 8
host: 127.0.0.1
servers:
  - {{name: opcua, protocol: opcua, port: {opcua}}}
  - {{name: modbus, protocol: modbus, port: {modbus}}}
instances:
  - {{id: grinder-01, kind: raceway_grinder, enterprise: {ent}, server: opcua}}
  - {{id: hobber-01, kind: gear_hobber, enterprise: {ent}, server: modbus, unit_id: 1}}
  - {{id: meter-01, kind: energy_meter, enterprise: {ent}, server: modbus, unit_id: 10,
     meters: [grinder-01, hobber-01]}}
"""

SITE = """\
gateway: {{id: gw-e2e, enterprise: {ent}, data_dir: {data}}}
mqtt: {{url: "{mqtt}"}}
metrics: {{port: 0}}
devices:
  - {{id: grinder-01, profile: raceway_grinder, endpoint: "opc.tcp://127.0.0.1:{opcua}"}}
  - {{id: hobber-01, profile: gear_hobber, endpoint: "tcp://127.0.0.1:{modbus}", unit_id: 1}}
  - {{id: meter-01, profile: energy_meter, endpoint: "tcp://127.0.0.1:{modbus}", unit_id: 10}}
"""

EXACT_COUNTERS = {"part_count", "good_count", "reject_count", "active_energy", "stroke_count"}
CAPTURED_KINDS = {"machine_state", "part_count", "alarm_active", "alarm_code"}


@dataclass(frozen=True)
class Row:
    device: str
    signal: str
    ts_ms: int
    value: Any


def _spawn(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shulian", *args],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _rows(pg_url: str) -> list[Row]:
    sql = """
        SELECT d.device_id, s.name, (extract(epoch FROM t.ts) * 1000)::bigint,
               coalesce(t.value_text, t.value::text)
        FROM telemetry t JOIN devices d ON d.key = t.device_key JOIN signals s ON s.id = t.signal_id
        WHERE t.quality = 0
          AND t.value_text IS DISTINCT FROM 'offline'  -- derived by the ingest, never served
    """
    with psycopg.connect(pg_url) as conn:
        return [Row(*r) for r in conn.execute(sql).fetchall()]


def _duplicates(pg_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            "SELECT device_key, signal_id, ts, count(*) FROM telemetry "
            "GROUP BY 1, 2, 3 HAVING count(*) > 1 LIMIT 10"
        ).fetchall()


def _truth(path: Path) -> dict[tuple[str, str], list[tuple[int, Any]]]:
    series: dict[tuple[str, str], list[tuple[int, Any]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if "signal" in item:
            series[(item["device"], item["signal"])].append((item["ts_ms"], item["value"]))
    return series


def _same(stored: Any, served: Any) -> bool:
    if isinstance(served, bool):
        return float(stored) == float(served)
    if isinstance(served, (int, float)):
        return abs(float(stored) - float(served)) <= 1e-6 * max(1.0, abs(float(served)))
    return str(stored) == str(served)


def _served_between(points: list[tuple[int, Any]], start_ms: int, end_ms: int) -> list[Any]:
    """Values the simulator served at some moment in [start_ms, end_ms]."""
    times = [t for t, _ in points]
    first = max(0, bisect.bisect_right(times, start_ms) - 1)
    last = bisect.bisect_right(times, end_ms)
    return [v for _, v in points[first:last]]


def _lively(pg_url: str) -> bool:
    """Both machines counted parts and changed state: enough happened to compare."""
    seen: dict[tuple[str, str], set[Any]] = defaultdict(set)
    for row in _rows(pg_url):
        seen[(row.device, row.signal)].add(row.value)
    machines = ("grinder-01", "hobber-01")
    return all(len(seen[(m, "part_count")]) >= 3 for m in machines) and any(
        len(seen[(m, "machine_state")]) >= 2 for m in machines
    )


def test_stored_rows_agree_with_the_simulators_ground_truth(
    tmp_path: Path, mosquitto: Mosquitto, pg_url: str
) -> None:
    ports = {"opcua": free_port(), "modbus": free_port()}
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO.format(ent=ENTERPRISE, **ports))
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(ent=ENTERPRISE, data=tmp_path / "gw", mqtt=mosquitto.url, **ports))
    truth_file = tmp_path / "truth.jsonl"

    sim = _spawn(
        ["sim", "run", "--scenario", str(scenario), "--truth-file", str(truth_file)],
        tmp_path / "sim.log",
    )
    ingest = _spawn(
        [
            "ingest",
            "run",
            "--no-api",
            "--db",
            pg_url,
            "--mqtt",
            mosquitto.url,
            "--auto-register-gateways",
        ],
        tmp_path / "ingest.log",
    )
    procs = [sim, ingest]
    try:
        wait_until(
            lambda: all(is_listening("127.0.0.1", p) for p in ports.values()), 60, what="simulators"
        )
        gateway = _spawn(["gateway", "run", "--config", str(site)], tmp_path / "gateway.log")
        procs.insert(0, gateway)
        wait_until(
            lambda: len({r.device for r in _rows(pg_url)}) == 3,
            60,
            0.5,
            what="rows of all 3 devices",
        )
        started_ms = min(r.ts_ms for r in _rows(pg_url))
        wait_until(lambda: _lively(pg_url), RUN_S * 3, 1.0, what="parts counted and states changed")
        _stop(gateway)
        stopped_ms = max(r.ts_ms for r in _rows(pg_url))
        counts: list[int] = []

        def settled() -> bool:  # the ingest has stored everything the gateway published
            counts.append(len(_rows(pg_url)))
            return len(counts) >= 4 and len(set(counts[-4:])) == 1

        wait_until(settled, 30, 0.5, what="the ingest to drain")
    finally:
        for proc in procs:
            _stop(proc)
        logs = {p.name: p.read_text(errors="replace")[-3000:] for p in tmp_path.glob("*.log")}

    rows = _rows(pg_url)
    truth = _truth(truth_file)
    assert _duplicates(pg_url) == [], "rows stored twice"

    by_series: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        by_series[(row.device, row.signal)].append(row)
    assert set(by_series) <= set(truth), (
        f"stored signals the simulators never served: {set(by_series) - set(truth)}"
    )

    # 1. Every stored value was really served, at (or just before) its timestamp.
    wrong = []
    for key, series in by_series.items():
        for row in series:
            candidates = _served_between(truth[key], row.ts_ms - 1500, row.ts_ms + 50)
            if not any(_same(row.value, v) for v in candidates):
                wrong.append((key, row.ts_ms, row.value, candidates[-3:]))
    assert not wrong, f"{len(wrong)} stored values never served, e.g. {wrong[:5]}\n{logs}"

    # 2. Counters are exact and every lasting change of a state or counter was captured.
    missed = []
    for (device, sig), points in truth.items():
        if sig not in CAPTURED_KINDS or (device, sig) not in by_series:
            continue
        stored = by_series[(device, sig)]
        for (t0, value), (t1, _) in zip(points, [*points[1:], (stopped_ms, None)], strict=True):
            lasted_in_run = min(t1, stopped_ms) - max(t0, started_ms)
            if lasted_in_run < POLL_TOLERANCE_MS:
                continue
            if not any(_same(r.value, value) and t0 - 50 <= r.ts_ms <= t1 + 1500 for r in stored):
                missed.append((device, sig, t0, value))
    assert not missed, f"served changes not captured: {missed[:10]}\n{logs}"

    counters = {k for k in by_series if k[1] in EXACT_COUNTERS}
    assert counters, "no counter was stored"
    changes = sum(len(v) for k, v in truth.items() if k[1] in CAPTURED_KINDS)
    assert changes >= 6, f"the run was too quiet to prove anything ({changes} changes)"

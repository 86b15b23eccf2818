"""A real gateway process killed with SIGKILL: Last Will, and no buffered batch lost across restarts."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from gateway_fakes import eventually_sync

from shulian.devservices import Mosquitto
from wire.codec import decode_status

HERE = Path(__file__).resolve().parent
MAIN = HERE / "fake_gateway_main.py"
REPO = HERE.parents[2]


@pytest.fixture()
def gateway_proc(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(broker: Mosquitto, data_dir: Path, devices: int = 2) -> subprocess.Popen[bytes]:
        spec = {
            "gateway": {"id": "gw-k", "enterprise": "ent-k", "data_dir": str(data_dir)},
            "mqtt": {"url": broker.url, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
            "buffer": {"batch_max_delay_ms": 50, "historical_after_s": 0.2},
            "metrics": {"port": 0, "publish_interval_s": 0},
            "reload": {"watch_interval_s": 0},
            "devices": [{"id": f"k{i}", "interval_ms": 50} for i in range(devices)],
        }
        path = tmp_path / f"spec-{len(procs)}.json"
        path.write_bytes(orjson.dumps(spec))
        log = (tmp_path / f"gateway-{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(MAIN), str(path)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def rows_on_disk(data_dir: Path) -> list[tuple[str, int]]:
    db = sqlite3.connect(f"file:{data_dir / 'buffer.sqlite3'}?mode=ro", uri=True)
    try:
        return [(r[0], r[1]) for r in db.execute("SELECT boot, seq FROM batches ORDER BY id")]
    finally:
        db.close()


def last_status(sub: Any) -> Any:
    msgs = [m for m in sub.snapshot() if m.topic.endswith("gw-k/status")]
    return decode_status(msgs[-1].payload) if msgs else None


def test_last_will_marks_a_killed_gateway_offline(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any, gateway_proc: Any
) -> None:
    sub = collect(mosquitto.url, "shulian/v1/ent-k/gw-k/status")
    proc = gateway_proc(mosquitto, tmp_path / "gw")
    eventually_sync(lambda: (s := last_status(sub)) and s.online, what="online", timeout_s=20)
    boot = last_status(sub).boot
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    eventually_sync(lambda: last_status(sub).online is False, what="Last Will", timeout_s=10)
    assert last_status(sub).boot == boot
    # Retained: a newcomer learns it too.
    late = collect(mosquitto.url, "shulian/v1/ent-k/gw-k/status")
    eventually_sync(lambda: late.snapshot(), what="retained status")
    assert late.snapshot()[0].retain and decode_status(late.snapshot()[0].payload).online is False


def test_batches_buffered_before_sigkill_during_outage_arrive_after_restart(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any, gateway_proc: Any
) -> None:
    sub = collect(mosquitto.url, "shulian/v1/ent-k/gw-k/telemetry", session="kill-sub")
    data_dir = tmp_path / "gw"
    proc = gateway_proc(mosquitto, data_dir)
    eventually_sync(lambda: len(sub.batches()) >= 3, what="live batches", timeout_s=20)
    mosquitto.stop()
    eventually_sync(lambda: len(rows_on_disk(data_dir)) >= 20, what="a backlog on disk")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    on_disk = rows_on_disk(data_dir)
    first_boot = on_disk[0][0]
    assert len(on_disk) >= 20
    mosquitto.start()
    gateway_proc(mosquitto, data_dir)

    def arrived() -> set[tuple[str, int]]:
        return {(b.boot, b.seq) for b in sub.batches()}

    eventually_sync(
        lambda: set(on_disk) <= arrived(), what="every buffered batch after restart", timeout_s=30
    )
    old = sorted(seq for boot, seq in arrived() if boot == first_boot)
    assert old == list(range(1, old[-1] + 1)), "the first boot's batches arrive without a gap"
    eventually_sync(
        lambda: any(boot != first_boot for boot, _ in arrived()), what="the new boot publishing"
    )
    replayed = {(b.boot, b.seq) for b in sub.batches() if b.historical}
    assert set(on_disk) <= replayed, "the restarted gateway replays its backlog as historical"
    eventually_sync(lambda: len(rows_on_disk(data_dir)) < 10, what="buffer drained")

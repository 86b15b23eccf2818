"""A Sparkplug B edge node's data survives ingest SIGKILLs under load: nothing lost, nothing twice.

Covered (docs/sparkplug.md, "Exactly once"): an edge node publishing its data with QoS 1 to a
broker that keeps the ingest's persistent session. The ingest runs as a subprocess and is killed
with SIGKILL every few seconds while a third-party edge node (pysparkplug + plain paho) sends
alias-only DDATA; each restart finds its births in the database, asks for a rebirth and goes on.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from ingest_support import duplicate_rows, scalar, wait_until
from sparkplug_support import EdgeNode, now_ms, write_mapping
from test_ingest_faults import _spawn_ingest

from shulian.devservices import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.needs_pg, pytest.mark.needs_broker]

FAULT_SECONDS = float(os.environ.get("SHULIAN_SPARKPLUG_FAULT_SECONDS", "30"))
KILL_PERIOD_S = 6.0
MESSAGES_PER_S = 100


class Load:
    """Alias-only DDATA from a thread: message n carries strokes n, force n N, at base + n ms."""

    def __init__(self, node: EdgeNode) -> None:
        self.node = node
        self.base = now_ms() - 600_000  # apart from every birth's own values (stamped now)
        self.sent = 0
        self.infos: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            n = self.sent
            values = {"Press/Strokes": n, "Press/Force": float(n), "State": "running"}
            self.infos.append(self.node.data("plc-1", values, ts_ms=self.base + n))
            self.sent += 1
            next_at += 1 / MESSAGES_PER_S
            time.sleep(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for info in self.infos:
            info.wait_for_publish(60)


def _stored(url: str, load: Load) -> tuple[int, float]:
    row = scalar(
        url,
        """SELECT count(*)::text || ' ' || coalesce(sum(t.value) FILTER (
                  WHERE s.name = 'stroke_count'), 0)::text
           FROM telemetry t JOIN signals s ON s.id = t.signal_id
           WHERE t.ts BETWEEN to_timestamp(%s / 1000.0) AND to_timestamp(%s / 1000.0)""",
        (load.base, load.base + load.sent),
    )
    count, total = str(row).split()
    return int(count), float(total)


@pytest.mark.slow
def test_sparkplug_data_survives_ingest_sigkill_under_load_exactly_once(
    mosquitto: Mosquitto, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHULIAN_INGEST_SPARKPLUG__MAPPING_FILE", str(write_mapping(tmp_path)))
    monkeypatch.setenv("SHULIAN_INGEST_SPARKPLUG__REBIRTH_INTERVAL_S", "1")
    client_id = f"spb-killed-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "ingest.log"
    proc = _spawn_ingest(pg_url, mosquitto.url, client_id, log)
    wait_until(
        lambda: "connected to the broker" in log.read_text(errors="replace"),
        timeout_s=30,
        what="the first ingest to connect",
    )
    node = EdgeNode(mosquitto.url).connect()
    node.birth()
    load = Load(node)
    kills = 0
    try:
        deadline = time.monotonic() + FAULT_SECONDS
        while time.monotonic() < deadline:
            time.sleep(min(KILL_PERIOD_S, max(0.0, deadline - time.monotonic())))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            proc = _spawn_ingest(pg_url, mosquitto.url, client_id, log)
        load.stop()
        expected_rows = 3 * load.sent
        expected_sum = float(sum(range(load.sent)))
        wait_until(
            lambda: _stored(pg_url, load)[0] >= expected_rows,
            timeout_s=120,
            interval_s=0.5,
            what=f"all {expected_rows} samples of {load.sent} DDATA messages stored",
        )
        assert _stored(pg_url, load) == (expected_rows, expected_sum)
        assert duplicate_rows(pg_url) == 0
        assert scalar(pg_url, "SELECT count(*) FROM dead_letters") == 0
    finally:
        proc.kill()
        proc.wait()
        node.close()
    assert kills >= FAULT_SECONDS // KILL_PERIOD_S
    text = log.read_text(errors="replace")
    assert text.count("session present: True") >= kills  # each restart resumed the session
    assert "Node Control/Rebirth" in node.commands  # restarts re-confirmed the births
    assert load.sent >= FAULT_SECONDS * 0.8 * MESSAGES_PER_S

"""A gateway killed with SIGKILL is stored offline at the time it died, not at its start (issue 12).

A real gateway process, a real Mosquitto and the ingest: the Last Will is registered at connect, so
its ts_ms is the connect time; the ingest takes the broker's delivery as the offline time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from ingest_support import now_ms, scalar, wait_until

from shulian.devservices import Mosquitto

REPO = Path(__file__).resolve().parents[3]
MAIN = REPO / "tests" / "integration" / "gateway" / "fake_gateway_main.py"


def test_a_killed_gateway_is_stored_offline_when_it_died_not_when_it_started(
    start_ingest: Any, mosquitto: Mosquitto, pg_url: str, tmp_path: Path
) -> None:
    start_ingest()
    spec = {
        "gateway": {"id": "gw-w", "enterprise": "ent-w", "data_dir": str(tmp_path / "gw")},
        "mqtt": {"url": mosquitto.url, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "buffer": {"batch_max_delay_ms": 50},
        "metrics": {"port": 0, "publish_interval_s": 0},
        "reload": {"watch_interval_s": 0},
        "devices": [{"id": "w1", "interval_ms": 200}],
    }
    (tmp_path / "spec.json").write_bytes(orjson.dumps(spec))
    with (tmp_path / "gateway.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(MAIN), str(tmp_path / "spec.json")],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    try:
        online = "SELECT online FROM gateways WHERE enterprise_id = 'ent-w' AND id = 'gw-w'"
        wait_until(lambda: scalar(pg_url, online) is True, what="gateway online", timeout_s=30)
        up_since = time.monotonic()
        # Let it run well past its connect, so the connect time and the death time differ.
        wait_until(lambda: time.monotonic() - up_since > 6, what="6 s of service", timeout_s=10)
        proc.send_signal(signal.SIGKILL)
        killed_ms = now_ms()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_until(lambda: scalar(pg_url, online) is False, what="gateway offline", timeout_s=15)
    status_ms = scalar(
        pg_url,
        "SELECT (extract(epoch FROM status_at) * 1000)::bigint FROM gateways "
        "WHERE enterprise_id = 'ent-w' AND id = 'gw-w'",
    )
    assert abs(status_ms - killed_ms) <= 3000, f"offline at {status_ms - killed_ms} ms from kill"


def test_a_new_boot_comes_online_after_a_will_stored_at_arrival_though_its_clock_lags(
    start_ingest: Any, fake_gateway: Any, pg_url: str
) -> None:
    """The Will is stored at its arrival (the ingest's clock); a restarted gateway whose clock is
    20 s behind stamps its birth earlier than that. Boots are ordered by their start times (the
    gateway's own clock), so the birth still wins, and the old boot's late Will never does."""
    from wire import topics
    from wire.codec import encode
    from wire.payloads import GatewayStatus

    start_ingest()
    gw = fake_gateway(enterprise="ent-s", gateway="gw-s", devices=["s1"])
    topic = topics.gateway_status("ent-s", "gw-s")
    lag = 20_000
    first_start = now_ms() - lag - 60_000

    def status(boot: str, online: bool, ts_ms: int, started_ms: int, will: bool) -> bytes:
        return encode(
            GatewayStatus(
                gateway="gw-s",
                enterprise="ent-s",
                online=online,
                boot=boot,
                ts_ms=ts_ms,
                started_ms=started_ms,
                will=will,
                devices=["s1"],
            )
        )

    online = "SELECT online, boot FROM gateways WHERE enterprise_id = 'ent-s' AND id = 'gw-s'"
    gw.publish(topic, status("boot-1", True, first_start, first_start, False), retain=True)
    wait_until(lambda: scalar(pg_url, online) is True, what="first boot online")
    gw.publish(topic, status("boot-1", False, first_start, first_start, True), retain=True)
    wait_until(lambda: scalar(pg_url, online) is False, what="Will stored")
    restart = now_ms() - lag  # the gateway's clock lags the ingest's
    gw.publish(topic, status("boot-2", True, restart, restart, False), retain=True)
    wait_until(lambda: scalar(pg_url, online) is True, what="second boot online")
    # The first boot's Will delivered once more (a second worker, a redelivery) changes nothing;
    # a status of another gateway published after it shows when it has been processed.
    gw.publish(topic, status("boot-1", False, first_start, first_start, True))
    marker = encode(
        GatewayStatus(gateway="gw-t", enterprise="ent-s", online=True, boot="m", ts_ms=now_ms())
    )
    gw.publish(topics.gateway_status("ent-s", "gw-t"), marker)
    wait_until(
        lambda: scalar(pg_url, "SELECT online FROM gateways WHERE id = 'gw-t'") is True,
        what="marker applied",
    )
    assert scalar(pg_url, "SELECT boot FROM gateways WHERE id = 'gw-s'") == "boot-2"
    assert scalar(pg_url, online) is True

"""The ingest's derived ``offline`` state never shares a timestamp with a real state sample.

Regression (e2e broker-outage drill): a restarted Mosquitto publishes the Last Will of every
gateway whose session it restored; the ingest marks their devices offline "after the gateway's
last activity", which can be the very millisecond of a stored machine_state sample: two states
at one timestamp (and a row counted twice per device, signal and time).
"""

from __future__ import annotations

from typing import Any

import pytest
from ingest_support import FakeGateway, duplicate_rows, now_ms, rows, scalar, wait_until

from shulian.devservices import Mosquitto
from wire import topics
from wire.codec import encode
from wire.payloads import DeviceConnection, DeviceStatus, Sample


def test_an_offline_marker_meeting_a_state_sample_moves_one_millisecond_later(
    start_ingest, fake_gateway, pg_url
):
    start_ingest()
    gw = fake_gateway(enterprise="ent-m", gateway="gw-m", devices=["press-1"])
    gw.birth()
    t = now_ms() - 5_000
    gw.send(gw.batch([Sample(device="press-1", signal="machine_state", ts_ms=t, value="running")]))
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM device_states") == 1, what="stored")
    # The device is reported disconnected at exactly the time of its state sample.
    status = DeviceStatus(
        gateway="gw-m", device="press-1", connection=DeviceConnection.DISCONNECTED, ts_ms=t
    )
    gw.publish(topics.device_status("ent-m", "gw-m", "press-1"), encode(status), retain=True)
    wait_until(
        lambda: scalar(pg_url, "SELECT state FROM device_states") == "offline", what="offline"
    )
    stored = rows(
        pg_url,
        "SELECT (extract(epoch FROM ts) * 1000)::bigint, value_text FROM telemetry ORDER BY ts",
    )
    assert stored == [(t, "running"), (t + 1, "offline")]


def test_the_marker_also_avoids_a_state_sample_of_the_same_flush(
    start_ingest, fake_gateway, pg_url
):
    start_ingest(writer={"max_delay_ms": 1000})  # both messages land in one flush
    gw = fake_gateway(enterprise="ent-f", gateway="gw-f", devices=["press-2"])
    gw.birth()
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM devices") == 1, what="registered")
    t = now_ms() - 5_000
    sample = Sample(device="press-2", signal="machine_state", ts_ms=t, value="idle")
    status = DeviceStatus(
        gateway="gw-f", device="press-2", connection=DeviceConnection.DISCONNECTED, ts_ms=t
    )
    gw.send(gw.batch([sample]), wait=False)
    gw.publish(topics.device_status("ent-f", "gw-f", "press-2"), encode(status), retain=True)
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") == 2, what="both rows")
    stored = rows(
        pg_url,
        "SELECT (extract(epoch FROM ts) * 1000)::bigint, value_text FROM telemetry ORDER BY ts",
    )
    assert stored == [(t, "idle"), (t + 1, "offline")]


# --- issue 10: the broker-outage drill stored `running` and `offline` at one millisecond ---------
#
# Mosquitto, stopped with SIGTERM, publishes the Last Will of every connected gateway; the ingest,
# still connected for that instant, marks the gateway's devices offline at the will's arrival. The
# gateway meanwhile keeps reading: a machine_state sample it read at that very millisecond could
# not be published and comes back from its disk buffer a minute later, after the marker was
# committed. The marker's check only saw rows already stored, so the replayed sample was stored
# beside it. Whatever the order, one device has one machine_state row per millisecond.

_STATE_ROWS = (
    "SELECT (extract(epoch FROM t.ts) * 1000)::bigint, t.value_text FROM telemetry t "
    "JOIN signals s ON s.id = t.signal_id WHERE s.name = 'machine_state' ORDER BY t.ts, 2"
)


def _intervals(pg_url: str) -> list[tuple[Any, ...]]:
    return rows(
        pg_url,
        "SELECT state, (extract(epoch FROM started_at) * 1000)::bigint, "
        "(extract(epoch FROM ended_at) * 1000)::bigint FROM state_intervals ORDER BY started_at",
    )


def _derived(stored: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The intervals the raw machine_state rows describe (one row per millisecond)."""
    out: list[list[Any]] = []
    for ts, state in stored:
        if out and out[-1][0] == state:
            continue
        if out:
            out[-1][2] = ts
        out.append([state, ts, None])
    return [tuple(i) for i in out]


def _state_of(pg_url: str) -> tuple[Any, ...] | None:
    found = rows(
        pg_url,
        "SELECT state, (extract(epoch FROM since) * 1000)::bigint, "
        "(extract(epoch FROM last_ts) * 1000)::bigint FROM device_states",
    )
    return found[0] if found else None


@pytest.mark.timeout(120)
def test_broker_outage_a_replayed_state_sample_at_the_wills_millisecond_is_stored_once(
    start_ingest, mosquitto: Mosquitto, pg_url
):
    service = start_ingest()
    assert service.consumer is not None
    gw = FakeGateway(mosquitto.url, "ent-o", "gw-o", ["press-9"])
    gw.will = gw.status(online=False)
    gw.connect()
    gw.birth()
    t = now_ms() - 2_000
    gw.send(gw.batch([Sample(device="press-9", signal="machine_state", ts_ms=t, value="running")]))
    wait_until(lambda: _state_of(pg_url) is not None, what="the state stored")
    # The broker stops: it publishes the gateway's will, the ingest marks press-9 offline.
    mosquitto.stop()
    wait_until(lambda: (_state_of(pg_url) or ("",))[0] == "offline", what="the will's marker")
    [(marker_ms, _)] = [r for r in rows(pg_url, _STATE_ROWS) if r[1] == "offline"]
    gw.close()
    mosquitto.start()
    wait_until(service.consumer.subscribed.is_set, timeout_s=30, what="the ingest back")
    # The gateway reconnects and replays its buffer: it had read press-9 at that millisecond.
    back = FakeGateway(mosquitto.url, "ent-o", "gw-o", ["press-9"], boot=gw.boot, seq=gw.seq)
    back.connect()
    try:
        back.birth()
        replay = [
            Sample(device="press-9", signal="machine_state", ts_ms=marker_ms, value="running"),
            Sample(device="press-9", signal="machine_state", ts_ms=marker_ms + 260, value="idle"),
        ]
        back.send(back.batch(replay, historical=True))
        wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") >= 4, what="the replay")
    finally:
        back.close()
    stored = rows(pg_url, _STATE_ROWS)
    assert duplicate_rows(pg_url) == 0, stored
    assert stored == [
        (t, "running"),
        (marker_ms, "running"),
        (marker_ms + 1, "offline"),
        (marker_ms + 260, "idle"),
    ]
    assert _intervals(pg_url) == _derived(stored)
    assert _state_of(pg_url) == ("idle", marker_ms + 260, marker_ms + 260)


@pytest.mark.parametrize("marker_first", [True, False], ids=["marker-first", "sample-first"])
def test_a_marker_and_a_state_sample_at_one_millisecond_store_the_same_rows_in_either_order(
    start_ingest, fake_gateway, pg_url, marker_first: bool
):
    start_ingest()
    gw = fake_gateway(enterprise="ent-x", gateway="gw-x", devices=["press-3"])
    gw.birth()
    t = now_ms() - 20_000
    gw.send(gw.batch([Sample(device="press-3", signal="machine_state", ts_ms=t, value="idle")]))
    wait_until(lambda: _state_of(pg_url) is not None, what="the first state")
    x = t + 5_000
    status = DeviceStatus(
        gateway="gw-x", device="press-3", connection=DeviceConnection.DISCONNECTED, ts_ms=x
    )
    late = gw.batch(
        [Sample(device="press-3", signal="machine_state", ts_ms=x, value="running")],
        historical=True,
    )
    topic = topics.device_status("ent-x", "gw-x", "press-3")
    if marker_first:
        gw.publish(topic, encode(status), retain=True)
        wait_until(lambda: (_state_of(pg_url) or ("",))[0] == "offline", what="the marker")
        gw.send(late)
    else:
        gw.send(late)
        wait_until(lambda: (_state_of(pg_url) or ("",))[0] == "running", what="the sample")
        gw.publish(topic, encode(status), retain=True)
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") >= 3, what="all rows")
    wait_until(lambda: (_state_of(pg_url) or ("",))[0] == "offline", what="offline at the end")
    stored = rows(pg_url, _STATE_ROWS)
    assert stored == [(t, "idle"), (x, "running"), (x + 1, "offline")]
    assert _intervals(pg_url) == _derived(stored)
    assert _state_of(pg_url) == ("offline", x + 1, x + 1)
    current = scalar(
        pg_url,
        "SELECT (extract(epoch FROM ts) * 1000)::bigint FROM current_values c "
        "JOIN signals s ON s.id = c.signal_id WHERE s.name = 'machine_state'",
    )
    assert current == x + 1


def test_a_disconnect_delivered_again_after_an_ingest_restart_writes_no_second_marker(
    start_ingest, fake_gateway, pg_url
):
    first = start_ingest()
    gw = fake_gateway(enterprise="ent-r", gateway="gw-r", devices=["press-4"])
    gw.birth()
    t = now_ms() - 30_000
    state = "machine_state"
    gw.send(gw.batch([Sample(device="press-4", signal=state, ts_ms=t, value="running")]))
    wait_until(lambda: _state_of(pg_url) is not None, what="the first state")
    status = DeviceStatus(
        gateway="gw-r", device="press-4", connection=DeviceConnection.DISCONNECTED, ts_ms=t + 1000
    )
    gw.publish(topics.device_status("ent-r", "gw-r", "press-4"), encode(status), retain=True)
    wait_until(lambda: (_state_of(pg_url) or ("",))[0] == "offline", what="the marker")
    # The device is back (its gateway reads it again) before the ingest restarts.
    gw.send(gw.batch([Sample(device="press-4", signal=state, ts_ms=t + 2000, value="idle")]))
    wait_until(lambda: (_state_of(pg_url) or ("",))[0] == "idle", what="back")
    first.stop()
    # Restarted with its client id, the ingest subscribes again and the broker hands it the
    # retained disconnect once more; the batch after it, on the same lane, is stored only once
    # the status before it was applied.
    start_ingest(mqtt={"client_id": first.settings.mqtt.client_id})
    gw.send(gw.batch([Sample(device="press-4", signal=state, ts_ms=t + 3000, value="running")]))
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") >= 4, what="stored")
    stored = rows(pg_url, _STATE_ROWS)
    assert stored == [
        (t, "running"),
        (t + 1000, "offline"),
        (t + 2000, "idle"),
        (t + 3000, "running"),
    ]
    assert _intervals(pg_url) == _derived(stored)

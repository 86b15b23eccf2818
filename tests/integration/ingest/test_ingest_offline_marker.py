"""The ingest's derived ``offline`` state never shares a timestamp with a real state sample.

Regression (e2e broker-outage drill): a restarted Mosquitto publishes the Last Will of every
gateway whose session it restored; the ingest marks their devices offline "after the gateway's
last activity", which can be the very millisecond of a stored machine_state sample: two states
at one timestamp (and a row counted twice per device, signal and time).
"""

from __future__ import annotations

from ingest_support import now_ms, rows, scalar, wait_until

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

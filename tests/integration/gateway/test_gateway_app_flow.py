"""The gateway core end to end in one process: fake devices -> pipeline -> disk buffer -> real Mosquitto."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from gateway_fakes import eventually as wait_until_async
from gateway_fakes import fake_app, fake_settings, make_device

from shulian.devservices import Mosquitto
from wire.codec import decode_batch, decode_device_status, decode_status
from wire.payloads import DeviceConnection


async def test_batches_reach_the_broker_in_seq_order_with_status(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    telemetry = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/#")
    devices = [make_device("m1"), make_device("m2")]
    app = fake_app(fake_settings(mosquitto.url, tmp_path / "gw"), devices)
    await app.start()
    try:

        def batches() -> list[Any]:
            return [
                decode_batch(m.payload)
                for m in telemetry.snapshot()
                if m.topic.endswith("telemetry")
            ]

        await wait_until_async(lambda: len(batches()) >= 5, timeout_s=10, what="five batches")
        got = batches()
        assert [b.seq for b in got] == list(range(1, len(got) + 1))
        assert {b.boot for b in got} == {app.boot}
        signals = {(s.device, s.signal) for b in got for s in b.samples}
        assert ("m1", "part_count") in signals and ("m2", "machine_state") in signals
        states = {s.value for b in got for s in b.samples if s.signal == "machine_state"}
        assert states <= {"off", "idle", "running"}

        status = [m for m in telemetry.snapshot() if m.topic.endswith("gw-1/status")]
        assert status and decode_status(status[0].payload).online
        assert decode_status(status[0].payload).config_hash == app.config_hash
        dev = [
            decode_device_status(m.payload)
            for m in telemetry.snapshot()
            if m.topic.endswith("devices/m1/status")
        ]
        assert dev and dev[-1].connection is DeviceConnection.CONNECTED
        await wait_until_async(
            lambda: (
                app.buffer.last_stats.batches == 0 or app.metrics.publisher.batches_published > 0
            ),
            what="acks",
        )
    finally:
        await app.stop()
    last = orjson.loads(
        [m for m in telemetry.snapshot() if m.topic.endswith("gw-1/status")][-1].payload
    )
    assert last["online"] is False

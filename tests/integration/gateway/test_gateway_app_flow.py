"""The gateway core end to end in one process: fake devices -> pipeline -> disk buffer -> real Mosquitto."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from gateway_fakes import FakeDriver, make_device, world
from gateway_fakes import eventually as wait_until_async

from gateway.app import GatewayApp
from gateway.profiles.loader import Site
from gateway.scheduler import Backoff
from gateway.settings import build_settings
from shulian.devservices import Mosquitto
from wire.codec import decode_batch, decode_device_status, decode_status
from wire.payloads import DeviceConnection


def gateway_settings(broker: Mosquitto, data_dir: Path, **sections: Any) -> Any:
    data: dict[str, Any] = {
        "gateway": {"id": "gw-1", "enterprise": "ent-a", "data_dir": str(data_dir)},
        "mqtt": {"url": broker.url, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
        "buffer": {"batch_max_delay_ms": 50},
        "metrics": {"port": 0, "publish_interval_s": 0},
        "reload": {"watch_interval_s": 0},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return build_settings(data)


def fast_app(settings: Any, devices: list[Any]) -> GatewayApp:
    site = Site(file="test-site.yaml", settings={}, devices=devices)
    return GatewayApp(
        settings,
        site,
        driver_for=lambda _protocol: FakeDriver,
        device_backoff=Backoff(0.05, 0.2),
    )


async def test_batches_reach_the_broker_in_seq_order_with_status(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    telemetry = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/#")
    devices = [make_device("m1"), make_device("m2")]
    for d in devices:
        world(d.id).__init__()  # type: ignore[misc]  # fresh fake state
    app = fast_app(gateway_settings(mosquitto, tmp_path / "gw"), devices)
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

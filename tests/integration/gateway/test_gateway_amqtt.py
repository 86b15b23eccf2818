"""The demo's fallback broker: amqtt speaks MQTT 3.1.1 only; the gateway finds that out by itself."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from gateway_fakes import eventually, fake_app, fake_settings, make_device

from shulian.devservices import free_port

amqtt_broker = pytest.importorskip("amqtt.broker")


@pytest.mark.timeout(60)
async def test_gateway_falls_back_to_mqtt_311_on_amqtt(tmp_path: Path) -> None:
    port = free_port()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        broker = amqtt_broker.Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                "auth": {"allow-anonymous": True},
            }
        )
    await broker.start()
    settings = fake_settings(f"mqtt://127.0.0.1:{port}", tmp_path / "gw")
    assert settings.mqtt.protocol == "auto"
    app = fake_app(settings, [make_device("a1")])
    await app.start()
    try:
        await eventually(
            lambda: app.metrics.publisher.batches_published >= 3, what="acks", timeout_s=30
        )
        assert app.publisher.protocol == "3.1.1"
    finally:
        await app.stop()
        await broker.shutdown()

"""Health figures: the Prometheus endpoint and GatewayMetrics over MQTT."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import orjson
from gateway_fakes import eventually, fake_app, fake_settings, make_device

from shulian.devservices import Mosquitto, free_port


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


async def test_prometheus_endpoint_and_mqtt_metrics(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    import asyncio

    port = free_port()
    sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/metrics")
    collect(mosquitto.url, "shulian/v1/ent-a/gw-1/telemetry")  # batches count once routed
    settings = fake_settings(
        mosquitto.url, tmp_path / "gw", metrics={"port": port, "publish_interval_s": 0.2}
    )
    app = fake_app(settings, [make_device("p1"), make_device("p2")])
    await app.start()
    try:
        await eventually(lambda: app.metrics.publisher.points_published > 20, what="traffic")
        text = await asyncio.to_thread(scrape, port)
        for name in (
            "shulian_gateway_points_read_total",
            "shulian_gateway_points_published_total",
            "shulian_gateway_read_errors_total",
            "shulian_gateway_reconnects_total",
            "shulian_gateway_poll_latency_seconds_bucket",
            "shulian_gateway_buffer_batches",
            "shulian_gateway_buffer_bytes",
            "shulian_gateway_buffer_dropped_samples_total",
            "shulian_gateway_device_connected",
        ):
            assert name in text, name
        assert 'shulian_gateway_points_read_total{device="p1",driver="fake"}' in text
        assert "signal=" not in text, "never labelled by signal"
        read_line = next(
            line
            for line in text.splitlines()
            if line.startswith('shulian_gateway_points_read_total{device="p1"')
        )
        assert float(read_line.split()[-1]) > 0

        await eventually(lambda: len(sub.snapshot()) >= 2, what="two GatewayMetrics messages")
        figures = orjson.loads(sub.snapshot()[-1].payload)["figures"]
        assert figures["points_read_total"] > 0 and figures["devices"] == 2
        assert figures["mqtt_connected"] == 1.0 and "points_read_per_s" in figures
    finally:
        await app.stop()

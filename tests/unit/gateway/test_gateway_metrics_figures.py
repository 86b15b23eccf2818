"""The GatewayMetrics figures the fleet console reads: buffer depth and per-device read rates."""

from __future__ import annotations

import time

import pytest

from gateway.buffer import BufferStats
from gateway.drivers.base import DriverMetrics
from gateway.metrics import GatewayMetricsHub
from gateway.pipeline import DeviceCounters
from wire.payloads import DEVICE_READ_RATE


def test_figures_carry_buffer_depth_oldest_age_and_each_devices_read_rate() -> None:
    oldest_ms = int(time.time() * 1000) - 90_000
    hub = GatewayMetricsHub(
        buffer_stats=lambda: BufferStats(3, 4096, 120, 0, 7, oldest_ms),
        buffer_max_bytes=1_000_000,
    )
    lathe, press = DeviceCounters(), DeviceCounters()
    hub.add_device("lathe-1", "modbus", lathe, DriverMetrics(), lambda: True)
    hub.add_device("press-1", "modbus", press, DriverMetrics(), lambda: False)

    first = hub.figures()
    assert (first["buffer_samples"], first["buffer_bytes"], first["buffer_max_bytes"]) == (
        120,
        4096,
        1_000_000,
    )
    assert first["buffer_dropped_samples_total"] == 7
    assert first["buffer_oldest_age_s"] == pytest.approx(90, abs=2)
    assert not any(k.startswith(DEVICE_READ_RATE) for k in first)  # no span to rate over yet

    lathe.points_read += 500
    time.sleep(0.2)
    second = hub.figures()
    assert second[DEVICE_READ_RATE + "lathe-1"] > 0
    assert second[DEVICE_READ_RATE + "press-1"] == 0
    assert second[DEVICE_READ_RATE + "lathe-1"] == pytest.approx(
        second["points_read_per_s"], rel=0.01
    )


def test_an_empty_buffer_has_no_oldest_age() -> None:
    hub = GatewayMetricsHub(buffer_stats=lambda: BufferStats(0, 0, 0, 0, 0, None))
    assert "buffer_oldest_age_s" not in hub.figures()

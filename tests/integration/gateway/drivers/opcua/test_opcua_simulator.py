"""The driver against the project's OPC UA simulator: node ids by namespace URI, browse paths,
source timestamps passed through exactly, and a simulator restart survived."""

from __future__ import annotations

import asyncio
import time

import pytest
from opcua_server_fixture import make_driver, wait_until_async

from gateway.drivers.base import RawReading
from gateway.drivers.opcua.models import OpcUaProfile
from gateway.errors import DriverError
from gateway.profiles.models import GroupSpec
from shulian.devservices import free_port
from simulators.machines.raceway_grinder import MAP
from simulators.opcua_server import NAMESPACE_URI, OpcUaServer

DEVICE = "grinder-07"
GROUP = GroupSpec(name="fast", interval_ms=200)
SPEED = next(v for v in MAP.variables if v.path == "WheelSpindle/Speed")
LOAD = next(v for v in MAP.variables if v.path == "WheelSpindle/Load")


def simulator_profile() -> OpcUaProfile:
    return OpcUaProfile.model_validate(
        {
            "id": "sim-grinder",
            "protocol": "opcua",
            "groups": [{"name": "fast", "interval_ms": 200}],
            "signals": [
                {
                    "name": "spindle_speed",
                    "group": "fast",
                    "node_id": f"nsu={NAMESPACE_URI};s={SPEED.node_id(DEVICE)}",
                },
                {
                    "name": "spindle_load",
                    "group": "fast",
                    "browse_path": f"0:Objects/2:{DEVICE}/2:WheelSpindle/2:Load",
                },
            ],
            "opcua": {"keepalive_s": 0.5, "timeout_s": 1.0},
        }
    )


async def test_simulator_values_and_timestamps_arrive_and_survive_a_restart() -> None:
    server = OpcUaServer("127.0.0.1", free_port(), "opcua-driver-test")
    server.add_machine(DEVICE, MAP)
    await server.start()
    readings: list[RawReading] = []
    driver = make_driver(server.url, simulator_profile(), device_id=DEVICE)
    try:
        stamp = int(time.time() * 1000) - 1234
        await server.write(DEVICE, SPEED, 23456.5, stamp)
        await server.write(DEVICE, LOAD, 42.0, stamp)
        await driver.connect()
        await driver.subscribe(GROUP, readings.extend)
        await wait_until_async(
            lambda: (
                {("spindle_speed", 23456.5), ("spindle_load", 42.0)}
                <= {(r.signal, r.raw) for r in readings}
            ),
            what="both simulator values",
        )
        first = next(r for r in readings if r.raw == 23456.5)
        assert first.ts_ms == stamp, "the simulator's source timestamp, not the gateway's clock"

        watch = asyncio.create_task(driver.watch())
        await asyncio.sleep(0)
        await server.stop()
        with pytest.raises(DriverError, match="session lost"):
            await asyncio.wait_for(watch, timeout=5)
        await driver.close()
        await server.start()
        await server.write(DEVICE, SPEED, 24000.0, int(time.time() * 1000))
        await driver.connect()
        await driver.subscribe(GROUP, readings.extend)
        await wait_until_async(
            lambda: 24000.0 in [r.raw for r in readings], what="data after the restart"
        )
    finally:
        await driver.close()
        await server.stop()

"""The driver against a real asyncua server: subscriptions, deadbands, browse paths, reads."""

from __future__ import annotations

import time

import pytest
from opcua_server_fixture import (
    GrinderServer,
    grinder_profile,
    make_driver,
    module_grinder,
    shared_grinder,
    wait_until_async,
)

from gateway.drivers.base import RawReading
from gateway.profiles.models import GroupSpec
from wire.payloads import Quality

__all__ = ["module_grinder", "shared_grinder"]  # fixtures, used by name
pytestmark = pytest.mark.asyncio(loop_scope="module")

FAST = GroupSpec(name="fast", interval_ms=100)


class Collector:
    def __init__(self) -> None:
        self.readings: list[RawReading] = []
        self.calls = 0

    def __call__(self, readings: list[RawReading]) -> None:
        self.calls += 1
        self.readings.extend(readings)

    def values(self, signal: str) -> list[object]:
        return [r.raw for r in self.readings if r.signal == signal]


async def test_subscription_delivers_initial_values_then_changes_within_the_interval(
    shared_grinder: GrinderServer,
) -> None:
    driver = make_driver(shared_grinder.endpoint, grinder_profile())
    sink = Collector()
    async with driver:
        await driver.subscribe(FAST, sink)
        await wait_until_async(
            lambda: 1480.0 in sink.values("spindle_speed") and 7 in sink.values("part_count"),
            timeout_s=5,
            what="initial values of both signals",
        )
        started = time.monotonic()
        await shared_grinder.write("SpindleSpeed", 1512.5)
        await wait_until_async(
            lambda: 1512.5 in sink.values("spindle_speed"), timeout_s=5, what="the change"
        )
        latency = time.monotonic() - started
    assert latency < 1.0, f"change took {latency:.2f} s with a 100 ms publishing interval"
    reading = next(r for r in sink.readings if r.raw == 1512.5)
    assert reading.quality is Quality.GOOD and reading.reason is None
    assert abs(reading.ts_ms - time.time() * 1000) < 10_000, "source timestamp in epoch ms"


async def test_deadband_filters_small_changes_on_the_server(shared_grinder: GrinderServer) -> None:
    profile = grinder_profile(
        [
            {
                "name": "spindle_speed",
                "node_id": "ns=2;s=Grinder.SpindleSpeed",
                "group": "fast",
                "data_change_deadband": 10.0,
            }
        ]
    )
    driver = make_driver(shared_grinder.endpoint, profile)
    sink = Collector()
    async with driver:
        await driver.subscribe(FAST, sink)
        await wait_until_async(lambda: sink.values("spindle_speed"), what="initial value")
        for value in (1482.0, 1485.0, 1489.0):  # all within 10 of 1480
            await shared_grinder.write("SpindleSpeed", value)
        await shared_grinder.write("SpindleSpeed", 1500.0)  # 20 away: reported
        await wait_until_async(lambda: 1500.0 in sink.values("spindle_speed"), what="big change")
    assert sink.values("spindle_speed") == [1480.0, 1500.0]


async def test_browse_path_and_bad_addresses_become_bad_readings_not_failures(
    shared_grinder: GrinderServer,
) -> None:
    profile = grinder_profile(
        [
            {
                "name": "part_count",
                "browse_path": "0:Objects/2:Grinder/2:PartCount",
                "group": "fast",
            },
            {"name": "spindle_speed", "node_id": "ns=2;s=Grinder.NoSuchNode", "group": "fast"},
            {
                "name": "spindle_load",
                "browse_path": "0:Objects/2:Grinder/2:Missing",
                "group": "fast",
            },
            {
                "name": "program_name",
                "node_id": "nsu=urn:shulian:test:grinder;s=Grinder.Program",
                "group": "fast",
            },
        ]
    )
    driver = make_driver(shared_grinder.endpoint, profile)
    sink = Collector()
    async with driver:
        await driver.subscribe(FAST, sink)
        await wait_until_async(
            lambda: 7 in sink.values("part_count") and "O1234" in sink.values("program_name"),
            what="the resolvable signals",
        )
        await shared_grinder.write("PartCount", 8)
        await wait_until_async(lambda: 8 in sink.values("part_count"), what="a counter change")
    bad = {r.signal: r for r in sink.readings if r.quality is Quality.BAD}
    assert bad["spindle_speed"].reason == "BadNodeIdUnknown"
    assert "browse path 0:Objects/2:Grinder/2:Missing: step 3 '2:Missing' not found" in str(
        bad["spindle_load"].reason
    )


async def test_read_returns_every_signal_once_with_quality(shared_grinder: GrinderServer) -> None:
    profile = grinder_profile(
        [
            {"name": "spindle_speed", "node_id": "ns=2;s=Grinder.SpindleSpeed", "group": "fast"},
            {
                "name": "part_count",
                "browse_path": "/0:Objects/2:Grinder/2:PartCount",
                "group": "fast",
            },
            {"name": "machine_state", "node_id": "ns=2;s=Grinder.State", "group": "fast"},
            {"name": "spindle_load", "node_id": "ns=2;i=999999", "group": "fast"},
        ]
    )
    driver = make_driver(shared_grinder.endpoint, profile)
    async with driver:
        result = await driver.read(FAST)
    by_signal = {r.signal: r for r in result.readings}
    assert [r.signal for r in result.readings] == [
        "spindle_speed",
        "part_count",
        "machine_state",
        "spindle_load",
    ]
    assert by_signal["spindle_speed"].raw == 1480.0
    assert by_signal["part_count"].raw == 7
    assert by_signal["machine_state"].raw == 1
    assert all(by_signal[s].quality is Quality.GOOD for s in ("spindle_speed", "part_count"))
    assert by_signal["spindle_load"].quality is Quality.BAD
    assert by_signal["spindle_load"].reason == "BadNodeIdUnknown"
    assert result.requests == 1

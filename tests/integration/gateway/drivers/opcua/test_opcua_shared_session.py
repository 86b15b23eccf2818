"""Devices on one server share a session and a subscription, yet each keeps its own data,
its own errors and its own lifetime."""

from __future__ import annotations

import asyncio

from opcua_server_fixture import (
    GrinderServer,
    grinder,
    grinder_profile,
    make_driver,
    wait_until_async,
)

from gateway.drivers.base import RawReading
from gateway.drivers.opcua.transport import session_pool
from gateway.errors import DeviceUnreachableError
from gateway.profiles.models import GroupSpec
from shulian.devservices import free_port

__all__ = ["grinder"]  # fixtures, used by name

FAST = GroupSpec(name="fast", interval_ms=100)
SPEED = [{"name": "spindle_speed", "node_id": "ns=2;s=Grinder.SpindleSpeed", "group": "fast"}]
COUNT = [{"name": "part_count", "browse_path": "0:Objects/2:Grinder/2:PartCount", "group": "fast"}]


class Sink:
    def __init__(self) -> None:
        self.readings: list[RawReading] = []

    def __call__(self, readings: list[RawReading]) -> None:
        self.readings.extend(readings)

    def values(self, signal: str) -> list[object]:
        return [r.raw for r in self.readings if r.signal == signal]


async def test_two_devices_share_one_session_and_subscription_and_get_only_their_items(
    grinder: GrinderServer,
) -> None:
    speed = make_driver(grinder.endpoint, grinder_profile(SPEED), device_id="grinder-01")
    count = make_driver(grinder.endpoint, grinder_profile(COUNT), device_id="grinder-02")
    speed_sink, count_sink = Sink(), Sink()
    async with speed, count:
        first = await speed.subscribe(FAST, speed_sink)
        second = await count.subscribe(FAST, count_sink)
        assert session_pool().sessions() == 1
        assert first._subscription is not None and second._subscription is not None
        assert first._subscription.subscription_id == second._subscription.subscription_id
        await wait_until_async(
            lambda: speed_sink.values("spindle_speed") and count_sink.values("part_count"),
            timeout_s=5,
            what="each device's initial value",
        )
        await grinder.write("SpindleSpeed", 1600.0)
        await wait_until_async(
            lambda: 1600.0 in speed_sink.values("spindle_speed"), timeout_s=5, what="the change"
        )
    assert {r.signal for r in speed_sink.readings} == {"spindle_speed"}
    assert {r.signal for r in count_sink.readings} == {"part_count"}
    assert session_pool().sessions() == 0, "the last device to leave closed the session"


async def test_a_device_that_leaves_does_not_disturb_the_other(grinder: GrinderServer) -> None:
    staying = make_driver(grinder.endpoint, grinder_profile(SPEED), device_id="grinder-01")
    leaving = make_driver(grinder.endpoint, grinder_profile(COUNT), device_id="grinder-02")
    sink = Sink()
    async with staying:
        await staying.subscribe(FAST, sink)
        await leaving.connect()
        handle = await leaving.subscribe(FAST, Sink())
        await handle.cancel()  # what the scheduler does when a device is removed or restarted
        await leaving.close()
        assert session_pool().sessions() == 1
        await grinder.write("SpindleSpeed", 1700.0)
        await wait_until_async(
            lambda: 1700.0 in sink.values("spindle_speed"),
            timeout_s=5,
            what="data for the device that stayed",
        )


async def test_each_device_waiting_on_a_failed_open_hears_it_in_its_own_name() -> None:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    drivers = [
        make_driver(endpoint, grinder_profile(SPEED), device_id=f"grinder-0{n}") for n in (1, 2)
    ]
    results = await asyncio.gather(*(d.connect() for d in drivers), return_exceptions=True)
    for driver, result in zip(drivers, results, strict=True):
        assert isinstance(result, DeviceUnreachableError), result
        assert str(result).startswith(f"{driver.device.id} (")
        assert "connection refused" in str(result)
    assert session_pool().sessions() == 0


async def test_losing_the_shared_session_reaches_every_device(grinder: GrinderServer) -> None:
    drivers = [
        make_driver(grinder.endpoint, grinder_profile(SPEED), device_id=f"grinder-0{n}")
        for n in (1, 2)
    ]
    for driver in drivers:
        await driver.connect()
        await driver.subscribe(FAST, Sink())
    watches = [asyncio.create_task(d.watch()) for d in drivers]
    await grinder.stop()
    done, _ = await asyncio.wait(watches, timeout=10)
    assert len(done) == 2, "both devices noticed the lost session"
    for driver, task in zip(drivers, watches, strict=True):
        error = task.exception()
        assert isinstance(error, DeviceUnreachableError)
        assert str(error).startswith(f"{driver.device.id} (")
        await driver.close()
    assert session_pool().sessions() == 0

"""Scheduler pieces: bus keys, backoff, poll timers that skip (not queue) overrun cycles."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from gateway_fakes import FakeDriver, eventually, make_device, make_profile, world

from gateway.normalize import compile_device
from gateway.pipeline import Batcher, DeviceCounters, DevicePipeline
from gateway.rbe import ReportByException
from gateway.scheduler import Backoff, DeviceRunner, Scheduler, bus_key
from wire.payloads import DeviceConnection, DeviceStatus


def test_serial_endpoints_share_a_bus_lock_tcp_devices_do_not() -> None:
    rtu_a = make_device("a", endpoint="rtu:///dev/ttyUSB0?baudrate=9600")
    rtu_b = make_device("b", endpoint="rtu:///dev/ttyUSB0?baudrate=19200")
    tcp = make_device("c", endpoint="tcp://10.0.0.5:502")
    assert bus_key(rtu_a, FakeDriver) == bus_key(rtu_b, FakeDriver) == "rtu:///dev/ttyUSB0"
    assert bus_key(tcp, FakeDriver) is None
    scheduler = Scheduler()
    assert scheduler.bus_lock(rtu_a, FakeDriver) is scheduler.bus_lock(rtu_b, FakeDriver)


def test_a_driver_that_serializes_requests_gets_no_cycle_lock() -> None:
    class Serializing(FakeDriver):
        serializes_requests: ClassVar[bool] = True

    device = make_device("a", endpoint="rtu+tcp://10.0.0.9:4001")
    assert bus_key(device, Serializing) is None


def test_backoff_grows_with_jitter_and_caps() -> None:
    backoff = Backoff(1.0, 30.0)
    assert 0.8 <= backoff.delay(0) <= 1.2
    assert 6.4 <= backoff.delay(3) <= 9.6
    assert all(backoff.delay(50) <= 30.0 for _ in range(20))


def test_backoff_default_cap_is_ten_seconds_jitter_included() -> None:
    delays = [Backoff().delay(attempt) for attempt in range(30) for _ in range(10)]
    assert max(delays) <= 10.0
    assert sum(d >= 8.0 for d in delays) > 100  # the cap is reached, not an accident


def runner_for(device: Any, statuses: list[DeviceStatus], sealed: list[Any]) -> DeviceRunner:
    batcher = Batcher("boot", 1000, 10, sealed.append)
    pipeline = DevicePipeline(
        compile_device(device), ReportByException(device.profile), batcher, DeviceCounters()
    )
    return DeviceRunner(
        device, FakeDriver, pipeline, statuses.append, gateway="gw", backoff=Backoff(0.01, 0.05)
    )


async def test_slow_cycles_are_skipped_not_queued() -> None:
    device = make_device("slow", profile=make_profile(interval_ms=50))
    state = world("slow")
    state.__init__()  # type: ignore[misc]  # fresh state

    statuses: list[DeviceStatus] = []
    runner = runner_for(device, statuses, [])
    original = FakeDriver.read

    async def read_slowly(self: FakeDriver, group: Any) -> Any:
        await asyncio.sleep(0.12)  # each cycle takes ~2.4 intervals
        return await original(self, group)

    FakeDriver.read = read_slowly  # type: ignore[method-assign]
    try:
        runner.start()
        await eventually(lambda: state.reads >= 4, what="a few slow reads")
        await runner.stop()
    finally:
        FakeDriver.read = original  # type: ignore[method-assign]
    assert runner.counters.overruns >= 2 * (state.reads - 1)
    assert runner.counters.read_cycles == state.reads
    assert statuses[0].connection is DeviceConnection.CONNECTED
    # What the ingest measures completeness against: heartbeat 60 s + the 50 ms poll interval.
    assert statuses[0].max_silence_s == dict.fromkeys(
        ("machine_state", "part_count", "spindle_speed"), 60.05
    )


async def test_pipeline_samples_reach_the_batcher_and_status_goes_connected() -> None:
    device = make_device("quick", profile=make_profile(interval_ms=20))
    world("quick").__init__()  # type: ignore[misc]
    statuses: list[DeviceStatus] = []
    sealed: list[Any] = []
    runner = runner_for(device, statuses, sealed)
    runner.start()
    try:
        await eventually(lambda: len(sealed) >= 3, what="sealed batches")
    finally:
        await runner.stop()
    assert [b.seq for b in sealed[:3]] == [1, 2, 3]
    assert runner.is_connected and statuses[-1].connection is DeviceConnection.CONNECTED


def test_devices_a_driver_keys_together_poll_at_one_phase_others_spread() -> None:
    class Bursting(FakeDriver):
        @staticmethod
        def poll_phase_key(device: Any) -> str | None:
            return "tcp://10.0.0.5:502" if device.id.startswith("unit") else None

    profile = make_profile(interval_ms=1000)
    phases = {}
    for device_id in ("unit-1", "unit-2", "unit-3", "alone-1", "alone-2"):
        device = make_device(device_id, profile=profile)
        pipeline = DevicePipeline(
            compile_device(device),
            ReportByException(profile),
            Batcher("boot", 1000, 10, lambda _b: None),
            DeviceCounters(),
        )
        runner = DeviceRunner(device, Bursting, pipeline, lambda _s: None, gateway="gw")
        phases[device_id] = [runner._phase(group) for group in runner.groups]

    assert phases["unit-1"] == phases["unit-2"] == phases["unit-3"]
    assert phases["alone-1"] != phases["alone-2"]
    assert all(0 <= p < 1.0 for ps in phases.values() for p in ps)

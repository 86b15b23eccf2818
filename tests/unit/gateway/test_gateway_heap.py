"""Garbage a closed device session leaves in reference cycles is collected soon, in one go.

bench/soak.py found the gateway's RSS creeping over hundreds of OPC UA server restarts (+1.55 MB
over the last half of 360 events): each closed session's asyncua client lived on in cycles that
the oldest generation, collected rarely once start-up is frozen, kept for minutes.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from gateway_fakes import FakeDriver, eventually, make_device, make_profile, world

from gateway import heap, scheduler
from gateway.heap import CycleCollector
from gateway.normalize import compile_device
from gateway.pipeline import Batcher, DeviceCounters, DevicePipeline
from gateway.rbe import ReportByException
from gateway.scheduler import Backoff, DeviceRunner


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """Only explicit collections free cycles while a test runs (as for objects in the oldest
    generation of a gateway that froze its start-up heap)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_burst_of_ended_sessions_gets_one_collection_that_frees_cycles(
    no_automatic_gc: None,
) -> None:
    collector = CycleCollector(delay_s=0.05)
    garbage = _Cycle()
    gone = weakref.ref(garbage)
    del garbage
    for _ in range(5):  # every device of a restarted server ends its session
        collector.session_ended()
    assert gone() is not None  # not at once: the closed session's tasks finish first
    await asyncio.sleep(0.2)
    assert gone() is None
    assert collector.collections == 1
    collector.session_ended()
    await asyncio.sleep(0.2)
    assert collector.collections == 2


class _CyclicDriver(FakeDriver):
    """A driver that, like asyncua's client, ends its life in a reference cycle."""

    alive: ClassVar[list[weakref.ref[Any]]] = []

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.me = self
        _CyclicDriver.alive.append(weakref.ref(self))


async def test_drivers_of_failed_sessions_are_collected_while_the_device_retries(
    no_automatic_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = CycleCollector(delay_s=0.02)
    monkeypatch.setattr(scheduler, "CYCLES", collector, raising=False)
    monkeypatch.setattr(heap, "CYCLES", collector)
    device = make_device("restarting", profile=make_profile(interval_ms=20))
    state = world("restarting")
    state.__init__()  # type: ignore[misc]  # fresh state
    state.is_unreachable = (
        True  # every connect fails: a session per retry, as while a server is down
    )
    _CyclicDriver.alive.clear()
    batcher = Batcher("boot", 1000, 10, lambda batch: None)
    pipeline = DevicePipeline(
        compile_device(device), ReportByException(device.profile), batcher, DeviceCounters()
    )
    runner = DeviceRunner(
        device, _CyclicDriver, pipeline, lambda status: None, gateway="gw",
        backoff=Backoff(0.01, 0.02),
    )  # fmt: skip
    runner.start()
    try:
        await eventually(lambda: len(_CyclicDriver.alive) >= 10, what="ten failed sessions")
        await eventually(lambda: collector.collections >= 2, timeout_s=3, what="collections")
    finally:
        await runner.stop()
    freed = sum(ref() is None for ref in _CyclicDriver.alive)
    assert freed >= len(_CyclicDriver.alive) - 3, (freed, len(_CyclicDriver.alive))

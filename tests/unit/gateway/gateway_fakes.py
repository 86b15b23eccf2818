"""A fake protocol driver and device builders for the gateway core's tests (no network).

``FakeDriver`` implements the Driver protocol for POLL; ``FakeSubscribeDriver`` for SUBSCRIBE.
Each device's behaviour lives in ``WORLD[device_id]`` so a test can make it fail, hang or recover.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from support import wait_until, wait_until_async

from gateway.drivers.base import (
    Capability,
    DriverBase,
    DriverMetrics,
    Problem,
    RawReading,
    RawValue,
    ReadingSink,
    ReadResult,
)
from gateway.drivers.modbus.models import ModbusProfile, ModbusSignal
from gateway.errors import DeviceTimeoutError, DeviceUnreachableError
from gateway.profiles.models import DeviceConfig, GroupSpec
from wire.payloads import MachineState


@dataclass
class FakeDevice:
    """What a fake device does; tests flip the flags while the gateway runs."""

    values: dict[str, RawValue] = field(default_factory=dict)
    is_unreachable: bool = False
    is_hanging: bool = False
    connects: int = 0
    closes: int = 0
    reads: int = 0
    sinks: list[ReadingSink] = field(default_factory=list)
    lost: asyncio.Event | None = None
    generate: Callable[[str, int], RawValue] | None = None
    """(signal, read number) -> raw value; default: the read number (changes every cycle)."""


WORLD: dict[str, FakeDevice] = {}


def world(device_id: str) -> FakeDevice:
    return WORLD.setdefault(device_id, FakeDevice())


class FakeDriver(DriverBase):
    name: ClassVar[str] = "fake"
    profile_model: ClassVar[type[ModbusProfile]] = ModbusProfile
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.POLL})

    def __init__(
        self, device: DeviceConfig, logger: logging.LoggerAdapter[Any], metrics: DriverMetrics
    ) -> None:
        self.device = device
        self.state = world(device.id)
        self.metrics = metrics

    @staticmethod
    def check(device: DeviceConfig) -> list[Problem]:
        return []

    async def connect(self) -> None:
        if self.state.is_unreachable:
            raise DeviceUnreachableError("connection refused", where=self.device.describe())
        self.state.connects += 1

    async def close(self) -> None:
        self.state.closes += 1

    def _readings(self, group: str) -> list[RawReading]:
        state = self.state
        state.reads += 1
        ts = time.time_ns() // 1_000_000
        out = []
        for signal in self.device.profile.signals_of(group):
            if signal.name in state.values:
                raw = state.values[signal.name]
            elif state.generate is not None:
                raw = state.generate(signal.name, state.reads)
            elif signal.states:
                raw = sorted(signal.states)[state.reads % len(signal.states)]
            else:
                raw = state.reads
            out.append(RawReading(signal.name, raw, ts))
        return out

    async def read(self, group: GroupSpec) -> ReadResult:
        while self.state.is_hanging:  # noqa: ASYNC110  # answers late, once the test lets it
            await asyncio.sleep(0.01)
        if self.state.is_unreachable:
            raise DeviceTimeoutError("no reply", where=self.device.describe())
        return ReadResult(self._readings(group.name), requests=1)


class _Handle:
    def __init__(self, state: FakeDevice, sink: ReadingSink) -> None:
        self.state, self.sink = state, sink

    async def cancel(self) -> None:
        if self.sink in self.state.sinks:
            self.state.sinks.remove(self.sink)


class FakeSubscribeDriver(FakeDriver):
    """Pushes readings when the test calls ``push``; ``watch`` returns when ``lose`` is called."""

    name: ClassVar[str] = "fakesub"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.SUBSCRIBE})

    async def subscribe(self, group: GroupSpec, sink: ReadingSink) -> _Handle:
        self.state.sinks.append(sink)
        return _Handle(self.state, sink)

    async def watch(self) -> None:
        self.state.lost = asyncio.Event()
        await self.state.lost.wait()


def push(device_id: str, signal: str, raw: RawValue) -> None:
    """Deliver one change through every live subscription of ``device_id``."""
    reading = RawReading(signal, raw, time.time_ns() // 1_000_000)
    for sink in list(world(device_id).sinks):
        sink([reading])


def make_profile(
    profile_id: str = "fake-machine",
    signals: list[dict[str, Any]] | None = None,
    interval_ms: int = 100,
    heartbeat_s: float = 60.0,
) -> ModbusProfile:
    """A small profile: a state, a counter, a gauge with a unit conversion."""
    specs = signals or [
        {
            "name": "machine_state",
            "address": 0,
            "states": {0: MachineState.OFF, 1: MachineState.IDLE, 2: MachineState.RUNNING},
        },
        {"name": "part_count", "address": 1, "type": "uint32"},
        {"name": "spindle_speed", "address": 3, "unit": "rpm"},
    ]
    return ModbusProfile(
        id=profile_id,
        protocol="modbus",
        heartbeat_s=heartbeat_s,
        groups=[GroupSpec(name="default", interval_ms=interval_ms)],
        signals=[ModbusSignal(**spec) for spec in specs],
    )


def make_device(
    device_id: str,
    enterprise: str = "ent-a",
    profile: ModbusProfile | None = None,
    endpoint: str = "tcp://127.0.0.1:1502",
) -> DeviceConfig:
    return DeviceConfig(
        id=device_id,
        enterprise=enterprise,
        endpoint=endpoint,
        unit_id=1,
        line="",
        profile=profile or make_profile(),
        source=f"test:{device_id}",
    )


async def eventually(
    pred: Callable[[], object], timeout_s: float = 10.0, what: str = "condition"
) -> object:
    """``support.wait_until_async``, polling every 20 ms."""
    return await wait_until_async(pred, timeout_s, 0.02, what)


def eventually_sync(
    pred: Callable[[], object], timeout_s: float = 10.0, what: str = "condition"
) -> object:
    """``support.wait_until``, polling every 20 ms."""
    return wait_until(pred, timeout_s, 0.02, what)


def fake_settings(mqtt_url: str, data_dir: Any, **sections: dict[str, Any]) -> Any:
    """Gateway settings for tests: fast batching and reconnects, no metrics port or status page, no file watch."""
    from gateway.settings import build_settings

    data: dict[str, Any] = {
        "gateway": {"id": "gw-1", "enterprise": "ent-a", "data_dir": str(data_dir)},
        "mqtt": {"url": mqtt_url, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "buffer": {"batch_max_delay_ms": 50},
        "metrics": {"port": 0, "publish_interval_s": 0},
        "status": {"port": 0},
        "reload": {"watch_interval_s": 0},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return build_settings(data)


def fake_app(settings: Any, devices: list[DeviceConfig], **kw: Any) -> Any:
    """A GatewayApp whose devices all use FakeDriver (fresh fake state for each device)."""
    from gateway.app import GatewayApp
    from gateway.profiles.loader import Site
    from gateway.scheduler import Backoff

    for device in devices:
        WORLD[device.id] = FakeDevice()
    kw.setdefault("driver_for", lambda _protocol: FakeDriver)
    kw.setdefault("device_backoff", Backoff(0.05, 0.2))
    site = kw.pop("site", None) or Site(file="test-site.yaml", settings={}, devices=devices)
    return GatewayApp(settings, site, **kw)

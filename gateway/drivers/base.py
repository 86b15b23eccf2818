"""The contract every protocol driver implements, and the values it hands to the gateway.

A driver turns one device's protocol into raw readings; it knows addresses and encodings, and
nothing of units, deadbands, batching or MQTT. The scheduler owns time: drivers never sleep (except
a profile's mandated pause between requests), never spawn tasks and never reconnect by themselves.

Example (a poll cycle, as the scheduler runs it)::

    driver = ModbusDriver(device, logger, metrics)
    async with driver:                       # connect() / close()
        result = await driver.read(group)    # one cycle of one group
        for reading in result.readings:      # RawReading(signal="spindle_speed", raw=1480, ...)
            ...
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

from gateway.errors import (
    DeviceTimeoutError,
    DeviceUnreachableError,
    DriverError,
    ProtocolError,
)
from gateway.profiles.models import DeviceConfig, GroupSpec, ProfileBase
from wire.payloads import Quality

__all__ = [
    "Capability",
    "DeviceTimeoutError",
    "DeviceUnreachableError",
    "Driver",
    "DriverError",
    "DriverMetrics",
    "Problem",
    "ProtocolError",
    "RawReading",
    "ReadResult",
    "ReadingSink",
    "Subscription",
]

RawValue = bool | int | float | str | None


class Capability(StrEnum):
    POLL = "poll"
    """``read(group)`` runs one cycle; the scheduler calls it on the group's timer."""
    SUBSCRIBE = "subscribe"
    """``subscribe(group, sink)`` pushes changes; ``watch()`` returns when the session is lost."""
    PLAN = "plan"
    """``plan(group)`` describes the requests a cycle costs, with no device."""


@dataclass(frozen=True, slots=True)
class Problem:
    """A configuration problem found by ``check``; ``where`` is a field path like signals[3].address."""

    where: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 4x to build, per sample
class RawReading:
    """One value as the device gave it, before scaling, unit conversion and state mapping."""

    signal: str
    raw: RawValue
    ts_ms: int
    quality: Quality = Quality.GOOD
    reason: str | None = None
    """Why the quality is not good (``Modbus exception 2: illegal data address``)."""


@dataclass(frozen=True, slots=True)
class ReadResult:
    readings: list[RawReading]
    requests: int = 0
    """Protocol requests this cycle cost (for metrics and ``profile plan``)."""


ReadingSink = Callable[[list[RawReading]], None]
"""Where a subscription delivers readings; called on the event loop, must not block."""


class Subscription(Protocol):
    async def cancel(self) -> None: ...


@dataclass(slots=True)
class DriverMetrics:
    """Counters a driver bumps; the gateway exports them labelled by device and driver."""

    requests: int = 0
    errors: int = 0
    reconnects: int = 0
    extra: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Driver(Protocol):
    """One connection to one device (or one unit behind a shared endpoint).

    Class attributes: ``name`` (the profile's ``protocol``), ``profile_model`` (the pydantic
    model of its profiles; its JSON Schema feeds ``profile schema``), ``capabilities``.
    The constructor takes the validated device, a per-device logger and a metrics handle, and does
    no I/O. ``connect``/``close`` are idempotent. A whole-device failure raises a DriverError
    subclass; a bad signal becomes a reading with bad quality and a reason.
    """

    name: ClassVar[str]
    profile_model: ClassVar[type[ProfileBase]]
    capabilities: ClassVar[frozenset[Capability]]

    def __init__(
        self, device: DeviceConfig, logger: logging.LoggerAdapter[Any], metrics: DriverMetrics
    ) -> None: ...

    @staticmethod
    def check(device: DeviceConfig) -> list[Problem]:
        """Every problem with this device's addresses, types and limits; no network."""
        ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def read(self, group: GroupSpec) -> ReadResult:
        """Read every signal of ``group`` once (POLL drivers; SUBSCRIBE drivers may read too)."""
        ...


class DriverBase:
    """Optional base class: the async-context-manager plumbing every driver would repeat.

    Optional methods a driver may add, as its capabilities say:
    ``async subscribe(group, sink) -> Subscription`` (SUBSCRIBE), ``async watch() -> None`` that
    returns or raises when the session is lost (SUBSCRIBE), ``plan(group) -> list[Any]`` (PLAN, pure).
    """

    async def connect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

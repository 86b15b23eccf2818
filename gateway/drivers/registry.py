"""The explicit list of built-in protocol drivers; adding a protocol adds one line here.

The profile model is imported eagerly (validation needs it without any vendor library); the driver
class only when a device of that protocol starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, cast

from gateway.drivers.modbus.models import ModbusProfile
from gateway.drivers.opcua.models import OpcUaProfile
from gateway.profiles.models import ProfileBase

if TYPE_CHECKING:
    from gateway.drivers.base import Driver


@dataclass(frozen=True, slots=True)
class DriverEntry:
    name: str
    profile_model: type[ProfileBase]
    driver_path: str
    """``module:Class`` of the driver, imported on first use."""

    def load(self) -> type[Driver]:
        module, _, cls = self.driver_path.partition(":")
        return cast("type[Driver]", getattr(import_module(module), cls))


BUILTIN: tuple[DriverEntry, ...] = (
    DriverEntry("modbus", ModbusProfile, "gateway.drivers.modbus.driver:ModbusDriver"),
    DriverEntry("opcua", OpcUaProfile, "gateway.drivers.opcua.driver:OpcUaDriver"),
)


def _index(entries: tuple[DriverEntry, ...]) -> dict[str, DriverEntry]:
    index: dict[str, DriverEntry] = {}
    for entry in entries:
        if entry.name in index:
            raise ValueError(f"two drivers are named {entry.name!r}")
        index[entry.name] = entry
    return index


DRIVERS: dict[str, DriverEntry] = _index(BUILTIN)


def get_driver(name: str) -> DriverEntry:
    try:
        return DRIVERS[name]
    except KeyError:
        known = ", ".join(sorted(DRIVERS))
        raise KeyError(f"unknown protocol {name!r}; known protocols: {known}") from None


def profile_models() -> tuple[type[ProfileBase], ...]:
    return tuple(entry.profile_model for entry in DRIVERS.values())

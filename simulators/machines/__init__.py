"""Behaviour models of the simulated machine kinds, one module per kind, and their registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simulators.errors import UnknownKindError
from simulators.machines import (
    air_compressor,
    bearing_lathe,
    carburizing_furnace,
    die_casting_cell,
    energy_meter,
    gear_grinder,
    gear_hobber,
    injection_moulding,
    machining_centre,
    raceway_grinder,
    servo_press,
    superfinisher,
    tightening_station,
    vibration_tester,
    welding_cell,
)
from simulators.machines.base import Alarm, Behaviour, Machine, MachineKind, derive_seed
from simulators.machines.energy_meter import EnergyMeter

KINDS: dict[str, MachineKind] = {}
for _module in (
    bearing_lathe,
    raceway_grinder,
    superfinisher,
    gear_hobber,
    gear_grinder,
    carburizing_furnace,
    vibration_tester,
    servo_press,
    die_casting_cell,
    machining_centre,
    welding_cell,
    injection_moulding,
    tightening_station,
    energy_meter,
    air_compressor,
):
    _kind: MachineKind = _module.KIND
    if _kind.name in KINDS:
        raise RuntimeError(f"machine kind {_kind.name!r} is registered twice")
    if _kind.model.kind != _kind.name:
        raise RuntimeError(f"{_kind.name}: its model says kind {_kind.model.kind!r}")
    KINDS[_kind.name] = _kind


def machine_kind(name: str) -> MachineKind:
    """The registered kind called ``name``; the error lists the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKindError(
            f"unknown machine kind {name!r}; known kinds: {', '.join(sorted(KINDS))}"
        ) from None


def create_machine(kind: str, device_id: str, seed: int, **options: Any) -> Machine:
    """Build a machine of ``kind`` (options: see ``Machine``)."""
    return machine_kind(kind).model(device_id, seed, **options)


def kinds_by_protocol() -> Mapping[str, list[str]]:
    """Kind names grouped by the protocol their simulator serves."""
    grouped: dict[str, list[str]] = {"modbus": [], "opcua": []}
    for name, kind in KINDS.items():
        grouped[kind.protocol].append(name)
    return grouped


__all__ = [
    "KINDS",
    "Alarm",
    "Behaviour",
    "EnergyMeter",
    "Machine",
    "MachineKind",
    "UnknownKindError",
    "create_machine",
    "derive_seed",
    "kinds_by_protocol",
    "machine_kind",
]

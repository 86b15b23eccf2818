"""Helpers for the live Modbus tests: register maps for a real pymodbus server, devices, drivers.

Each unit id gets its own four tables; addresses not in the map answer with Modbus exception 2,
as a real device does. ``dead_units`` never answer (the request hangs), like a unit id that is
configured on a converter but switched off.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType as SimType
from support import wait_until_async  # noqa: F401  # re-exported for the tests here

from gateway.drivers.base import DriverMetrics
from gateway.drivers.modbus.driver import ModbusDriver
from gateway.drivers.modbus.models import ModbusProfile
from gateway.profiles.models import DeviceConfig
from shulian.devservices import free_port

# Where each big-endian byte (A = most significant) travels on the wire, per order and size.
WIRE_LETTERS = {
    2: {"ABCD": "AB", "CDAB": "AB", "BADC": "BA", "DCBA": "BA"},
    4: {"ABCD": "ABCD", "CDAB": "CDAB", "BADC": "BADC", "DCBA": "DCBA"},
    8: {"ABCD": "ABCDEFGH", "CDAB": "GHEFCDAB", "BADC": "BADCFEHG", "DCBA": "HGFEDCBA"},
}


def wire_registers(fmt: str, value: float, order: str = "ABCD") -> list[int]:
    """The registers a device in ``order`` sends for ``value`` (built from struct, not our codec)."""
    big_endian = struct.pack(fmt, value)
    letters = WIRE_LETTERS[len(big_endian)][order]
    wire = bytes(big_endian[ord(letter) - ord("A")] for letter in letters)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]


@dataclass
class UnitMap:
    """One unit's tables: address -> value (bits for coils/discrete inputs)."""

    coils: dict[int, bool] = field(default_factory=dict)
    discrete_inputs: dict[int, bool] = field(default_factory=dict)
    holding: dict[int, int] = field(default_factory=dict)
    input: dict[int, int] = field(default_factory=dict)

    def put(self, table: str, address: int, registers: list[int]) -> None:
        target = self.holding if table == "holding" else self.input
        for index, register in enumerate(registers):
            target[address + index] = register


def _runs(values: dict[int, Any], kind: SimType, filler: Any) -> list[SimData]:
    """Contiguous runs of defined addresses; gaps stay undefined (exception 2 when read)."""
    if not values:
        return [SimData(65000, values=[filler], datatype=kind)]
    runs: list[SimData] = []
    addresses = sorted(values)
    begin = prev = addresses[0]
    for address in [*addresses[1:], None]:
        if address is not None and address == prev + 1:
            prev = address
            continue
        runs.append(
            SimData(begin, values=[values[a] for a in range(begin, prev + 1)], datatype=kind)
        )
        if address is not None:
            begin = prev = address
    return runs


async def _never_answer(*_: Any) -> None:
    await asyncio.sleep(3600)  # the unit is dead: the request is never answered


def _sim_device(unit_id: int, unit: UnitMap, dead: bool) -> SimDevice:
    return SimDevice(
        id=unit_id,
        simdata=(
            _runs(unit.coils, SimType.BITS, False),
            _runs(unit.discrete_inputs, SimType.BITS, False),
            _runs(unit.holding, SimType.REGISTERS, 0),
            _runs(unit.input, SimType.REGISTERS, 0),
        ),
        action=_never_answer if dead else None,
    )


@dataclass
class RunningServer:
    port: int
    server: ModbusTcpServer


ServerFactory = Callable[..., Awaitable[RunningServer]]


async def start_server(
    units: dict[int, UnitMap],
    *,
    dead_units: frozenset[int] | set[int] = frozenset(),
    framer: FramerType = FramerType.SOCKET,
) -> RunningServer:
    """A pymodbus TCP server on a free port serving ``units``; ``dead_units`` never answer."""
    devices = [_sim_device(uid, unit, uid in dead_units) for uid, unit in units.items()]
    everything = UnitMap(  # a dead unit hangs on every address, not only on mapped ones
        dict.fromkeys(range(256), False),
        dict.fromkeys(range(256), False),
        dict.fromkeys(range(256), 0),
        dict.fromkeys(range(256), 0),
    )
    devices += [_sim_device(uid, everything, True) for uid in dead_units if uid not in units]
    port = free_port()
    server = ModbusTcpServer(devices, address=("127.0.0.1", port), framer=framer)
    await server.serve_forever(background=True)
    return RunningServer(port, server)


def make_device(
    signals: list[dict[str, Any]],
    endpoint: str,
    *,
    unit_id: int | None = 1,
    device_id: str = "dev-1",
    modbus: dict[str, Any] | None = None,
    word_order: str = "ABCD",
    settings: dict[str, Any] | None = None,
) -> DeviceConfig:
    profile = ModbusProfile.model_validate(
        {
            "id": "test_profile",
            "protocol": "modbus",
            "word_order": word_order,
            "modbus": {"timeout_s": 0.5, "retries": 1, **(modbus or {})},
            "signals": signals,
        }
    )
    return DeviceConfig(
        id=device_id,
        enterprise="acme",
        endpoint=endpoint,
        unit_id=unit_id,
        line="",
        profile=profile,
        settings=settings or {},
    )


def make_driver(device: DeviceConfig) -> ModbusDriver:
    logger = logging.LoggerAdapter(logging.getLogger(f"test.{device.id}"), {"device": device.id})
    return ModbusDriver(device, logger, DriverMetrics())


async def connected(drivers: list[ModbusDriver], driver: ModbusDriver) -> ModbusDriver:
    """Connect ``driver`` and leave it to the ``drivers`` fixture to close."""
    drivers.append(driver)
    await driver.connect()
    return driver

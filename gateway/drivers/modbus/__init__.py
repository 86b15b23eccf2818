"""Modbus TCP, RTU and RTU-over-TCP: poll devices in planned register blocks.

Importing this package loads no vendor library: the profile model, planner, codec and endpoint
parser are pure, so profiles validate and plan without pymodbus. ``ModbusDriver`` (which imports
pymodbus through transport.py) is loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.drivers.modbus.codec import decode_registers, encode_registers
from gateway.drivers.modbus.endpoint import ModbusEndpoint, effective_settings, parse_endpoint
from gateway.drivers.modbus.models import (
    DataType,
    ModbusProfile,
    ModbusSettings,
    ModbusSignal,
    Table,
    WordOrder,
)
from gateway.drivers.modbus.planner import (
    PlannedRequest,
    PlannedSignal,
    ProfilePlan,
    plan_profile,
    plan_reads,
)

if TYPE_CHECKING:
    from gateway.drivers.modbus.driver import ModbusDriver

__all__ = [
    "DataType",
    "ModbusDriver",
    "ModbusEndpoint",
    "ModbusProfile",
    "ModbusSettings",
    "ModbusSignal",
    "PlannedRequest",
    "PlannedSignal",
    "ProfilePlan",
    "Table",
    "WordOrder",
    "decode_registers",
    "effective_settings",
    "encode_registers",
    "parse_endpoint",
    "plan_profile",
    "plan_reads",
]


def __getattr__(name: str) -> Any:
    if name == "ModbusDriver":
        from gateway.drivers.modbus.driver import ModbusDriver

        return ModbusDriver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

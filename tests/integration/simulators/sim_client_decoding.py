"""Reading a simulated device the way a client following its manual would, without simulator code.

Registers are decoded with pymodbus's own converter, units converted with pint, so a bug in the
simulators' encoder or conversion table shows up as a mismatch with the ground truth.
"""

from __future__ import annotations

import time
from typing import Any

import pint
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.client.mixin import ModbusClientMixin
from support import wait_until_async  # noqa: F401  # re-exported for the tests here

from simulators.addressmap import Field, Register, RegisterType, Table, WordOrder
from simulators.truth import GroundTruth
from wire import lookup_signal

UNITS = pint.UnitRegistry()
DATATYPE = ModbusClientMixin.DATATYPE
_TYPES = {
    RegisterType.INT16: DATATYPE.INT16,
    RegisterType.UINT16: DATATYPE.UINT16,
    RegisterType.INT32: DATATYPE.INT32,
    RegisterType.UINT32: DATATYPE.UINT32,
    RegisterType.INT64: DATATYPE.INT64,
    RegisterType.UINT64: DATATYPE.UINT64,
    RegisterType.FLOAT32: DATATYPE.FLOAT32,
    RegisterType.FLOAT64: DATATYPE.FLOAT64,
    RegisterType.STRING: DATATYPE.STRING,
}


def to_canonical(field: Field, raw: Any) -> Any:
    """Apply the manual's scaling, state table and unit to a decoded raw value."""
    if field.states is not None:
        return field.states[raw].value  # type: ignore[index]
    if isinstance(raw, bool | str):
        return raw
    value = raw * field.scale + field.offset
    spec = lookup_signal(field.signal) if field.signal else None
    if spec and spec.unit and field.unit and field.unit != spec.unit:
        value = UNITS.Quantity(value, field.unit).to(spec.unit).magnitude
    return value


async def read_register_field(client: AsyncModbusTcpClient, unit: int, field: Register) -> Any:
    """Read one field with the function code of its table and decode it per the manual."""
    if field.table == Table.COIL:
        reply = await client.read_coils(field.address, count=1, device_id=unit)
        assert not reply.isError(), reply
        return bool(reply.bits[0])
    if field.table == Table.DISCRETE_INPUT:
        reply = await client.read_discrete_inputs(field.address, count=1, device_id=unit)
        assert not reply.isError(), reply
        return bool(reply.bits[0])
    read = (
        client.read_holding_registers
        if field.table == Table.HOLDING
        else client.read_input_registers
    )
    reply = await read(field.address, count=field.size, device_id=unit)
    assert not reply.isError(), reply
    if field.type == RegisterType.BIT:
        assert field.bit is not None
        return bool(reply.registers[0] >> field.bit & 1)
    assert field.word_order in (WordOrder.ABCD, WordOrder.CDAB), "add the byte-swapped orders here"
    order = "little" if field.word_order == WordOrder.CDAB else "big"
    return client.convert_from_registers(reply.registers, _TYPES[field.type], word_order=order)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def matches_truth(
    truth: GroundTruth, device: str, field: Field, read: Any, start_ms: int, end_ms: int
) -> bool:
    """Whether ``read`` equals a value the truth says was served while the read was in flight."""
    assert field.signal is not None
    candidates = truth.values_between(device, field.signal, start_ms - 1, end_ms + 1)
    for expected in candidates:
        if isinstance(expected, float) or isinstance(read, float):
            if isinstance(expected, bool | str) or isinstance(read, bool | str):
                continue
            if abs(float(read) - float(expected)) <= 1e-9 * max(1.0, abs(float(expected))):
                return True
        elif read == expected:
            return True
    return False

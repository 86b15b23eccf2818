"""Modbus parts of a profile: where each signal lives in the device and how it is encoded."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from gateway.profiles.models import ProfileBase, SignalBase, _Strict


class Table(StrEnum):
    """The four Modbus data tables, named by what they hold (function code in brackets)."""

    COIL = "coil"  # FC 1
    DISCRETE_INPUT = "discrete_input"  # FC 2
    HOLDING = "holding"  # FC 3
    INPUT = "input"  # FC 4


class DataType(StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"


class WordOrder(StrEnum):
    """Byte order of a multi-register value, as letters of its big-endian bytes.

    ABCD is big-endian (Modbus standard); CDAB swaps 16-bit words (common on PLCs and meters);
    BADC swaps bytes within words; DCBA is little-endian.
    """

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"


REGISTERS_OF: dict[DataType, int] = {
    DataType.BOOL: 1,
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
}


class ModbusSignal(SignalBase):
    table: Table = Table.HOLDING
    address: int = Field(ge=0, le=65535)
    """Zero-based offset in the table (register 40001 is holding offset 0)."""
    type: DataType = DataType.UINT16
    word_order: WordOrder | None = None
    """None takes the profile's ``word_order``."""
    bit: int | None = Field(default=None, ge=0, le=15)
    """For ``type: bool`` in a register table: which bit of the register (0 = least significant)."""
    length: int | None = Field(default=None, ge=1, le=125)
    """For ``type: string``: how many registers (two ASCII characters each)."""

    @model_validator(mode="after")
    def _shape(self) -> ModbusSignal:
        bit_table = self.table in (Table.COIL, Table.DISCRETE_INPUT)
        if bit_table and self.type is not DataType.BOOL:
            raise ValueError(f"table {self.table.value} holds single bits: use type: bool")
        if self.bit is not None and (bit_table or self.type is not DataType.BOOL):
            raise ValueError(
                "`bit` picks a bit of a register: use it with type: bool in holding/input"
            )
        if self.type is DataType.STRING and self.length is None:
            raise ValueError("type: string needs `length` (registers)")
        if self.type is not DataType.STRING and self.length is not None:
            raise ValueError("`length` applies to type: string only")
        return self

    @property
    def register_count(self) -> int:
        if self.type is DataType.STRING:
            return self.length or 1
        return REGISTERS_OF[self.type]

    @property
    def end(self) -> int:
        """One past the last address this signal occupies."""
        if self.table in (Table.COIL, Table.DISCRETE_INPUT):
            return self.address + 1
        return self.address + self.register_count


class AddressRange(_Strict):
    """Addresses of one table, from ``start`` to ``end`` inclusive (as manuals list them)."""

    table: Table = Table.HOLDING
    start: int = Field(ge=0, le=65535)
    end: int = Field(ge=0, le=65535)
    """The last address of the range (a bit address in coil and discrete_input)."""

    @model_validator(mode="after")
    def _ordered(self) -> AddressRange:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    def overlaps(self, table: Table, start: int, end: int) -> bool:
        """Whether addresses ``start`` up to (not including) ``end`` of ``table`` touch it."""
        return table is self.table and start <= self.end and end > self.start

    def describe(self) -> str:
        return f"{self.table.value} {self.start}..{self.end}"


class ModbusSettings(_Strict):
    """Protocol limits and timing of one device model (a site may override per device)."""

    max_registers_per_request: int = Field(default=125, ge=1, le=125)
    max_bits_per_request: int = Field(default=2000, ge=1, le=2000)
    max_gap: int = Field(default=16, ge=0, le=125)
    """Read through up to this many unused registers to save a request (16x as many bits in
    coil and discrete_input); 0 for a device that refuses reads of registers it does not map."""
    unreadable: list[AddressRange] = Field(default_factory=list)
    """Ranges the device refuses to read (exception 02 for a read that covers them): requests
    never reach into them, whatever ``max_gap``; gaps elsewhere are still read through."""
    request_pause_ms: int = Field(default=0, ge=0, le=10_000)
    """Pause between requests, for slow devices and serial converters."""
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=2, ge=0, le=10)
    max_requests_in_flight: int = Field(default=1, ge=1, le=64)
    """Modbus TCP only: requests sent on the connection before the first reply comes back.

    The Modbus TCP specification lets a client send several requests and match replies by
    transaction id; PLCs and Modbus TCP gateways that queue requests answer them in turn, and a
    burst of replies costs the gateway one wake-up instead of one each. Simple devices answer
    only one request at a time, so the default is 1; raise it only for a device (or a Modbus TCP
    gateway) known to queue requests."""
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class ModbusProfile(ProfileBase):
    protocol: Literal["modbus"]
    word_order: WordOrder = WordOrder.ABCD
    modbus: ModbusSettings = Field(default_factory=ModbusSettings)
    signals: list[ModbusSignal]  # type: ignore[assignment]  # narrowed from SignalBase

"""Vendor-style address maps: where each simulated machine serves which value, and how it is encoded.

A machine kind's map is the data a vendor manual would print: Modbus registers (table, address, type,
word order, scaling) or OPC UA variables (path, variant type). The servers use these maps to encode
the behaviour model's values, and the ground truth uses them to compute what a correct client reads,
in the canonical unit of ``wire.signals``. ``simulators/manuals/<kind>.md`` is rendered from them.

Each field turns a model value into a raw value (what goes on the wire before scaling) and back into
the served canonical value::

    unit_value = raw * scale + offset               # the manual's scaling
    canonical  = unit_value * factor + shift        # unit -> canonical unit (see UNIT_CONVERSIONS)

Unit conversions are written out here on purpose, not taken from the gateway's units library, so a
conversion bug on either side shows up as a mismatch; a unit test checks every pair against pint.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Final

from simulators.errors import ConversionError, MapError
from wire import MachineState, lookup_signal

Value = bool | int | float | str

UNIT_CONVERSIONS: Final[dict[tuple[str, str], tuple[float, float]]] = {
    # (source unit, canonical unit): (factor, shift); canonical = value * factor + shift
    ("K", "degC"): (1.0, -273.15),
    ("bar", "MPa"): (0.1, 0.0),
    ("kPa", "MPa"): (0.001, 0.0),
    ("W", "kW"): (0.001, 0.0),
    ("VA", "kVA"): (0.001, 0.0),
    ("Wh", "kWh"): (0.001, 0.0),
    ("tf", "kN"): (9.80665, 0.0),
    ("mm", "um"): (1000.0, 0.0),
    ("min", "s"): (60.0, 0.0),
    ("ms", "s"): (0.001, 0.0),
    ("mA", "A"): (0.001, 0.0),
    ("L/min", "m**3/min"): (0.001, 0.0),
    ("m**3/h", "m**3/min"): (1.0 / 60.0, 0.0),
    ("mm/s", "m/min"): (0.06, 0.0),
    ("um/s", "mm/s"): (0.001, 0.0),
    ("cm/s", "m/s"): (0.01, 0.0),
    ("permille", "percent"): (0.1, 0.0),
}


def conversion(unit: str, canonical_unit: str) -> tuple[float, float]:
    """The ``(factor, shift)`` that turns a value in ``unit`` into ``canonical_unit``."""
    if unit == canonical_unit:
        return (1.0, 0.0)
    try:
        return UNIT_CONVERSIONS[(unit, canonical_unit)]
    except KeyError:
        raise ConversionError(
            f"no conversion from {unit!r} to canonical {canonical_unit!r}; "
            "add it to simulators.addressmap.UNIT_CONVERSIONS"
        ) from None


class Table(StrEnum):
    """The four Modbus data tables."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    HOLDING = "holding"
    INPUT = "input"

    @property
    def read_function(self) -> int:
        """The Modbus function code that reads this table."""
        return {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}[self.value]

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE_INPUT)


class RegisterType(StrEnum):
    """How a Modbus field is encoded."""

    BOOL = "bool"
    """One coil or discrete input."""
    BIT = "bit"
    """One bit of a 16-bit register (bit 0 = least significant)."""
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    """ASCII, two characters per register, first character in the high byte, NUL padded."""


_STRUCT: Final[dict[RegisterType, str]] = {
    RegisterType.INT16: "h",
    RegisterType.UINT16: "H",
    RegisterType.INT32: "i",
    RegisterType.UINT32: "I",
    RegisterType.INT64: "q",
    RegisterType.UINT64: "Q",
    RegisterType.FLOAT32: "f",
    RegisterType.FLOAT64: "d",
}
_INT_RANGE: Final[dict[RegisterType, tuple[int, int]]] = {
    RegisterType.INT16: (-(2**15), 2**15 - 1),
    RegisterType.UINT16: (0, 2**16 - 1),
    RegisterType.INT32: (-(2**31), 2**31 - 1),
    RegisterType.UINT32: (0, 2**32 - 1),
    RegisterType.INT64: (-(2**63), 2**63 - 1),
    RegisterType.UINT64: (0, 2**64 - 1),
}


class WordOrder(StrEnum):
    """Byte order of a multi-register value, written as the order of bytes A (most significant)..D.

    For 64-bit values the same rule applies word by word: CDAB puts the least significant word first.
    """

    ABCD = "ABCD"
    """Big-endian words, big-endian bytes (the Modbus default)."""
    CDAB = "CDAB"
    """Least significant word first, big-endian bytes within each word ("word swap")."""
    BADC = "BADC"
    """Big-endian words, bytes swapped within each word."""
    DCBA = "DCBA"
    """Fully little-endian."""


class VariantType(StrEnum):
    """OPC UA built-in types the simulated servers use."""

    BOOLEAN = "Boolean"
    INT16 = "Int16"
    UINT16 = "UInt16"
    INT32 = "Int32"
    UINT32 = "UInt32"
    INT64 = "Int64"
    FLOAT = "Float"
    DOUBLE = "Double"
    STRING = "String"
    UINT64 = "UInt64"
    LOCALIZED_TEXT = "LocalizedText"


_VARIANT_INT_RANGE: Final[dict[VariantType, tuple[int, int]]] = {
    VariantType.INT16: (-(2**15), 2**15 - 1),
    VariantType.UINT16: (0, 2**16 - 1),
    VariantType.INT32: (-(2**31), 2**31 - 1),
    VariantType.UINT32: (0, 2**32 - 1),
    VariantType.INT64: (-(2**63), 2**63 - 1),
    VariantType.UINT64: (0, 2**64 - 1),
}


class Encoding(IntEnum):
    """What kind of value a field carries on the wire."""

    NUMBER = 0
    BOOL = 1
    TEXT = 2
    STATE = 3


def float32(value: float) -> float:
    """``value`` rounded to the nearest IEEE 754 single-precision number."""
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    """What every map entry shares: meaning, canonical signal, unit and scaling.

    Attributes:
        meaning: What the vendor manual says the value is.
        signal: The canonical signal name served here (``None`` for vendor-only values).
        key: The behaviour model's value this field serves; defaults to ``signal``.
        unit: Unit of ``raw * scale + offset``; must convert to the signal's canonical unit.
        scale: Multiplier from the raw value to ``unit``.
        offset: Added after scaling.
        states: For a state field, raw code (or text) -> machine state.
        constant: A fixed value (identification, reserved registers) instead of a model value.
        wraps: The raw counter wraps at the type's maximum; the truth also keeps the true count.
    """

    meaning: str
    signal: str | None = None
    key: str | None = None
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    states: Mapping[int, MachineState] | Mapping[str, MachineState] | None = None
    constant: Value | None = None
    wraps: bool = False

    @property
    def source(self) -> str | None:
        """The model value this field reads, or None for a constant."""
        if self.constant is not None:
            return None
        return self.key or self.signal

    @property
    def canonical_unit(self) -> str:
        spec = lookup_signal(self.signal) if self.signal else None
        return spec.unit if spec else self.unit

    def unit_conversion(self) -> tuple[float, float]:
        return conversion(self.unit, self.canonical_unit) if self.signal else (1.0, 0.0)

    def state_code(self, state: Value) -> int | str:
        """The raw code the vendor uses for a machine state."""
        assert self.states is not None
        for code, mapped in self.states.items():
            if mapped == state:
                return code
        raise ValueError(f"{self.meaning}: no code for state {state!r}")

    def number_to_raw(self, value: float) -> float:
        """Model value (canonical unit) -> raw value, before integer rounding or float narrowing."""
        factor, shift = self.unit_conversion()
        return ((float(value) - shift) / factor - self.offset) / self.scale

    def to_raw(self, value: Value) -> int | float | bool | str:
        """The raw value the device holds for a model value (in the canonical unit)."""
        raise NotImplementedError

    def served(self, raw: int | float | bool | str) -> Value:
        """What a client decoding ``raw`` per the manual gets, in the canonical unit."""
        raise NotImplementedError

    def raw_to_canonical(self, raw: float) -> float | int:
        """Raw -> canonical value; an unscaled integer stays an integer (counters stay exact)."""
        factor, shift = self.unit_conversion()
        if isinstance(raw, int) and (self.scale, self.offset, factor, shift) == (1, 0, 1, 0):
            return raw
        return (raw * self.scale + self.offset) * factor + shift


@dataclass(frozen=True, slots=True, kw_only=True)
class Register(Field):
    """One Modbus map entry.

    Attributes:
        table: Which data table holds it.
        address: 0-based protocol address (a register, or a bit for coils and discrete inputs).
        type: Encoding of the value.
        word_order: Order of the bytes of 32/64-bit values.
        bit: Bit number (0 = LSB) for ``RegisterType.BIT``.
        length: Number of registers of a string.
    """

    table: Table
    address: int
    type: RegisterType
    word_order: WordOrder = WordOrder.ABCD
    bit: int | None = None
    length: int = 1

    @property
    def size(self) -> int:
        """Registers (or bits, for coils and discrete inputs) the field occupies."""
        if self.type in (RegisterType.BOOL, RegisterType.BIT):
            return 1
        if self.type == RegisterType.STRING:
            return self.length
        return struct.calcsize(_STRUCT[self.type]) // 2

    @property
    def encoding(self) -> Encoding:
        if self.states is not None:
            return Encoding.STATE
        if self.type in (RegisterType.BOOL, RegisterType.BIT):
            return Encoding.BOOL
        if self.type == RegisterType.STRING:
            return Encoding.TEXT
        return Encoding.NUMBER

    def to_raw(self, value: Value) -> int | float | bool | str:
        """The raw value the device holds for a model value."""
        if self.encoding == Encoding.STATE:
            return self.state_code(value)
        if self.encoding == Encoding.BOOL:
            return bool(value)
        if self.encoding == Encoding.TEXT:
            text = str(value).encode("ascii", "replace")[: 2 * self.length]
            return text.decode("ascii")
        raw = self.number_to_raw(float(value))
        if self.type == RegisterType.FLOAT32:
            return float32(raw)
        if self.type == RegisterType.FLOAT64:
            return raw
        low, high = _INT_RANGE[self.type]
        whole = round(raw)
        if self.wraps:
            return whole % (high + 1)
        return min(max(whole, low), high)

    def served(self, raw: int | float | bool | str) -> Value:
        """What a client decoding ``raw`` per the manual gets, in the canonical unit."""
        if self.encoding == Encoding.STATE:
            assert self.states is not None
            return MachineState(self.states[raw]).value  # type: ignore[index]
        if self.encoding in (Encoding.BOOL, Encoding.TEXT):
            return raw
        return self.raw_to_canonical(raw)  # type: ignore[arg-type]

    def pack(self, raw: int | float | str) -> list[int]:
        """Register words for a raw value (not for BOOL or BIT)."""
        if self.type == RegisterType.STRING:
            data = str(raw).encode("ascii").ljust(2 * self.length, b"\0")
            words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
            return words
        data = struct.pack(">" + _STRUCT[self.type], raw)
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        if self.word_order in (WordOrder.BADC, WordOrder.DCBA):
            words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
        if self.word_order in (WordOrder.CDAB, WordOrder.DCBA):
            words.reverse()
        return words

    @property
    def label(self) -> str:
        """Address as a manual prints it, e.g. ``HR 12`` or ``HR 1.3`` for bit 3 of register 1."""
        prefix = {"coil": "CO", "discrete_input": "DI", "holding": "HR", "input": "IR"}[self.table]
        if self.type == RegisterType.BIT:
            return f"{prefix} {self.address}.{self.bit}"
        return f"{prefix} {self.address}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Variable(Field):
    """One OPC UA variable below the machine's object.

    Attributes:
        path: Folder and variable names below the machine object, separated by ``/``.
        type: The variant type the server writes.
    """

    path: str
    type: VariantType

    @property
    def encoding(self) -> Encoding:
        if self.states is not None:
            return Encoding.STATE
        if self.type == VariantType.BOOLEAN:
            return Encoding.BOOL
        if self.type in (VariantType.STRING, VariantType.LOCALIZED_TEXT):
            return Encoding.TEXT
        return Encoding.NUMBER

    def node_id(self, device_id: str) -> str:
        """The string identifier of the NodeId (namespace: ``NAMESPACE_URI``)."""
        return f"{device_id}." + self.path.replace("/", ".")

    def to_raw(self, value: Value) -> int | float | bool | str:
        if self.encoding == Encoding.STATE:
            return self.state_code(value)
        if self.encoding == Encoding.BOOL:
            return bool(value)
        if self.encoding == Encoding.TEXT:
            return str(value)
        raw = self.number_to_raw(float(value))
        if self.type == VariantType.FLOAT:
            return float32(raw)
        if self.type == VariantType.DOUBLE:
            return raw
        low, high = _VARIANT_INT_RANGE[self.type]
        whole = round(raw)
        if self.wraps:
            return whole % (high + 1)
        return min(max(whole, low), high)

    def served(self, raw: int | float | bool | str) -> Value:
        if self.encoding == Encoding.STATE:
            assert self.states is not None
            return MachineState(self.states[raw]).value  # type: ignore[index]
        if self.encoding in (Encoding.BOOL, Encoding.TEXT):
            return raw
        return self.raw_to_canonical(raw)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class Derived(Variable):
    """A variable a companion specification defines differently from the model's value: its raw
    value is ``derive(model value)`` (a spec's enumeration code for a machine state, a flag from a
    speed), and ``decode`` is what a client following the spec makes of the raw value (the
    truth), by default the raw value itself.

    Attributes:
        derive: Model value (canonical) -> raw value.
        decode: Raw value -> the value a conforming client reads, when it differs from raw.
    """

    derive: Callable[[Value], int | float | bool | str]
    decode: Mapping[Any, Value] | None = None

    def to_raw(self, value: Value) -> int | float | bool | str:
        return self.derive(value)

    def served(self, raw: int | float | bool | str) -> Value:
        return self.decode[raw] if self.decode is not None else raw


@dataclass(frozen=True, slots=True)
class ModbusMap:
    """A machine kind's Modbus register map.

    Attributes:
        registers: Every field, including reserved registers that read as 0.
        word_order_note: What the manual says about 32-bit values on this device.
        refuses_unmapped: Whether a read across unlisted addresses fails (exception 02).
    """

    registers: tuple[Register, ...]
    word_order_note: str = "32-bit values are big-endian (ABCD): high word first."
    refuses_unmapped: bool = False
    """True for a device that answers exception 02 when a read covers an address the map does
    not list (some meters); otherwise an unlisted address between a table's first and last
    mapped ones reads as 0, as on most PLCs, so a client may read across gaps."""
    protocol: str = field(default="modbus", init=False)

    def __post_init__(self) -> None:
        problems = _modbus_problems(self.registers)
        if problems:
            raise MapError("; ".join(problems))

    def fields(self) -> tuple[Register, ...]:
        return self.registers


@dataclass(frozen=True, slots=True)
class OpcUaMap:
    """A machine kind's OPC UA node map (variables below ``Objects/<device id>``)."""

    variables: tuple[Variable, ...]
    protocol: str = field(default="opcua", init=False)

    def __post_init__(self) -> None:
        problems = _field_problems(self.variables)
        paths = [v.path for v in self.variables]
        problems += [
            f"duplicate path {p}" for p in sorted({p for p in paths if paths.count(p) > 1})
        ]
        if problems:
            raise MapError("; ".join(problems))

    def fields(self) -> tuple[Variable, ...]:
        return self.variables


AddressMap = ModbusMap | OpcUaMap


def _field_problems(fields: tuple[Field, ...]) -> list[str]:
    problems: list[str] = []
    for item in fields:
        if item.signal is not None:
            if lookup_signal(item.signal) is None:
                problems.append(f"{item.meaning}: {item.signal!r} is not a canonical signal")
                continue
            try:
                item.unit_conversion()
            except ConversionError as exc:
                problems.append(f"{item.meaning}: {exc}")
        if item.constant is None and item.source is None:
            problems.append(f"{item.meaning}: needs a signal, a key or a constant")
        if not math.isfinite(item.scale) or item.scale == 0:
            problems.append(f"{item.meaning}: scale must be a non-zero number")
    return problems


def _modbus_problems(registers: tuple[Register, ...]) -> list[str]:
    problems = _field_problems(registers)
    used: dict[tuple[Table, int], str] = {}
    bits: dict[tuple[Table, int, int], str] = {}
    for reg in registers:
        if reg.table.is_bits != (reg.type == RegisterType.BOOL):
            problems.append(f"{reg.label}: {reg.type} does not belong in the {reg.table} table")
        if reg.type == RegisterType.BIT:
            if reg.bit is None or not 0 <= reg.bit <= 15:
                problems.append(f"{reg.label}: bit must be 0..15")
                continue
            bit_key = (reg.table, reg.address, reg.bit)
            if bit_key in bits:
                problems.append(f"{reg.label}: bit used twice")
            bits[bit_key] = reg.meaning
            owner = used.get((reg.table, reg.address))
            if owner is not None and owner != "bits":
                problems.append(f"{reg.label}: overlaps {owner}")
            used[(reg.table, reg.address)] = "bits"
            continue
        for address in range(reg.address, reg.address + reg.size):
            if not 0 <= address <= 0xFFFF:
                problems.append(f"{reg.label}: address out of range")
            if (reg.table, address) in used:
                problems.append(f"{reg.label}: overlaps {used[(reg.table, address)]}")
            used[(reg.table, address)] = reg.meaning
    return problems

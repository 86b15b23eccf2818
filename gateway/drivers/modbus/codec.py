"""Turn Modbus registers and bits into values, and values into registers, for every type and order.

A register is 16 bits sent high byte first. A multi-register value is written as the letters of its
big-endian bytes (``ABCD`` for 32 bits): ``CDAB`` swaps the 16-bit words, ``BADC`` swaps the bytes
in each word, ``DCBA`` reverses all bytes. For 64-bit values the same rules extend (``CDAB`` reverses
the order of the four words). A one-register value is affected only by the byte swap of ``BADC`` and
``DCBA``. Strings are ASCII, two characters per register, high byte first (``BADC``/``DCBA``: low
byte first); the text ends at the first NUL and spaces are trimmed. Which order a signal uses
(its own, or the profile's default for multi-register values) is the driver's decision.

The hot path compiles one decoder per signal (``compile_decoder``) that reads straight from the
bytes of a whole block, so a poll cycle does one ``struct.pack`` per request and one
``unpack_from`` per signal.

Pure: no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Final

from gateway.drivers.modbus.models import REGISTERS_OF, DataType, WordOrder

Value = bool | int | float | str
RegisterDecoder = Callable[[bytes], Value]
"""Reads one signal's value from the big-endian bytes of a whole register block."""

_FORMATS: Final[dict[DataType, str]] = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}
_STRUCTS: Final[dict[DataType, struct.Struct]] = {t: struct.Struct(f) for t, f in _FORMATS.items()}
_WORD_SWAPPED: Final = frozenset({WordOrder.CDAB, WordOrder.DCBA})
_BYTE_SWAPPED: Final = frozenset({WordOrder.BADC, WordOrder.DCBA})


def registers_to_bytes(registers: Sequence[int]) -> bytes:
    """The registers as sent on the wire: each one high byte first."""
    return struct.pack(f">{len(registers)}H", *registers)


def bytes_to_registers(data: bytes) -> list[int]:
    return list(struct.unpack(f">{len(data) // 2}H", data))


def to_big_endian(data: bytes, order: WordOrder) -> bytes:
    """Reorder a value's register bytes, as received in ``order``, into big-endian (ABCD).

    The mapping is its own inverse, so the same function turns big-endian into ``order``.
    """
    if order is WordOrder.ABCD:
        return data
    if order is WordOrder.DCBA:
        return data[::-1]
    if order is WordOrder.CDAB:
        return b"".join(data[i : i + 2] for i in range(len(data) - 2, -1, -2))
    swapped = bytearray(len(data))  # BADC
    swapped[0::2] = data[1::2]
    swapped[1::2] = data[0::2]
    return bytes(swapped)


def decode_string(data: bytes, order: WordOrder = WordOrder.ABCD) -> str:
    """ASCII text, two characters per register; stops at the first NUL, strips spaces."""
    if order in _BYTE_SWAPPED:
        data = to_big_endian(data, WordOrder.BADC)
    text = data.split(b"\x00", 1)[0].decode("ascii", errors="replace")
    return text.strip(" ")


def decode_registers(
    registers: Sequence[int],
    type_: DataType,
    order: WordOrder = WordOrder.ABCD,
    *,
    bit: int | None = None,
) -> Value:
    """Decode one value from exactly the registers it occupies.

    Raises:
        ValueError: the number of registers does not fit the type.
    """
    data = registers_to_bytes(registers)
    if type_ is DataType.STRING:
        return decode_string(data, order)
    if type_ is DataType.BOOL:
        if len(registers) != 1:
            raise ValueError(f"bool takes 1 register, got {len(registers)}")
        return _bool_of(registers[0], bit)
    expected = REGISTERS_OF[type_]
    if len(registers) != expected:
        raise ValueError(f"{type_.value} takes {expected} registers, got {len(registers)}")
    value: Value = _STRUCTS[type_].unpack(to_big_endian(data, order))[0]
    return value


def _bool_of(register: int, bit: int | None) -> bool:
    return bool(register >> bit & 1) if bit is not None else register != 0


def encode_registers(
    value: Value, type_: DataType, order: WordOrder = WordOrder.ABCD, *, length: int | None = None
) -> list[int]:
    """The registers a device in ``order`` holds for ``value`` (strings: ``length`` registers).

    The inverse of ``decode_registers``; for writes and for tests that serve known values.

    Raises:
        ValueError: the value does not fit the type, or a string is longer than ``length``.
    """
    if type_ is DataType.STRING:
        raw = str(value).encode("ascii")
        size = 2 * (length if length is not None else (len(raw) + 1) // 2)
        if len(raw) > size:
            raise ValueError(f"{value!r} needs {len(raw)} bytes, the string holds {size}")
        data = raw.ljust(size, b"\x00")
        if order in _BYTE_SWAPPED:
            data = to_big_endian(data, WordOrder.BADC)
        return bytes_to_registers(data)
    if type_ is DataType.BOOL:
        return [1 if value else 0]
    try:
        data = _STRUCTS[type_].pack(value)
    except struct.error as exc:
        raise ValueError(f"{value!r} does not fit {type_.value}: {exc}") from exc
    return bytes_to_registers(to_big_endian(data, order))


def compile_decoder(
    type_: DataType,
    offset: int,
    order: WordOrder = WordOrder.ABCD,
    *,
    bit: int | None = None,
    length: int | None = None,
) -> RegisterDecoder:
    """A function reading one signal at ``offset`` registers into a block's bytes."""
    start = 2 * offset
    if type_ is DataType.STRING:
        stop = start + 2 * (length or 1)
        return lambda data: decode_string(data[start:stop], order)
    if type_ is DataType.BOOL:
        if bit is not None:
            mask = 1 << bit
            return lambda data: (data[start] << 8 | data[start + 1]) & mask != 0
        return lambda data: data[start] != 0 or data[start + 1] != 0
    unpack_from = _STRUCTS[type_].unpack_from
    if order is WordOrder.ABCD:
        return lambda data: unpack_from(data, start)[0]
    stop = start + 2 * REGISTERS_OF[type_]

    def reordered(data: bytes) -> Value:
        value: Value = unpack_from(to_big_endian(data[start:stop], order))[0]
        return value

    return reordered

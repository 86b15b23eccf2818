"""Every data type in every word order decodes to the value the device meant."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.drivers.modbus.codec import (
    compile_decoder,
    decode_registers,
    decode_string,
    encode_registers,
    registers_to_bytes,
)
from gateway.drivers.modbus.models import DataType, WordOrder

# Where each big-endian byte (A = most significant) travels on the wire, per order and size.
WIRE_LETTERS = {
    2: {"ABCD": "AB", "CDAB": "AB", "BADC": "BA", "DCBA": "BA"},
    4: {"ABCD": "ABCD", "CDAB": "CDAB", "BADC": "BADC", "DCBA": "DCBA"},
    8: {"ABCD": "ABCDEFGH", "CDAB": "GHEFCDAB", "BADC": "BADCFEHG", "DCBA": "HGFEDCBA"},
}

KNOWN_VALUES = [
    (DataType.INT16, ">h", -12345),
    (DataType.UINT16, ">H", 54321),
    (DataType.INT32, ">i", -123456789),
    (DataType.UINT32, ">I", 3_000_000_000),
    (DataType.INT64, ">q", -1_234_567_890_123),
    (DataType.UINT64, ">Q", 2**63 + 12345),
    (DataType.FLOAT32, ">f", 123.456),
    (DataType.FLOAT64, ">d", -9876.54321),
]


def wire_registers(fmt: str, value: float, order: str) -> list[int]:
    """The registers a device in ``order`` sends, built from struct and the letter table."""
    big_endian = struct.pack(fmt, value)
    letters = WIRE_LETTERS[len(big_endian)][order]
    wire = bytes(big_endian[ord(letter) - ord("A")] for letter in letters)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]


def expected(fmt: str, value: float) -> float:
    result: float = struct.unpack(fmt, struct.pack(fmt, value))[0]  # float32 rounds
    return result


@pytest.mark.parametrize("order", list(WordOrder))
@pytest.mark.parametrize(
    ("type_", "fmt", "value"), KNOWN_VALUES, ids=[t.value for t, _, _ in KNOWN_VALUES]
)
def test_codec_decodes_every_type_in_every_word_order(
    type_: DataType, fmt: str, value: float, order: WordOrder
) -> None:
    registers = wire_registers(fmt, value, order.value)
    assert decode_registers(registers, type_, order) == expected(fmt, value)
    block = [0xDEAD, 0xBEEF, *registers, 0xFFFF]  # the value sits at offset 2 of a block
    decoder = compile_decoder(type_, 2, order)
    assert decoder(registers_to_bytes(block)) == expected(fmt, value)
    assert encode_registers(value, type_, order) == registers


def test_codec_matches_published_float32_vectors() -> None:
    # 123.456 = 0x42F6E979, as vendor manuals tabulate it for each order.
    vectors = {
        WordOrder.ABCD: [0x42F6, 0xE979],
        WordOrder.CDAB: [0xE979, 0x42F6],
        WordOrder.BADC: [0xF642, 0x79E9],
        WordOrder.DCBA: [0x79E9, 0xF642],
    }
    for order, registers in vectors.items():
        value = decode_registers(registers, DataType.FLOAT32, order)
        assert value == pytest.approx(123.456, rel=1e-6), order


def test_codec_reads_unsigned_and_signed_views_of_one_register() -> None:
    assert decode_registers([0xFFFF], DataType.INT16) == -1
    assert decode_registers([0xFFFF], DataType.UINT16) == 65535
    assert decode_registers([0x8000, 0x0000], DataType.INT32) == -(2**31)
    assert decode_registers([0x0000, 0x8000], DataType.INT32, WordOrder.CDAB) == -(2**31)


def test_codec_picks_a_bit_of_a_register_counting_from_the_least_significant() -> None:
    register = 0b1000_0000_0000_0101
    for bit, value in ((0, True), (1, False), (2, True), (14, False), (15, True)):
        assert decode_registers([register], DataType.BOOL, bit=bit) is value
        assert (
            compile_decoder(DataType.BOOL, 1, bit=bit)(registers_to_bytes([0, register])) is value
        )


def test_codec_reads_a_whole_register_as_bool_when_nonzero() -> None:
    assert decode_registers([0], DataType.BOOL) is False
    assert decode_registers([0x0100], DataType.BOOL) is True
    assert compile_decoder(DataType.BOOL, 0)(registers_to_bytes([0x0001])) is True


def test_codec_reads_ascii_two_characters_per_register_and_strips_padding() -> None:
    registers = [0x4752, 0x2D33, 0x3130, 0x0000, 0x0000]  # "GR-310" then NULs
    assert decode_registers(registers, DataType.STRING) == "GR-310"
    assert decode_registers([0x2041, 0x4220, 0x2020], DataType.STRING) == "AB"
    assert decode_registers([0x4142, 0x0043], DataType.STRING) == "AB"  # stops at the first NUL
    swapped = [0x5247, 0x332D, 0x3031]  # low byte first
    assert decode_registers(swapped, DataType.STRING, WordOrder.BADC) == "GR-310"
    decoder = compile_decoder(DataType.STRING, 1, length=3)
    assert decoder(registers_to_bytes([0x5858, *registers[:3], 0x5858])) == "GR-310"


def test_codec_replaces_non_ascii_bytes_instead_of_failing() -> None:
    assert decode_string(b"A\xffB\x00") == "A\ufffdB"


def test_codec_rejects_the_wrong_number_of_registers() -> None:
    with pytest.raises(ValueError, match="float32 takes 2 registers, got 1"):
        decode_registers([1], DataType.FLOAT32)
    with pytest.raises(ValueError, match="does not fit int16"):
        encode_registers(40000, DataType.INT16)
    with pytest.raises(ValueError, match="the string holds 4"):
        encode_registers("TOO LONG", DataType.STRING, length=2)


def test_codec_passes_nan_through_for_the_driver_to_judge() -> None:
    nan = decode_registers([0x7FC0, 0x0000], DataType.FLOAT32)
    assert isinstance(nan, float) and math.isnan(nan)


@given(
    value=st.floats(width=32, allow_nan=False),
    order=st.sampled_from(list(WordOrder)),
    offset=st.integers(0, 5),
)
def test_codec_round_trips_any_float32(value: float, order: WordOrder, offset: int) -> None:
    registers = [0] * offset + encode_registers(value, DataType.FLOAT32, order)
    assert compile_decoder(DataType.FLOAT32, offset, order)(registers_to_bytes(registers)) == value


@given(value=st.integers(-(2**63), 2**63 - 1), order=st.sampled_from(list(WordOrder)))
def test_codec_round_trips_any_int64(value: int, order: WordOrder) -> None:
    assert (
        decode_registers(encode_registers(value, DataType.INT64, order), DataType.INT64, order)
        == value
    )


@given(text=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20))
def test_codec_round_trips_ascii_strings(text: str) -> None:
    registers = encode_registers(text, DataType.STRING, length=10)
    assert len(registers) == 10
    assert decode_registers(registers, DataType.STRING) == text


def test_profile_word_order_applies_to_multi_register_values_only() -> None:
    from gateway.drivers.modbus.driver import signal_word_order
    from gateway.drivers.modbus.models import ModbusSignal

    def signal(type_: str, **extra: object) -> ModbusSignal:
        length = {"length": 4} if type_ == "string" else {}
        return ModbusSignal.model_validate(
            {"name": "alarm_code", "address": 0, "type": type_, **length, **extra}
        )

    assert signal_word_order(signal("float32"), WordOrder.DCBA) is WordOrder.DCBA
    assert signal_word_order(signal("uint64"), WordOrder.CDAB) is WordOrder.CDAB
    assert signal_word_order(signal("int16"), WordOrder.DCBA) is WordOrder.ABCD
    assert signal_word_order(signal("string"), WordOrder.BADC) is WordOrder.ABCD
    assert signal_word_order(signal("int16", word_order="BADC"), WordOrder.ABCD) is WordOrder.BADC
    assert signal_word_order(signal("string", word_order="DCBA"), WordOrder.ABCD) is WordOrder.DCBA
    assert signal_word_order(signal("float32", word_order="ABCD"), WordOrder.CDAB) is WordOrder.ABCD

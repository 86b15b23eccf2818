"""Modbus TCP framing: requests as the standard spells them, replies taken apart and checked."""

from __future__ import annotations

import pytest

from gateway.drivers.modbus import mbap


def test_read_request_is_the_twelve_bytes_of_the_standard() -> None:
    # Modbus Messaging on TCP/IP, 4.1: tid, protocol 0, length 6, unit, function, start, count.
    assert mbap.read_request(0x0102, 17, 3, 0x006B, 3).hex(" ") == (
        "01 02 00 00 00 06 11 03 00 6b 00 03"
    )


def test_split_frames_takes_whole_frames_and_keeps_a_partial_one() -> None:
    first = bytes.fromhex("0001 0000 0007 01 03 04 002a 0001")
    second = bytes.fromhex("0002 0000 0005 01 03 02 0063")
    buffer = bytearray(first + second[:5])

    frames = mbap.split_frames(buffer)

    assert frames == [mbap.Frame(1, 1, bytes.fromhex("03 04 002a 0001"))]
    assert bytes(buffer) == second[:5]
    buffer += second[5:]
    assert mbap.split_frames(buffer) == [mbap.Frame(2, 1, bytes.fromhex("03 02 0063"))]
    assert not buffer


def test_split_frames_waits_for_a_header_split_across_reads() -> None:
    buffer = bytearray(bytes.fromhex("0001 0000"))
    assert mbap.split_frames(buffer) == []
    assert len(buffer) == 4


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("0001 0001 0005 01", "protocol id 1"),  # not Modbus TCP
        ("0001 0000 0001 01", "length 1"),  # no room for a function code
        ("0001 0000 0200 01", "length 512"),  # longer than any PDU
    ],
)
def test_a_stream_that_is_not_modbus_tcp_is_a_framing_error(header: str, why: str) -> None:
    with pytest.raises(mbap.FramingError, match=why):
        mbap.split_frames(bytearray(bytes.fromhex(header + " 03 02 0000")))


def test_rtu_framing_sent_to_a_tcp_endpoint_is_a_framing_error() -> None:
    # An RTU reply (unit 1, function 3, 2 bytes, CRC) where an MBAP header is expected.
    with pytest.raises(mbap.FramingError, match="not a Modbus TCP reply"):
        mbap.split_frames(bytearray(bytes.fromhex("01 03 02 00 2a 39 9b 00")))


def test_registers_and_bits_of_a_reply() -> None:
    assert mbap.reply_registers(bytes.fromhex("03 04 002a ffff"), 3) == [42, 65535]
    assert mbap.reply_registers(bytes.fromhex("04 02 0007"), 4) == [7]
    bits = mbap.reply_bits(bytes.fromhex("01 02 cd 01"), 1)
    assert bits[:10] == [True, False, True, True, False, False, True, True, True, False]
    assert len(bits) == 16


def test_a_reply_for_another_function_or_with_a_wrong_byte_count_is_refused() -> None:
    with pytest.raises(mbap.ReplyError, match="for function 4, not 3"):
        mbap.reply_registers(bytes.fromhex("04 02 0007"), 3)
    with pytest.raises(mbap.ReplyError, match="byte count 6 overruns"):
        mbap.reply_registers(bytes.fromhex("03 06 0001 0002"), 3)
    with pytest.raises(mbap.ReplyError, match="byte count - overruns"):
        mbap.reply_registers(bytes.fromhex("03"), 3)


def test_exception_replies_give_their_code() -> None:
    assert mbap.exception_code(bytes.fromhex("83 02")) == 2
    assert mbap.exception_code(bytes.fromhex("81 0b")) == 11
    assert mbap.exception_code(bytes.fromhex("03 02 0000")) is None

"""Modbus TCP framing (the MBAP header): build read requests and take replies apart.

Modbus TCP puts a 7-byte header before each PDU: transaction id, protocol id (0), the length of
what follows, and the unit id. Replies carry the request's transaction id, so a reply can be
matched to its request even after a timed-out request's late reply arrives.

Why the gateway frames Modbus TCP itself rather than through pymodbus: pymodbus's client costs
about 50 us of CPU per request on top of the socket I/O (a PDU object each way, its transaction
manager, ``wait_for``, trace hooks), which at the 2,000 requests/s of the gateway benchmark is a
tenth of a core for nothing. Serial framings (RTU on a port or through a converter) still go
through pymodbus: a serial line carries at most a few hundred requests a second.

Pure: no I/O. ``transport.py`` owns the socket.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "HEADER",
    "MAX_PDU",
    "Frame",
    "FramingError",
    "ReplyError",
    "exception_code",
    "read_request",
    "reply_bits",
    "reply_registers",
    "split_frames",
]

HEADER: Final = 7
"""MBAP header bytes: transaction id (2), protocol id (2), length (2), unit id (1)."""
MAX_PDU: Final = 253
"""The longest PDU the standard allows."""
_REQUEST: Final = struct.Struct(">HHHBBHH")
_HEAD: Final = struct.Struct(">HHHB")


class FramingError(ValueError):
    """The byte stream is not Modbus TCP (a wrong port, or RTU framing on a tcp:// endpoint)."""


class ReplyError(ValueError):
    """A well-framed reply that does not answer its request (wrong function, unit, or length)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One reply: its transaction id, unit id and PDU (function code first)."""

    transaction_id: int
    unit_id: int
    pdu: bytes


def read_request(
    transaction_id: int, unit_id: int, function_code: int, start: int, count: int
) -> bytes:
    """The 12 bytes of a read request (function codes 1-4)."""
    return _REQUEST.pack(transaction_id, 0, 6, unit_id, function_code, start, count)


def split_frames(buffer: bytearray) -> list[Frame]:
    """Take every complete frame off the front of ``buffer``; a partial frame stays in it.

    Raises:
        FramingError: the header is not Modbus TCP's (protocol id not 0, or an impossible length);
            the stream cannot be resynchronized, so the connection must be dropped.
    """
    frames: list[Frame] = []
    offset = 0
    size = len(buffer)
    while size - offset >= HEADER:
        tid, protocol, length, unit = _HEAD.unpack_from(buffer, offset)
        if protocol != 0 or not 2 <= length <= MAX_PDU + 1:
            raise FramingError(
                f"not a Modbus TCP reply (protocol id {protocol}, length {length}): "
                f"{bytes(buffer[offset : offset + HEADER]).hex(' ')}"
            )
        end = offset + 6 + length
        if end > size:
            break
        frames.append(Frame(tid, unit, bytes(buffer[offset + HEADER : end])))
        offset = end
    if offset:
        del buffer[:offset]
    return frames


def exception_code(pdu: bytes) -> int | None:
    """The exception code of an exception reply (function code with bit 7 set), else None."""
    if pdu[0] & 0x80:
        return pdu[1] if len(pdu) > 1 else 0
    return None


def _payload(pdu: bytes, function_code: int) -> bytes:
    if pdu[0] != function_code:
        raise ReplyError(f"the reply is for function {pdu[0]}, not {function_code}")
    if len(pdu) < 2 or len(pdu) < 2 + pdu[1]:
        raise ReplyError(f"the reply's byte count {pdu[1] if len(pdu) > 1 else '-'} overruns it")
    return pdu[2 : 2 + pdu[1]]


def reply_registers(pdu: bytes, function_code: int) -> list[int]:
    """The registers of a function 3 or 4 reply (as many as it holds).

    Raises:
        ReplyError: the reply is for another function or its byte count does not fit.
    """
    data = _payload(pdu, function_code)
    return list(struct.unpack(f">{len(data) // 2}H", data[: len(data) // 2 * 2]))


def reply_bits(pdu: bytes, function_code: int) -> list[bool]:
    """The bits of a function 1 or 2 reply, least significant bit of each byte first."""
    data = _payload(pdu, function_code)
    return [bool(byte >> bit & 1) for byte in data for bit in range(8)]

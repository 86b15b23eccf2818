"""Encode telemetry rows in PostgreSQL's binary COPY format, straight from wire values.

Building the bytes here (one ``struct.pack`` per row, timestamps as integers) skips creating a
``datetime`` and a tuple per sample, the largest per-sample cost of a generic COPY.
Row layout = table ``telemetry``: ts, value, device_key, signal_id, quality, value_text.
"""

from __future__ import annotations

import struct
from typing import Final

SIGNATURE: Final = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER: Final = b"\xff\xff"
PG_EPOCH_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z, PostgreSQL's timestamp zero
TELEMETRY_COLUMNS: Final = "ts, value, device_key, signal_id, quality, value_text"

# fields, then (length, value) per column; -1 length = NULL
_NUMBER = struct.Struct("!hiqidiiihihi")
_NO_NUMBER = struct.Struct("!hiqiiiihihi")


class TelemetryCopy:
    """Accumulates telemetry rows; ``data()`` is a complete COPY ... (FORMAT BINARY) stream."""

    __slots__ = ("_buffer", "rows")

    def __init__(self) -> None:
        self._buffer = bytearray(SIGNATURE)
        self.rows = 0

    def add_number(
        self, ts_ms: int, value: float, device_key: int, signal_id: int, quality: int
    ) -> None:
        self._buffer += _NUMBER.pack(
            6, 8, (ts_ms - PG_EPOCH_MS) * 1000, 8, value, 4, device_key, 2, signal_id, 2,
            quality, -1,
        )  # fmt: skip
        self.rows += 1

    def add_text(
        self, ts_ms: int, text: str, device_key: int, signal_id: int, quality: int
    ) -> None:
        encoded = text.encode("utf-8")
        self._buffer += _NO_NUMBER.pack(
            6, 8, (ts_ms - PG_EPOCH_MS) * 1000, -1, 4, device_key, 2, signal_id, 2, quality,
            len(encoded),
        )  # fmt: skip
        self._buffer += encoded
        self.rows += 1

    def add_null(self, ts_ms: int, device_key: int, signal_id: int, quality: int) -> None:
        self._buffer += _NO_NUMBER.pack(
            6, 8, (ts_ms - PG_EPOCH_MS) * 1000, -1, 4, device_key, 2, signal_id, 2, quality, -1
        )
        self.rows += 1

    def data(self) -> bytes:
        return bytes(self._buffer + TRAILER)


_INCREMENT = struct.Struct("!hiqidiiihih")
INCREMENT_COLUMNS: Final = "ts, increase, device_key, signal_id, event"


class IncrementCopy:
    """Rows of table ``counter_increments`` (ts, increase, device_key, signal_id, event)."""

    __slots__ = ("_buffer", "rows")

    def __init__(self) -> None:
        self._buffer = bytearray(SIGNATURE)
        self.rows = 0

    def add(self, ts_ms: int, increase: float, device_key: int, signal_id: int, event: int) -> None:
        self._buffer += _INCREMENT.pack(
            5, 8, (ts_ms - PG_EPOCH_MS) * 1000, 8, increase, 4, device_key, 2, signal_id, 2, event
        )
        self.rows += 1

    def data(self) -> bytes:
        return bytes(self._buffer + TRAILER)

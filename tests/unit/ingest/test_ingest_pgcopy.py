"""The binary COPY encoder writes PostgreSQL's documented layout, field by field."""

from __future__ import annotations

import struct

from ingest.db.pgcopy import PG_EPOCH_MS, SIGNATURE, TRAILER, IncrementCopy, TelemetryCopy


def parse(data: bytes) -> list[list[bytes | None]]:
    assert data.startswith(SIGNATURE) and data.endswith(TRAILER)
    body, rows = memoryview(data)[len(SIGNATURE) : -len(TRAILER)], []
    pos = 0
    while pos < len(body):
        (count,) = struct.unpack_from("!h", body, pos)
        pos += 2
        fields: list[bytes | None] = []
        for _ in range(count):
            (length,) = struct.unpack_from("!i", body, pos)
            pos += 4
            if length < 0:
                fields.append(None)
            else:
                fields.append(bytes(body[pos : pos + length]))
                pos += length
        rows.append(fields)
    return rows


def test_rows_hold_ts_value_device_signal_quality_text():
    copy = TelemetryCopy()
    copy.add_number(PG_EPOCH_MS + 1500, 2.5, 7, 3, 0)
    copy.add_text(PG_EPOCH_MS, "运行", 8, 4, 1)
    copy.add_null(0, 9, 5, 2)
    rows = parse(copy.data())
    assert copy.rows == 3
    ts, value, device, signal, quality, text = rows[0]
    assert struct.unpack("!q", ts) == (1_500_000,)  # microseconds since 2000-01-01
    assert struct.unpack("!d", value) == (2.5,)
    assert struct.unpack("!i", device) == (7,) and struct.unpack("!h", signal) == (3,)
    assert struct.unpack("!h", quality) == (0,) and text is None
    assert rows[1][1] is None and rows[1][5] == "运行".encode()
    assert struct.unpack("!q", rows[2][0]) == (-PG_EPOCH_MS * 1000,)  # 1970 is before 2000
    assert rows[2][1] is None and rows[2][5] is None
    assert struct.unpack("!h", rows[2][4]) == (2,)


def test_an_empty_copy_is_still_a_valid_stream():
    assert parse(TelemetryCopy().data()) == []


def test_increment_rows_hold_ts_increase_device_signal_event():
    copy = IncrementCopy()
    copy.add(PG_EPOCH_MS + 2, 3.5, 11, 12, 2)
    (row,) = parse(copy.data())
    assert [
        struct.unpack(f, v) for f, v in zip(["!q", "!d", "!i", "!h", "!h"], row, strict=True)
    ] == [
        (2000,),
        (3.5,),
        (11,),
        (12,),
        (2,),
    ]

"""Batches: seq per boot from 1, size and delay limits, and wire-exact encoding of stored samples."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.buffer import NewBatch, StoredBatch
from gateway.normalize import OutSample, ReasonedSample
from gateway.pipeline import Batcher
from wire.codec import decode_batch, encode
from wire.payloads import Batch, Quality, Sample


def samples(n: int, start: int = 0) -> list[OutSample]:
    return [OutSample("d1", "part_count", 1000 + i, start + i, Quality.GOOD) for i in range(n)]


async def test_batches_split_at_max_samples_and_seq_counts_from_one() -> None:
    sealed: list[NewBatch] = []
    batcher = Batcher("boot-1", 10, 10_000, sealed.append)
    batcher.add(samples(25))
    assert [(b.seq, b.samples) for b in sealed] == [(1, 10), (2, 10)]
    batcher.flush()
    assert [(b.seq, b.samples) for b in sealed] == [(1, 10), (2, 10), (3, 5)]
    values = [s["value"] for b in sealed for s in orjson.loads(b.payload)]
    assert values == list(range(25)), "order kept across batches"


async def test_a_partial_batch_is_sealed_after_the_delay() -> None:
    sealed: list[NewBatch] = []
    batcher = Batcher("boot-1", 500, 30, sealed.append)
    batcher.add(samples(3))
    assert sealed == []
    for _ in range(100):
        if sealed:
            break
        await asyncio.sleep(0.01)
    assert [b.samples for b in sealed] == [3]


def test_spliced_encoding_equals_the_wire_model_encoding() -> None:
    from gateway.publisher import Publisher

    out = [
        OutSample("grinder-01", "spindle_speed", 1764324000100, 24000.5, Quality.GOOD),
        OutSample("grinder-01", "machine_state", 1764324000100, "running", Quality.GOOD),
        OutSample("grinder-01", "alarm_active", 1764324000100, False, Quality.GOOD),
        OutSample("grinder-01", "part_count", 1764324000100, 17, Quality.GOOD),
        OutSample("grinder-01", "coolant_temperature", 1764324000100, None, Quality.BAD),
        ReasonedSample(
            "grinder-01", "spindle_load", 1764324000100, None, Quality.BAD, "BadNoCommunication"
        ),
    ]
    stored = StoredBatch(7, "boot-9", 42, 1764324000123, len(out), orjson.dumps(out))
    publisher: Any = Publisher.__new__(Publisher)
    publisher.gateway = "gw-01"
    data = Publisher.encode_batch(publisher, stored, True)
    decoded = decode_batch(data)
    expected = Batch(
        gateway="gw-01",
        boot="boot-9",
        seq=42,
        ts_ms=1764324000123,
        historical=True,
        samples=[
            Sample(
                device=s.device,
                signal=s.signal,
                ts_ms=s.ts_ms,
                value=s.value,
                quality=s.quality,
                reason=getattr(s, "reason", None),
            )
            for s in out
        ],
    )
    assert decoded == expected
    wire_form = orjson.loads(encode(expected))
    for sample in wire_form["samples"]:  # the gateway leaves out an empty reason (1.1)
        if sample["reason"] is None:
            del sample["reason"]
    assert orjson.loads(data) == wire_form


class FlakyBuffer:
    """An AsyncBuffer stand-in whose disk fails ``failures`` times, then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.rows: list[NewBatch] = []

    async def append(self, batches: list[NewBatch]) -> list[StoredBatch]:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        start = len(self.rows)
        self.rows += batches
        return [
            StoredBatch(start + i + 1, b.boot, b.seq, b.created_ms, b.samples, b.payload)
            for i, b in enumerate(batches)
        ]


def new_batch(seq: int) -> NewBatch:
    return NewBatch("boot", seq, seq, 2, b"[]")


async def test_spool_holds_batches_while_the_disk_fails_then_writes_them_in_order() -> None:
    from gateway.pipeline import Spool

    buffer = FlakyBuffer(failures=2)
    offered: list[StoredBatch] = []
    spool = Spool(buffer, offered.extend)  # type: ignore[arg-type]  # a stand-in buffer
    task = asyncio.create_task(spool.run())
    try:
        for seq in range(1, 6):
            spool.put(new_batch(seq))
        await spool.drain(timeout_s=5)
    finally:
        task.cancel()
    assert [b.seq for b in buffer.rows] == [1, 2, 3, 4, 5]
    assert [b.seq for b in offered] == [1, 2, 3, 4, 5]
    assert spool.dropped_samples == 0


async def test_spool_sheds_the_oldest_when_the_disk_stays_down(monkeypatch: Any) -> None:
    import gateway.pipeline as pipeline
    from gateway.pipeline import Spool

    monkeypatch.setattr(pipeline, "MAX_PENDING", 3)
    buffer = FlakyBuffer(failures=1)
    spool = Spool(buffer, lambda _stored: None)  # type: ignore[arg-type]
    for seq in range(1, 7):
        spool.put(new_batch(seq))
    task = asyncio.create_task(spool.run())
    try:
        await spool.drain(timeout_s=5)
    finally:
        task.cancel()
    assert [b.seq for b in buffer.rows] == [4, 5, 6]
    assert spool.dropped_samples == 6

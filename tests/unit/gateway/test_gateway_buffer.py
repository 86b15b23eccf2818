"""The disk buffer: order, deletion, byte cap (oldest dropped and counted), age cap, persistence."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from gateway.buffer import AsyncBuffer, DiskBuffer, NewBatch


def batch(seq: int, samples: int = 10, created_ms: int = 1_000, size: int = 100) -> NewBatch:
    # Random bytes do not compress, so the stored size is predictable.
    payload = orjson.dumps([os.urandom(size // 2).hex()])
    return NewBatch("boot-1", seq, created_ms + seq, samples, payload)


def test_batches_come_back_in_order_and_leave_only_when_deleted(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite3")
    stored = buf.append([batch(i) for i in range(1, 6)])
    assert [s.seq for s in stored] == [1, 2, 3, 4, 5]
    assert [s.id for s in stored] == sorted(s.id for s in stored)
    buf.delete([stored[1].id, stored[3].id])
    assert [b.seq for b in buf.read_after(0)] == [1, 3, 5]
    assert [b.seq for b in buf.read_after(stored[0].id, before_id=stored[4].id)] == [3]
    assert buf.read_after(0)[0].payload == stored[0].payload
    assert buf.stats().batches == 3 and buf.stats().samples == 30


def test_contents_and_counters_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    buf = DiskBuffer(path, max_bytes=1024 * 1024)
    buf.append([batch(i) for i in range(1, 4)])
    buf.close()
    again = DiskBuffer(path, max_bytes=1024 * 1024)
    assert [b.seq for b in again.read_after(0)] == [1, 2, 3]
    assert again.stats().bytes > 0


def test_byte_cap_drops_oldest_and_counts_what_was_lost(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    probe = DiskBuffer(tmp_path / "probe.sqlite3")
    probe.append([batch(1, size=2000)])
    per_row = probe.stats().bytes
    buf = DiskBuffer(path, max_bytes=1024 * 1024)
    buf.max_bytes = per_row * 10  # room for ten batches
    for seq in range(1, 26):
        buf.append([batch(seq, samples=7, size=2000)])
    stats = buf.stats()
    assert stats.bytes <= buf.max_bytes
    kept = [b.seq for b in buf.read_after(0)]
    assert kept == list(range(26 - len(kept), 26)), "the newest are kept, in order"
    assert stats.dropped_batches == 25 - len(kept)
    assert stats.dropped_samples == 7 * stats.dropped_batches
    buf.close()
    assert DiskBuffer(path, max_bytes=1024 * 1024).stats().dropped_samples == stats.dropped_samples


def test_age_cap_expires_a_prefix_and_counts_it(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite3", max_age_s=10)
    buf.append([batch(1, created_ms=0), batch(2, created_ms=5_000), batch(3, created_ms=60_000)])
    assert buf.expire(now_ms=20_000) == 2
    assert [b.seq for b in buf.read_after(0)] == [3]
    assert buf.stats().dropped_samples == 20


def test_deleting_a_dropped_or_unknown_id_is_harmless(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite3")
    [stored] = buf.append([batch(1)])
    buf.delete([stored.id, stored.id + 1000])
    assert buf.stats().batches == 0 and buf.stats().bytes == 0


async def test_async_buffer_runs_calls_in_order_off_the_loop(tmp_path: Path) -> None:
    buf = AsyncBuffer.at(tmp_path / "b.sqlite3", 1024 * 1024)
    await buf.open()
    stored = await buf.append([batch(1), batch(2)])
    await buf.delete([stored[0].id])
    assert [b.seq for b in await buf.read_after(0)] == [2]
    assert (await buf.stats()).batches == 1
    await buf.close()

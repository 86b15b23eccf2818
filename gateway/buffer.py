"""Durable store-and-forward: every batch is on disk before it is published, and leaves on its PUBACK.

SQLite in WAL mode, one file under ``gateway.data_dir``. Why these choices:

- **kill -9** (process crash): a committed transaction is in the WAL, which the OS page cache
  holds; SQLite recovers it at the next open whatever ``synchronous`` says.
- **Power loss**: only ``synchronous=FULL`` fsyncs the WAL at each commit, so it is the default.
  Commits are grouped (all batches sealed while the previous commit ran go in one transaction), so
  the cost is one fsync per group, a few per second, not one per sample. ``normal`` trades the
  last second or so of data at power loss for fewer fsyncs (SD cards, cheap eMMC).
- **Bounded**: by ``max_bytes`` of stored payload plus a per-row overhead, and optionally by
  age; when full, the oldest batches are dropped and the dropped batches and samples are counted
  in the same transaction, so the count survives restarts (GatewayStatus.buffer_dropped_samples).
- **Never wiped**: reconnects and config changes do not touch this file; only a PUBACK deletes a row.
- Payloads are zlib-compressed (level 1): JSON samples shrink about 8x, so the same disk holds
  hours of outage rather than minutes, for ~0.1 ms of CPU per batch.

All I/O runs on one dedicated thread (``AsyncBuffer``), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
ROW_OVERHEAD_BYTES: Final = 64
"""Approximate bytes SQLite spends per row beyond the payload (header, ids, index entry)."""
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    boot TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(slots=True, frozen=True)
class NewBatch:
    """A sealed batch before it is stored: ``payload`` is the JSON array of its samples."""

    boot: str
    seq: int
    created_ms: int
    samples: int
    payload: bytes


@dataclass(slots=True, frozen=True)
class StoredBatch:
    """A batch in the buffer; ``id`` orders batches for replay and names the row to delete."""

    id: int
    boot: str
    seq: int
    created_ms: int
    samples: int
    payload: bytes


@dataclass(slots=True, frozen=True)
class BufferStats:
    batches: int
    bytes: int
    samples: int
    dropped_batches: int
    dropped_samples: int
    oldest_ms: int | None


class DiskBuffer:
    """The SQLite queue itself; not thread-safe, so use it from one thread (AsyncBuffer does)."""

    def __init__(
        self,
        path: Path,
        max_bytes: int = 2 * 1024**3,
        max_age_s: float | None = None,
        synchronous: str = "full",
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        self._db.execute("PRAGMA journal_size_limit=67108864")
        self._db.executescript(_SCHEMA)
        self._check_schema()
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), COALESCE(SUM(samples), 0) "
            "FROM batches"
        ).fetchone()
        self._batches, payload_bytes, self._samples = int(row[0]), int(row[1]), int(row[2])
        self._bytes = payload_bytes + ROW_OVERHEAD_BYTES * self._batches
        self.dropped_batches = self._counter("dropped_batches")
        self.dropped_samples = self._counter("dropped_samples")

    def _check_schema(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) != SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: buffer schema {row[0]} is not {SCHEMA_VERSION}; "
                "publish its backlog with the gateway version that wrote it before upgrading"
            )

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def append(self, batches: list[NewBatch]) -> list[StoredBatch]:
        """Store ``batches`` in one transaction, dropping the oldest first if over the byte cap."""
        rows = [
            (b.boot, b.seq, b.created_ms, b.samples, zlib.compress(b.payload, 1)) for b in batches
        ]
        incoming = sum(len(r[4]) + ROW_OVERHEAD_BYTES for r in rows)
        stored: list[StoredBatch] = []
        with self._transaction():
            self._make_room(incoming)
            cur = self._db.cursor()
            for batch, row in zip(batches, rows, strict=True):
                cur.execute(
                    "INSERT INTO batches(boot, seq, created_ms, samples, payload) "
                    "VALUES (?, ?, ?, ?, ?)",
                    row,
                )
                rowid = cur.lastrowid
                assert rowid is not None
                stored.append(
                    StoredBatch(
                        rowid, batch.boot, batch.seq, batch.created_ms, batch.samples, batch.payload
                    )
                )
        self._bytes += incoming
        self._batches += len(rows)
        self._samples += sum(b.samples for b in batches)
        return stored

    def _make_room(self, incoming: int) -> None:
        excess = self._bytes + incoming - self.max_bytes
        while excess > 0:
            rows = self._db.execute(
                "SELECT id, samples, LENGTH(payload) FROM batches ORDER BY id LIMIT 512"
            ).fetchall()
            if not rows:
                return
            victims = []
            for rowid, samples, size in rows:
                victims.append((rowid, samples, size))
                excess -= size + ROW_OVERHEAD_BYTES
                if excess <= 0:
                    break
            self._drop(victims, why="the buffer reached its byte cap")

    def _drop(self, victims: list[tuple[int, int, int]], why: str) -> None:
        """Delete ``victims`` (id, samples, bytes) as lost data and count them (inside a transaction)."""
        self._db.execute("DELETE FROM batches WHERE id <= ?", (victims[-1][0],))
        samples = sum(v[1] for v in victims)
        self.dropped_batches += len(victims)
        self.dropped_samples += samples
        self._db.executemany(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            [
                ("dropped_batches", self.dropped_batches),
                ("dropped_samples", self.dropped_samples),
            ],
        )
        self._bytes -= sum(v[2] + ROW_OVERHEAD_BYTES for v in victims)
        self._batches -= len(victims)
        self._samples -= samples
        log.warning(
            "buffer dropped oldest batches",
            extra={
                "reason": why,
                "batches": len(victims),
                "samples": samples,
                "dropped_samples_total": self.dropped_samples,
            },
        )

    def expire(self, now_ms: int | None = None) -> int:
        """Drop (and count) batches older than ``max_age_s``; returns how many went."""
        if self.max_age_s is None:
            return 0
        cutoff = (now_ms if now_ms is not None else int(time.time() * 1000)) - int(
            self.max_age_s * 1000
        )
        # Ids follow creation order, so only a prefix may expire (a clock step never punches holes).
        victims: list[tuple[int, int, int]] = []
        rows = self._db.execute(
            "SELECT id, samples, LENGTH(payload), created_ms FROM batches ORDER BY id LIMIT 10000"
        ).fetchall()
        for rowid, samples, size, created_ms in rows:
            if created_ms >= cutoff:
                break
            victims.append((rowid, samples, size))
        if victims:
            with self._transaction():
                self._drop(victims, why="batches older than buffer.max_age_s")
        return len(victims)

    def delete(self, ids: Iterable[int]) -> None:
        """Remove acknowledged batches (missing ids are fine: they may have been dropped)."""
        wanted = list(ids)
        if not wanted:
            return
        with self._transaction():
            gone = 0
            gone_bytes = 0
            gone_samples = 0
            for chunk_start in range(0, len(wanted), 500):
                chunk = wanted[chunk_start : chunk_start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), COALESCE(SUM(samples), 0) "
                    f"FROM batches WHERE id IN ({marks})",
                    chunk,
                ).fetchone()
                self._db.execute(f"DELETE FROM batches WHERE id IN ({marks})", chunk)
                gone += int(rows[0])
                gone_bytes += int(rows[1])
                gone_samples += int(rows[2])
        self._batches -= gone
        self._bytes -= gone_bytes + gone * ROW_OVERHEAD_BYTES
        self._samples -= gone_samples

    def read_after(
        self, after_id: int, before_id: int | None = None, limit: int = 64
    ) -> list[StoredBatch]:
        """Batches with ``after_id < id < before_id`` in id order (the replay cursor's next page)."""
        upper = before_id if before_id is not None else 2**63 - 1
        rows = self._db.execute(
            "SELECT id, boot, seq, created_ms, samples, payload FROM batches "
            "WHERE id > ? AND id < ? ORDER BY id LIMIT ?",
            (after_id, upper, limit),
        ).fetchall()
        return [StoredBatch(r[0], r[1], r[2], r[3], r[4], zlib.decompress(r[5])) for r in rows]

    def stats(self) -> BufferStats:
        row = self._db.execute("SELECT created_ms FROM batches ORDER BY id LIMIT 1").fetchone()
        oldest = row[0] if row else None
        return BufferStats(
            batches=self._batches,
            bytes=self._bytes,
            samples=self._samples,
            dropped_batches=self.dropped_batches,
            dropped_samples=self.dropped_samples,
            oldest_ms=oldest,
        )

    def close(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


class AsyncBuffer:
    """DiskBuffer on its own thread: every call is awaited, none blocks the event loop.

    Calls run strictly in submission order on that one thread, so a read submitted after a
    delete sees the delete.
    """

    def __init__(self, disk_factory: Callable[[], DiskBuffer]) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buffer")
        self._factory = disk_factory
        self._disk: DiskBuffer | None = None
        self.last_stats = BufferStats(0, 0, 0, 0, 0, None)

    @classmethod
    def at(
        cls,
        path: Path,
        max_bytes: int,
        max_age_s: float | None = None,
        synchronous: str = "full",
    ) -> AsyncBuffer:
        return cls(lambda: DiskBuffer(path, max_bytes, max_age_s, synchronous))

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _disk_or_raise(self) -> DiskBuffer:
        if self._disk is None:
            raise RuntimeError("buffer is not open")
        return self._disk

    async def open(self) -> BufferStats:
        def _open() -> BufferStats:
            self._disk = self._factory()
            return self._disk.stats()

        self.last_stats = await self._run(_open)
        return self.last_stats

    async def append(self, batches: list[NewBatch]) -> list[StoredBatch]:
        return await self._run(lambda: self._disk_or_raise().append(batches))

    async def delete(self, ids: list[int]) -> None:
        await self._run(lambda: self._disk_or_raise().delete(ids))

    async def read_after(
        self, after_id: int, before_id: int | None = None, limit: int = 64
    ) -> list[StoredBatch]:
        return await self._run(lambda: self._disk_or_raise().read_after(after_id, before_id, limit))

    async def expire(self) -> int:
        return await self._run(lambda: self._disk_or_raise().expire())

    async def stats(self) -> BufferStats:
        self.last_stats = await self._run(lambda: self._disk_or_raise().stats())
        return self.last_stats

    async def close(self) -> None:
        if self._disk is not None:
            disk = self._disk
            await self._run(disk.close)
            self._disk = None
        self._executor.shutdown(wait=True)

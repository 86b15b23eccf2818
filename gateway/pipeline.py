"""The path from a driver's readings to the disk buffer: normalize, report by exception, batch, spool.

Everything here runs on the event loop and never blocks: the only I/O (the SQLite commit) is
awaited on the buffer's thread by ``Spool``, which groups every batch sealed meanwhile into one
transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from gateway.buffer import AsyncBuffer, NewBatch, StoredBatch
from gateway.drivers.base import RawReading
from gateway.normalize import DeviceNormalizer, OutSample, ReasonedSample
from gateway.rbe import ReportByException

log = logging.getLogger(__name__)

MAX_PENDING = 2000
"""Sealed batches held in memory while the disk buffer cannot take them (about 1 M samples)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class DeviceCounters:
    """Plain counters bumped on the hot path; the metrics collector reads them at scrape time."""

    points_read: int = 0
    points_reported: int = 0
    bad_samples: int = 0
    read_cycles: int = 0
    read_errors: int = 0
    reconnects: int = 0
    overruns: int = 0
    requests: int = 0


class Batcher:
    """Collect samples into batches of at most ``max_samples``, sealed within ``max_delay_ms``.

    ``seq`` counts up from 1 per boot and is assigned when a batch is sealed, so the same batch
    keeps its ``(boot, seq)`` through every redelivery and restart.
    """

    def __init__(
        self,
        boot: str,
        max_samples: int,
        max_delay_ms: int,
        on_sealed: Callable[[NewBatch], None],
    ) -> None:
        self.boot = boot
        self.max_samples = max_samples
        self.max_delay_s = max_delay_ms / 1000
        self.on_sealed = on_sealed
        self.seq = 0
        self._pending: list[OutSample] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, samples: list[OutSample]) -> None:
        if not samples:
            return
        pending = self._pending
        pending.extend(samples)
        while len(pending) >= self.max_samples:
            self._seal(pending[: self.max_samples])
            del pending[: self.max_samples]
        if pending and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_delay_s, self.flush)
        elif not pending and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def flush(self) -> None:
        """Seal whatever is pending (the delay timer, and stop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            self._seal(self._pending)
            self._pending = []

    def _seal(self, samples: list[OutSample]) -> None:
        self.seq += 1
        payload = orjson.dumps(samples)
        self.on_sealed(NewBatch(self.boot, self.seq, now_ms(), len(samples), payload))


class Spool:
    """Write sealed batches to the disk buffer (grouped commits), then offer them for publishing."""

    def __init__(self, buffer: AsyncBuffer, on_stored: Callable[[list[StoredBatch]], None]) -> None:
        self.buffer = buffer
        self.on_stored = on_stored
        self._pending: list[NewBatch] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.commits = 0
        self.dropped_samples = 0

    def put(self, batch: NewBatch) -> None:
        self._pending.append(batch)
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batches, self._pending = self._pending, []
                try:
                    stored = await self.buffer.append(batches)
                except Exception as exc:  # the task boundary: a full or failing disk
                    failures += 1
                    self._pending = batches + self._pending
                    self._shed_excess()
                    if failures == 1 or failures % 60 == 0:
                        log.error(
                            "cannot write to the disk buffer; holding batches in memory",
                            extra={"error": repr(exc), "pending_batches": len(self._pending)},
                        )
                    await asyncio.sleep(min(5.0, 0.2 * failures))
                    continue
                failures = 0
                self.commits += 1
                self.on_stored(stored)
            self._idle.set()

    def _shed_excess(self) -> None:
        """While the disk fails, keep at most MAX_PENDING batches in memory (drop the oldest)."""
        excess = len(self._pending) - MAX_PENDING
        if excess > 0:
            dropped = self._pending[:excess]
            del self._pending[:excess]
            self.dropped_samples += sum(b.samples for b in dropped)
            log.error(
                "dropped batches the disk buffer could not take",
                extra={"batches": excess, "dropped_samples_total": self.dropped_samples},
            )

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every batch put so far is on disk."""
        if self._pending:
            self._wake.set()
        await asyncio.wait_for(self._idle.wait(), timeout_s)


class DevicePipeline:
    """One device's readings -> normalized, filtered samples -> the shared batcher."""

    def __init__(
        self,
        normalizer: DeviceNormalizer,
        rbe: ReportByException,
        batcher: Batcher,
        counters: DeviceCounters,
    ) -> None:
        self.normalizer = normalizer
        self.rbe = rbe
        self.batcher = batcher
        self.counters = counters
        self.last_good_ms: int | None = None
        self.last_raw: dict[str, RawReading] = {}
        """Each signal's latest reading as the driver gave it (the status page shows it)."""
        self.last_samples: dict[str, OutSample] = {}
        """Each signal's latest normalized sample, before report by exception drops repeats."""
        self._reasons: dict[str, str] = {}
        """Signals last reported not good, with the reason logged for them."""

    def accept(self, readings: list[RawReading]) -> None:
        """Process one cycle's (or one notification's) readings; runs on the event loop."""
        if not readings:
            return
        counters = self.counters
        counters.points_read += len(readings)
        bad_before = self.normalizer.bad_samples
        samples = self.normalizer.normalize(readings)
        # The status page's "last values": one dict store per value and stage, about 20 ns
        # each against about 450 ns for the rest of accept (50 gauge values, measured).
        last_raw = self.last_raw
        for reading in readings:
            last_raw[reading.signal] = reading
        last_samples = self.last_samples
        for sample in samples:
            last_samples[sample.signal] = sample
        counters.bad_samples += self.normalizer.bad_samples - bad_before
        reported = self.rbe.filter(samples)
        counters.points_reported += len(reported)
        if reported:
            self._log_reasons(reported)
        if len(samples) > self.normalizer.bad_samples - bad_before:
            self.last_good_ms = now_ms()
        self.batcher.add(reported)

    def _log_reasons(self, reported: list[OutSample]) -> None:
        """Log each signal's change to or between bad (or uncertain) reasons, and its return to
        good: one line per reason and cycle, listing the signals, never one per sample."""
        reasons = self._reasons
        changed: dict[str, list[str]] = {}
        recovered: list[str] = []
        for sample in reported:
            if type(sample) is ReasonedSample:
                if reasons.get(sample.signal) != sample.reason:
                    reasons[sample.signal] = sample.reason
                    changed.setdefault(sample.reason, []).append(sample.signal)
            elif reasons and reasons.pop(sample.signal, None) is not None:
                recovered.append(sample.signal)
        device = self.normalizer.device_id
        for reason, signals in changed.items():
            log.warning(
                "signals not good: %s", reason, extra={"device": device, "signals": signals}
            )
        if recovered:
            log.info("signals good again", extra={"device": device, "signals": recovered})

    def heartbeat(self) -> None:
        """Re-report unchanged values whose heartbeat is due (subscription devices)."""
        due = list(self.rbe.due_heartbeats(now_ms()))
        if due:
            self.counters.points_reported += len(due)
            self.batcher.add(due)

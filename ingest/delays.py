"""How late data reaches storage: per device and day, a histogram of delivery delays.

The writer calls ``record`` after each commit with, per stored batch, the devices in it and the
batch's oldest sample time; that is a handful of operations per batch, nothing per sample, so the
hot path stays as fast as it was (bench/ingest.py). The figures accumulate in memory and are
added to ``ingest_delay_daily`` (migration 0104) every ``writer.delay_stats_flush_s``, in a short
transaction of their own: a crash loses at most that much of the statistics, never data.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from typing import Final
from zoneinfo import ZoneInfo

import psycopg

log = logging.getLogger(__name__)

DELAY_EDGES_S: Final = (
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    21600.0, 86400.0,
)  # fmt: skip
"""Upper bounds of the histogram buckets in seconds; bucket ``i`` counts delays in
``(DELAY_EDGES_S[i-1], DELAY_EDGES_S[i]]``, and one more bucket counts delays beyond a day."""
BUCKETS: Final = len(DELAY_EDGES_S) + 1


def bucket_of(delay_s: float) -> int:
    return bisect.bisect_left(DELAY_EDGES_S, delay_s)


@dataclass(slots=True)
class _DayDevice:
    histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    deliveries: int = 0
    sum_delay_s: float = 0.0
    max_delay_s: float = 0.0
    historical: int = 0
    historical_max_s: float = 0.0

    def merge(self, other: _DayDevice) -> None:
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]
        self.deliveries += other.deliveries
        self.sum_delay_s += other.sum_delay_s
        self.max_delay_s = max(self.max_delay_s, other.max_delay_s)
        self.historical += other.historical
        self.historical_max_s = max(self.historical_max_s, other.historical_max_s)


Delivery = tuple[Iterable[int], int, bool]
"""(device keys in a batch, the batch's oldest sample time in ms, whether it is historical)"""


class DelayRecorder:
    """Accumulates delivery delays of all lanes (thread-safe) and stores them now and then."""

    def __init__(self, timezone: str, flush_every_s: float) -> None:
        self.zone = ZoneInfo(timezone)
        self.flush_every_s = flush_every_s
        self._lock = threading.Lock()
        self._pending: dict[tuple[date, int], _DayDevice] = {}
        self._next_flush = time.monotonic() + flush_every_s
        self._day = date.min
        self._day_ms = (0, 0)
        """The last day looked up and its [start, end) in ms: nearly every batch falls in it."""

    def _day_of(self, ms: int) -> date:
        lo, hi = self._day_ms
        if lo <= ms < hi:
            return self._day
        moment = datetime.fromtimestamp(ms / 1000, self.zone)
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = datetime.combine(start.date() + timedelta(days=1), dt_time(0), tzinfo=self.zone)
        self._day, self._day_ms = (
            start.date(),
            (
                int(start.timestamp() * 1000),
                int(end.timestamp() * 1000),
            ),
        )
        return self._day

    def record(self, deliveries: Iterable[Delivery], committed_at: float) -> None:
        with self._lock:
            pending = self._pending  # inside the lock: ``store`` swaps it
            for device_keys, oldest_ms, historical in deliveries:
                delay_s = max(0.0, committed_at - oldest_ms / 1000)
                day = self._day_of(oldest_ms)
                bucket = bucket_of(delay_s)
                for key in device_keys:
                    entry = pending.get((day, key))
                    if entry is None:
                        entry = pending[(day, key)] = _DayDevice()
                    if historical:
                        entry.historical += 1
                        if delay_s > entry.historical_max_s:
                            entry.historical_max_s = delay_s
                    else:
                        entry.histogram[bucket] += 1
                        entry.deliveries += 1
                        entry.sum_delay_s += delay_s
                        if delay_s > entry.max_delay_s:
                            entry.max_delay_s = delay_s

    def due(self) -> bool:
        return time.monotonic() >= self._next_flush

    def store(self, conn: psycopg.Connection) -> int:
        """Add what accumulated to ``ingest_delay_daily``; on failure keep it for the next time."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._next_flush = time.monotonic() + self.flush_every_s
        if not pending:
            return 0
        rows = [
            (day, key, e.deliveries, e.histogram, e.sum_delay_s, e.max_delay_s, e.historical,
             e.historical_max_s)
            for (day, key), e in sorted(pending.items())
        ]  # fmt: skip
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_UPSERT, rows)
        except psycopg.Error:
            with self._lock:
                for ident, entry in pending.items():
                    current = self._pending.setdefault(ident, _DayDevice())
                    current.merge(entry)
            raise
        return len(rows)


_UPSERT: Final = """
INSERT INTO ingest_delay_daily AS d (day, device_key, deliveries, histogram, sum_delay_s,
    max_delay_s, historical_deliveries, historical_max_delay_s)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (day, device_key) DO UPDATE SET
    deliveries = d.deliveries + EXCLUDED.deliveries,
    histogram = ARRAY(SELECT a + b FROM unnest(d.histogram, EXCLUDED.histogram)
                      WITH ORDINALITY AS u(a, b, n) ORDER BY n),
    sum_delay_s = d.sum_delay_s + EXCLUDED.sum_delay_s,
    max_delay_s = greatest(d.max_delay_s, EXCLUDED.max_delay_s),
    historical_deliveries = d.historical_deliveries + EXCLUDED.historical_deliveries,
    historical_max_delay_s = greatest(d.historical_max_delay_s, EXCLUDED.historical_max_delay_s),
    updated_at = now()
"""


def percentile_bound(histogram: list[int], share: float) -> float | None:
    """The upper edge of the bucket where ``share`` of the deliveries is reached (an upper bound
    of that percentile); None without deliveries, infinity when it lies beyond the last edge."""
    total = sum(histogram)
    if not total:
        return None
    needed = share * total
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= needed and count:
            return DELAY_EDGES_S[index] if index < len(DELAY_EDGES_S) else float("inf")
    return float("inf")

"""Plain-PostgreSQL rollups: materialize closed 1-minute and 1-hour buckets, redo invalidated ones.

The same idea as TimescaleDB's continuous aggregates, so both storage paths answer the same views
(telemetry_1m/_1h, counter_1m/_1h) with the same freshness:

- ``rollup_state.materialized_to``: buckets before it come from the rollup tables, later ones
  are aggregated from raw rows by the views (real-time aggregation);
- a refresh first moves ``pending_to`` forward under an exclusive advisory lock that every flush
  holds shared, then materializes up to it and moves ``materialized_to`` there;
- a flush holding samples older than ``pending_to`` (late or replayed data) records their time
  range in ``rollup_invalidations``, and the next refresh recomputes those buckets.

The lock makes the hand-over airtight: a flush either commits before ``pending_to`` moves (and
the refresh then reads its rows), or it sees the new ``pending_to`` and records an invalidation.
Recomputing a bucket replaces it from raw rows, so refreshing twice changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Final

import psycopg

log = logging.getLogger(__name__)

ROLLUP_LOCK_KEY: Final = 0x5348554C49414E02  # flushes shared, pending_to advance exclusive
REFRESH_LOCK_KEY: Final = 0x5348554C49414E03  # one refresher at a time across workers
MAX_ADVANCE: Final = dt.timedelta(hours=6)
"""At most this much new time is materialized per refresh (catching up after a long stop)."""
MINUTE: Final = dt.timedelta(minutes=1)
HOUR: Final = dt.timedelta(hours=1)

Range = tuple[dt.datetime, dt.datetime]


def record_invalidation(conn: psycopg.Connection, min_ts_ms: int, max_ts_ms: int) -> None:
    """In a flush transaction: note [min, max] if it reaches before ``pending_to``."""
    # Two statements on purpose: the read of pending_to must take its snapshot after the lock
    # is granted, or it could miss an advance committed while we waited.
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (ROLLUP_LOCK_KEY,))
    conn.execute(
        """
        INSERT INTO rollup_invalidations (lo, hi)
        SELECT lo, hi FROM (SELECT timestamptz 'epoch' + %s::bigint * interval '1 millisecond',
                                   timestamptz 'epoch' + %s::bigint * interval '1 millisecond')
                           AS r(lo, hi)
        WHERE lo < (SELECT pending_to FROM rollup_state)
        """,
        (min_ts_ms, max_ts_ms),
    )


@dataclass(frozen=True, slots=True)
class RefreshStats:
    materialized_to: dt.datetime
    minute_ranges: int
    hour_ranges: int
    invalidations: int


def refresh_rollups(conn: psycopg.Connection, grace_s: float) -> RefreshStats | None:
    """One refresh round on ``conn`` (autocommit off, idle). None if another worker is refreshing."""
    locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (REFRESH_LOCK_KEY,)).fetchone()
    conn.commit()
    if not locked or not locked[0]:
        return None
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK_KEY,))
            conn.execute(
                """
                UPDATE rollup_state SET pending_to = greatest(pending_to, least(
                    date_trunc('minute', now() - %s * interval '1 second', 'UTC'),
                    materialized_to + %s))
                """,
                (grace_s, MAX_ADVANCE),
            )
        with conn.transaction():
            return _materialize(conn)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (REFRESH_LOCK_KEY,))
        conn.commit()


def _materialize(conn: psycopg.Connection) -> RefreshStats:
    row = conn.execute("SELECT materialized_to, pending_to FROM rollup_state FOR UPDATE").fetchone()
    assert row is not None
    materialized_to, pending_to = row
    invalidated = conn.execute("DELETE FROM rollup_invalidations RETURNING lo, hi").fetchall()
    ranges: list[Range] = []
    if pending_to > materialized_to:
        ranges.append((materialized_to, pending_to))
    for lo, hi in invalidated:
        hi = min(hi + dt.timedelta(milliseconds=1), pending_to)
        if lo < hi:
            ranges.append((lo, hi))
    minutes = merge_ranges([align(r, MINUTE) for r in ranges])
    hour_end = floor(pending_to, HOUR)
    hours = merge_ranges(
        [
            (lo, min(hi, hour_end))
            for lo, hi in (align(r, HOUR) for r in minutes)
            if lo < min(hi, hour_end)
        ]
    )
    for lo, hi in minutes:
        _recompute_minutes(conn, lo, hi)
    for lo, hi in hours:
        _recompute_hours(conn, lo, hi)
    conn.execute("UPDATE rollup_state SET materialized_to = pending_to")
    return RefreshStats(pending_to, len(minutes), len(hours), len(invalidated))


def _recompute_minutes(conn: psycopg.Connection, lo: dt.datetime, hi: dt.datetime) -> None:
    conn.execute("DELETE FROM rollup_1m WHERE bucket >= %s AND bucket < %s", (lo, hi))
    conn.execute(
        """
        INSERT INTO rollup_1m (bucket, device_key, signal_id, samples, min_value, max_value,
                               sum_value, last_value, last_ts)
        SELECT date_trunc('minute', ts, 'UTC'), device_key, signal_id, count(*), min(value),
               max(value), sum(value), (array_agg(value ORDER BY ts DESC))[1], max(ts)
        FROM telemetry
        WHERE ts >= %s AND ts < %s AND quality < 2 AND value IS NOT NULL
        GROUP BY 1, 2, 3
        """,
        (lo, hi),
    )
    conn.execute("DELETE FROM counter_rollup_1m WHERE bucket >= %s AND bucket < %s", (lo, hi))
    conn.execute(
        """
        INSERT INTO counter_rollup_1m (bucket, device_key, signal_id, increase, resets, wraps,
                                       rebases)
        SELECT date_trunc('minute', ts, 'UTC'), device_key, signal_id, sum(increase),
               count(*) FILTER (WHERE event = 1), count(*) FILTER (WHERE event = 2),
               count(*) FILTER (WHERE event = 3)
        FROM counter_increments
        WHERE ts >= %s AND ts < %s
        GROUP BY 1, 2, 3
        """,
        (lo, hi),
    )


def _recompute_hours(conn: psycopg.Connection, lo: dt.datetime, hi: dt.datetime) -> None:
    conn.execute("DELETE FROM rollup_1h WHERE bucket >= %s AND bucket < %s", (lo, hi))
    conn.execute(
        """
        INSERT INTO rollup_1h (bucket, device_key, signal_id, samples, min_value, max_value,
                               sum_value, last_value, last_ts)
        SELECT date_trunc('hour', bucket, 'UTC'), device_key, signal_id, sum(samples),
               min(min_value), max(max_value), sum(sum_value),
               (array_agg(last_value ORDER BY last_ts DESC))[1], max(last_ts)
        FROM rollup_1m
        WHERE bucket >= %s AND bucket < %s
        GROUP BY 1, 2, 3
        """,
        (lo, hi),
    )
    conn.execute("DELETE FROM counter_rollup_1h WHERE bucket >= %s AND bucket < %s", (lo, hi))
    conn.execute(
        """
        INSERT INTO counter_rollup_1h (bucket, device_key, signal_id, increase, resets, wraps,
                                       rebases)
        SELECT date_trunc('hour', bucket, 'UTC'), device_key, signal_id, sum(increase),
               sum(resets), sum(wraps), sum(rebases)
        FROM counter_rollup_1m
        WHERE bucket >= %s AND bucket < %s
        GROUP BY 1, 2, 3
        """,
        (lo, hi),
    )


def floor(t: dt.datetime, step: dt.timedelta) -> dt.datetime:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return epoch + ((t - epoch) // step) * step


def align(r: Range, step: dt.timedelta) -> Range:
    """Widen [lo, hi) to whole buckets of ``step``."""
    lo, hi = r
    hi_floor = floor(hi, step)
    return floor(lo, step), hi_floor if hi_floor == hi else hi_floor + step


def merge_ranges(ranges: list[Range]) -> list[Range]:
    """Sorted union of half-open ranges; touching ranges are joined."""
    merged: list[Range] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged

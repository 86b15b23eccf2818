"""Turn cumulative counter readings into increments, surviving wraps, resets and replacements.

Counter signals (wire.signals kind ``counter``: part counts, energy, strokes, run hours) only go
up, except when the device's register wraps (uint16 or uint32 rollover), the count is reset
(a new shift, a new order), or the device or its meter is replaced. For two successive good
readings ``prev`` then ``new``:

- ``new >= prev``: increase ``new - prev``;
- a drop from the top tenth of 2**16 (or 2**32) to its bottom tenth: a wrap, increase
  ``modulus - prev + new`` (a uint32 counter reset from just above 58,982 would look the same;
  the ingest cannot tell, since it does not know the register's width);
- a drop to at most half of ``prev``: a reset, increase ``new`` (counted from zero);
- any other drop (a replaced meter with its own reading, or a glitch): a rebase, increase 0,
  and ``new`` becomes the baseline.

Readings older than the baseline (late or replayed data) are skipped: the increase across the gap
was already counted when the newer reading arrived, so totals stay exact; only its placement in
time may shift to the bucket of the newer reading.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import psycopg

from ingest.db.pgcopy import INCREMENT_COLUMNS, TELEMETRY_COLUMNS, IncrementCopy, TelemetryCopy

WRAP_MODULI: Final = (2**16, 2**32)
WRAP_HIGH: Final = 0.9
WRAP_LOW: Final = 0.1
RESET_FRACTION: Final = 0.5


class CounterEvent(IntEnum):
    """Stored in counter_increments.event."""

    INCREASE = 0
    RESET = 1
    WRAP = 2
    REBASE = 3


def increment(prev: float, new: float) -> tuple[float, CounterEvent]:
    """The increase between two successive readings, and what happened to the counter."""
    if new >= prev:
        return new - prev, CounterEvent.INCREASE
    for modulus in WRAP_MODULI:
        if modulus * WRAP_HIGH <= prev < modulus and new < modulus * WRAP_LOW:
            return modulus - prev + new, CounterEvent.WRAP
    if new <= prev * RESET_FRACTION:
        return new, CounterEvent.RESET
    return 0.0, CounterEvent.REBASE


@dataclass(frozen=True, slots=True)
class Increment:
    ts_ms: int
    increase: float
    event: CounterEvent


def increments(
    baseline: tuple[int, float] | None, readings: Iterable[tuple[int, float]]
) -> tuple[list[Increment], tuple[int, float] | None, int]:
    """Increments of one counter from its ``baseline`` (ts_ms, value) over time-ordered readings.

    Returns the increments worth storing (zero increases are left out), the new baseline, and how
    many readings were late (not newer than the baseline).
    """
    out: list[Increment] = []
    late = 0
    for ts_ms, value in readings:
        if baseline is None:
            baseline = (ts_ms, value)
            continue
        if ts_ms <= baseline[0]:
            late += 1
            continue
        increase, event = increment(baseline[1], value)
        if increase > 0 or event is not CounterEvent.INCREASE:
            out.append(Increment(ts_ms, increase, event))
        baseline = (ts_ms, value)
    return out, baseline, late


def apply_counters(
    conn: psycopg.Connection, readings: list[tuple[int, int, int, float]]
) -> collections.Counter[str]:
    """Store increments for ``readings`` (device key, signal id, ts_ms, value) in this transaction.

    Locks the affected counter_state rows in key order, so concurrent workers serialize per
    counter instead of deadlocking. Returns counts of events (reset, wrap, rebase, late).
    """
    series: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for key, signal_id, ts_ms, value in readings:
        series.setdefault((key, signal_id), []).append((ts_ms, value))
    idents = sorted(series)
    baselines: dict[tuple[int, int], tuple[int, float]] = {}
    for key, signal_id, ts_ms, value in conn.execute(
        """
        SELECT c.device_key, c.signal_id, (extract(epoch FROM c.ts) * 1000)::bigint, c.value
        FROM counter_state c
        JOIN unnest(%s::int[], %s::smallint[]) AS u(d, s) ON c.device_key = u.d AND c.signal_id = u.s
        ORDER BY c.device_key, c.signal_id
        FOR UPDATE OF c
        """,
        ([i[0] for i in idents], [i[1] for i in idents]),
        binary=True,
    ):
        baselines[(key, signal_id)] = (ts_ms, value)
    events: collections.Counter[str] = collections.Counter()
    increments_out = IncrementCopy()
    new_baselines = TelemetryCopy()  # staged in the telemetry layout: ts, value, key, signal
    for ident in idents:
        ordered = sorted(series[ident])
        found, baseline, late = increments(baselines.get(ident), ordered)
        events["late"] += late
        for inc in found:
            increments_out.add(inc.ts_ms, inc.increase, ident[0], ident[1], int(inc.event))
            if inc.event is not CounterEvent.INCREASE:
                events[inc.event.name.lower()] += 1
        if baseline is not None and baseline != baselines.get(ident):
            new_baselines.add_number(baseline[0], baseline[1], ident[0], ident[1], 0)
    if increments_out.rows:
        with conn.cursor().copy(
            f"COPY counter_increments ({INCREMENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.write(increments_out.data())
    if new_baselines.rows:
        with conn.cursor().copy(
            f"COPY counter_stage ({TELEMETRY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.write(new_baselines.data())
        conn.execute(
            """
            INSERT INTO counter_state AS c (device_key, signal_id, ts, value)
            SELECT device_key, signal_id, ts, value FROM counter_stage
            ORDER BY device_key, signal_id
            ON CONFLICT (device_key, signal_id) DO UPDATE SET ts = excluded.ts, value = excluded.value
            WHERE excluded.ts > c.ts
            """
        )
    if not events["late"]:
        del events["late"]
    return events

"""Maintain machine state intervals (for running time and utilization) from machine_state samples.

``state_intervals`` holds ``[started_at, ended_at)`` per device, the last one open. A sample
that changes the state closes the open interval and opens a new one; a sample that repeats it
changes nothing. When the device or its gateway disconnects, the ingest writes a machine_state
sample ``offline`` (so the raw data and the intervals agree) and the device stays offline until
its next state sample.

A sample older than the newest one already applied (late data: a replayed backlog, or another
worker's batch committed first) cannot be placed from the intervals alone, because repeated
samples were never recorded. Then the device's intervals are rebuilt from its raw machine_state
samples, starting at the interval that contains the late sample.

One device has at most one machine_state row per millisecond. Real samples are stored exactly once
by the batch ledger; an ``offline`` marker is derived, has no ledger, and yields: it takes the
first millisecond from its event's time that no real sample of its device holds, and when a real
sample for its millisecond arrives later (a gateway's disk buffer replayed after a broker outage)
the marker moves on to the next free millisecond. So the stored rows are the same whichever
arrives first. (Decoding refuses ``offline`` from gateways, so an ``offline`` row is a marker.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

log = logging.getLogger(__name__)

OFFLINE = "offline"

_MS = "timestamptz 'epoch' + {} * interval '1 millisecond'"


@dataclass(frozen=True, slots=True)
class StateSample:
    device_key: int
    ts_ms: int
    state: str


@dataclass(frozen=True, slots=True)
class OfflineEvent:
    device_key: int
    ts_ms: int


@dataclass(slots=True)
class _Current:
    state: str
    since_ms: int
    last_ms: int


def apply_states(
    conn: psycopg.Connection, samples: list[StateSample], machine_state_signal: int
) -> int:
    """Update intervals and device_states for ``samples`` in this transaction.

    ``samples`` must already be stored in telemetry (a rebuild reads them back); markers are the
    samples whose state is ``offline``. Returns the number of late samples (each late device was
    rebuilt from raw data). Afterwards, any marker sharing a millisecond with a real sample of its
    device (see ``_separate_markers``) has moved on.
    """
    by_device: dict[int, list[StateSample]] = {}
    for sample in samples:
        by_device.setdefault(sample.device_key, []).append(sample)
    keys = sorted(by_device)
    current: dict[int, _Current] = {
        key: _Current(state, since, last)
        for key, state, since, last in conn.execute(
            """
            SELECT device_key, state, (extract(epoch FROM since) * 1000)::bigint,
                   (extract(epoch FROM last_ts) * 1000)::bigint
            FROM device_states WHERE device_key = ANY(%s) ORDER BY device_key FOR UPDATE
            """,
            (keys,),
        )
    }
    newest_before = {key: cur.last_ms for key, cur in current.items()}
    closes: list[tuple[int, int, int]] = []  # device, started_ms, ended_ms
    opens: list[tuple[int, str, int, int | None]] = []  # device, state, started_ms, ended_ms
    restates: list[tuple[int, int, str]] = []  # device, started_ms, new state
    late_from: dict[int, int] = {}
    late = 0
    for key in keys:
        cur = current.get(key)
        opened_here: list[list[object]] = []
        for sample in sorted(by_device[key], key=lambda s: s.ts_ms):
            if cur is None:
                cur = current[key] = _Current(sample.state, sample.ts_ms, sample.ts_ms)
                opened_here.append([key, sample.state, sample.ts_ms, None])
            elif sample.ts_ms < cur.last_ms:
                late += 1
                late_from[key] = min(late_from.get(key, sample.ts_ms), sample.ts_ms)
            elif sample.state == cur.state:
                cur.last_ms = sample.ts_ms
            elif sample.ts_ms == cur.since_ms:
                # Two states for the same instant (from different messages): the later one wins.
                if opened_here:
                    opened_here[-1][1] = sample.state
                else:
                    restates.append((key, cur.since_ms, sample.state))
                cur.state, cur.last_ms = sample.state, sample.ts_ms
            else:
                if opened_here:
                    opened_here[-1][3] = sample.ts_ms
                else:
                    closes.append((key, cur.since_ms, sample.ts_ms))
                opened_here.append([key, sample.state, sample.ts_ms, None])
                cur.state, cur.since_ms, cur.last_ms = sample.state, sample.ts_ms, sample.ts_ms
        opens.extend((k, s, a, b) for k, s, a, b in opened_here)  # type: ignore[misc]
    if closes:
        conn.execute(
            f"""
            UPDATE state_intervals i SET ended_at = {_MS.format("u.e")}
            FROM unnest(%s::int[], %s::bigint[], %s::bigint[]) AS u(d, s, e)
            WHERE i.device_key = u.d AND i.started_at = {_MS.format("u.s")}
            """,
            tuple(list(c) for c in zip(*closes, strict=True)),
        )
    if restates:
        conn.execute(
            f"""
            UPDATE state_intervals i SET state = u.st
            FROM unnest(%s::int[], %s::bigint[], %s::text[]) AS u(d, s, st)
            WHERE i.device_key = u.d AND i.started_at = {_MS.format("u.s")}
            """,
            tuple(list(r) for r in zip(*restates, strict=True)),
        )
    if opens:
        conn.execute(
            f"""
            INSERT INTO state_intervals (device_key, state, started_at, ended_at)
            SELECT d, s, {_MS.format("a")}, {_MS.format("b")}
            FROM unnest(%s::int[], %s::text[], %s::bigint[], %s::bigint[]) AS u(d, s, a, b)
            ON CONFLICT (device_key, started_at) DO UPDATE
            SET state = excluded.state, ended_at = excluded.ended_at
            """,
            tuple(list(o) for o in zip(*opens, strict=True)),
        )
    for key, from_ms in late_from.items():
        current[key] = _rebuild(conn, key, from_ms, machine_state_signal)
    if current:
        _save_current(conn, current)
        # After the upsert this transaction holds every sampled device's device_states row, so a
        # concurrent flush touching the same device has committed (we see its rows) or waits.
        _separate_markers(conn, samples, newest_before, machine_state_signal)
    return late


def _save_current(conn: psycopg.Connection, current: dict[int, _Current]) -> None:
    rows = [(k, c.state, c.since_ms, c.last_ms) for k, c in sorted(current.items())]
    conn.execute(
        f"""
        INSERT INTO device_states AS d (device_key, state, since, last_ts)
        SELECT k, s, {_MS.format("a")}, {_MS.format("l")}
        FROM unnest(%s::int[], %s::text[], %s::bigint[], %s::bigint[]) AS u(k, s, a, l)
        ON CONFLICT (device_key) DO UPDATE
        SET state = excluded.state, since = excluded.since, last_ts = excluded.last_ts
        """,
        tuple(list(r) for r in zip(*rows, strict=True)),
    )


def _separate_markers(
    conn: psycopg.Connection,
    samples: list[StateSample],
    newest_before: dict[int, int],
    signal_id: int,
) -> int:
    """Move every marker that shares a millisecond with a real sample of its device to the next
    free millisecond, then re-derive those devices' intervals, state and current value.

    Only this flush's markers, and its real samples no newer than their device's newest state
    before the flush, can meet a stored marker (a marker advances its device's newest state), so
    live data in order costs no query here. Returns the number of markers moved or merged.
    """
    candidates = {
        (s.device_key, s.ts_ms)
        for s in samples
        if s.state == OFFLINE
        or s.device_key not in newest_before
        or s.ts_ms <= newest_before[s.device_key]
    }
    if not candidates:
        return 0
    pairs = sorted(candidates)
    lo, hi = min(p[1] for p in pairs), max(p[1] for p in pairs)
    met = conn.execute(
        f"""
        SELECT t.device_key, (extract(epoch FROM t.ts) * 1000)::bigint
        FROM telemetry t
        JOIN unnest(%s::int[], %s::bigint[]) AS u(d, ms)
          ON t.device_key = u.d AND t.ts = {_MS.format("u.ms")}
        WHERE t.signal_id = %s
          AND t.ts BETWEEN {_MS.format("%s::bigint")} AND {_MS.format("%s::bigint")}
        GROUP BY 1, 2
        HAVING count(*) > 1 AND bool_or(t.value_text = %s)
        ORDER BY 1, 2
        """,
        ([p[0] for p in pairs], [p[1] for p in pairs], signal_id, lo, hi, OFFLINE),
    ).fetchall()
    if not met:
        return 0
    from_ms: dict[int, int] = {}
    for key, ts_ms in met:
        _move_marker(conn, int(key), int(ts_ms), signal_id)
        from_ms[int(key)] = min(from_ms.get(int(key), int(ts_ms)), int(ts_ms))
    rebuilt = {key: _rebuild(conn, key, ms, signal_id) for key, ms in sorted(from_ms.items())}
    _save_current(conn, rebuilt)
    conn.execute(
        """
        INSERT INTO current_values AS c (device_key, signal_id, ts, value, value_text, quality)
        SELECT n.device_key, n.signal_id, n.ts, n.value, n.value_text, n.quality
        FROM unnest(%s::int[]) AS u(d)
        CROSS JOIN LATERAL (
            SELECT * FROM telemetry t WHERE t.device_key = u.d AND t.signal_id = %s
            ORDER BY t.ts DESC LIMIT 1
        ) n
        ON CONFLICT (device_key, signal_id) DO UPDATE
        SET ts = excluded.ts, value = excluded.value, value_text = excluded.value_text,
            quality = excluded.quality
        """,
        (sorted(from_ms), signal_id),
    )
    log.info(
        "moved %d offline markers that met a real machine_state sample's millisecond "
        "(a replayed backlog); the intervals of %d devices were rebuilt",
        len(met),
        len(from_ms),
    )
    return len(met)


def _move_marker(conn: psycopg.Connection, key: int, ts_ms: int, signal_id: int) -> None:
    """Take the markers off ``ts_ms`` and put one back at the first millisecond from there that
    no real sample holds, unless a marker already sits on the way (then it says the same)."""
    conn.execute(
        f"DELETE FROM telemetry WHERE device_key = %s AND signal_id = %s "
        f"AND ts = {_MS.format('%s::bigint')} AND value_text = %s",
        (key, signal_id, ts_ms, OFFLINE),
    )
    place = free_marker_ms(conn, key, ts_ms, signal_id)
    if place is not None:
        conn.execute(
            f"INSERT INTO telemetry (ts, device_key, signal_id, quality, value_text) "
            f"VALUES ({_MS.format('%s::bigint')}, %s, %s, 0, %s)",
            (place, key, signal_id, OFFLINE),
        )


def free_marker_ms(
    conn: psycopg.Connection,
    key: int,
    ts_ms: int,
    signal_id: int,
    taken: set[int] | frozenset[int] = frozenset(),
) -> int | None:
    """Where a marker for an event at ``ts_ms`` goes: the first millisecond from ``ts_ms`` with
    no machine_state row of device ``key`` (stored, or in ``taken``: this flush's real samples).
    None when a stored marker sits on the way: the event is recorded already (a status delivered
    again after an ingest restart), so writing markers is idempotent."""
    held = set(taken)
    markers: set[int] = set()
    for ms, text in conn.execute(
        f"""
        SELECT (extract(epoch FROM ts) * 1000)::bigint, value_text FROM telemetry
        WHERE device_key = %s AND signal_id = %s
          AND ts >= {_MS.format("%s::bigint")} AND ts < {_MS.format("%s::bigint")}
        """,
        (key, signal_id, ts_ms, ts_ms + 1000),
    ):
        (markers if text == OFFLINE else held).add(int(ms))
    while True:
        if ts_ms in markers:
            return None
        if ts_ms not in held:
            return ts_ms
        ts_ms += 1


def _rebuild(conn: psycopg.Connection, key: int, from_ms: int, signal_id: int) -> _Current:
    """Re-derive ``key``'s intervals from raw samples, from the interval containing ``from_ms``."""
    row = conn.execute(
        f"""
        SELECT (extract(epoch FROM started_at) * 1000)::bigint FROM state_intervals
        WHERE device_key = %s AND started_at <= {_MS.format("%s::bigint")}
        ORDER BY started_at DESC LIMIT 1
        """,
        (key, from_ms),
    ).fetchone()
    start_ms = int(row[0]) if row else from_ms
    previous = conn.execute(
        f"""
        SELECT state, (extract(epoch FROM started_at) * 1000)::bigint FROM state_intervals
        WHERE device_key = %s AND started_at < {_MS.format("%s::bigint")}
        ORDER BY started_at DESC LIMIT 1
        """,
        (key, start_ms),
    ).fetchone()
    conn.execute(
        f"DELETE FROM state_intervals WHERE device_key = %s AND started_at >= {_MS.format('%s::bigint')}",
        (key, start_ms),
    )
    samples = conn.execute(
        f"""
        SELECT (extract(epoch FROM ts) * 1000)::bigint, value_text FROM telemetry
        WHERE device_key = %s AND signal_id = %s AND ts >= {_MS.format("%s::bigint")}
          AND quality < 2 AND value_text IS NOT NULL
        ORDER BY ts
        """,
        (key, signal_id, start_ms),
    ).fetchall()
    state = previous[0] if previous else None
    since = int(previous[1]) if previous else 0
    changes: list[tuple[int, str]] = []
    last_ms = since
    for ts_ms, value in samples:
        last_ms = int(ts_ms)
        if changes and changes[-1][0] == last_ms:
            # two states for one instant: keep one interval start (its state is the last seen)
            changes[-1] = (last_ms, value)
            state = value
        elif value != state:
            changes.append((last_ms, value))
            state = value
    if previous:
        conn.execute(
            f"UPDATE state_intervals SET ended_at = {_MS.format('%s::bigint')} "
            f"WHERE device_key = %s AND started_at = {_MS.format('%s::bigint')}",
            (changes[0][0] if changes else None, key, int(previous[1])),
        )
    for i, (ts_ms, value) in enumerate(changes):
        ended = changes[i + 1][0] if i + 1 < len(changes) else None
        conn.execute(
            f"INSERT INTO state_intervals (device_key, state, started_at, ended_at) "
            f"VALUES (%s, %s, {_MS.format('%s::bigint')}, {_MS.format('%s::bigint')})",
            (key, value, ts_ms, ended),
        )
        since = ts_ms
    assert state is not None, "a rebuild always sees at least the late sample itself"
    return _Current(state, since, last_ms)

"""Derived tables through the real pipeline: counters, state intervals, offline, rollups."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from ingest_support import machine_samples, now_ms, rows, scalar, wait_until

from wire.payloads import Sample

MINUTE_MS = 60_000


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def device_key(url: str, device: str) -> int:
    return int(scalar(url, "SELECT key FROM devices WHERE device_id = %s", (device,)))


def test_counter_increments_survive_wrap_reset_and_replacement(start_ingest, fake_gateway, pg_url):
    start_ingest()
    gw = fake_gateway(enterprise="ent-c", gateway="gw-c", devices=["press-1"])
    gw.birth()
    t0 = now_ms() - 30 * MINUTE_MS
    # uint16 stroke counter: +5, +5, wrap +3, +8, shift reset +1, +3, a small drop that is no
    # reset (a replaced meter's own reading, or a glitch: rebase, +0), +2
    values = [65_525, 65_530, 65_535, 2, 10, 1, 4, 3, 5]
    for n, value in enumerate(values):
        sample = Sample(
            device="press-1", signal="stroke_count", ts_ms=t0 + n * MINUTE_MS, value=value
        )
        gw.send(gw.batch([sample]))
    key = None
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM counter_state") == 1, what="baseline")
    wait_until(
        lambda: scalar(pg_url, "SELECT value FROM counter_state") == 5,
        what="the last reading as baseline",
    )
    key = device_key(pg_url, "press-1")
    assert rows(
        pg_url,
        "SELECT increase, event FROM counter_increments WHERE device_key = %s ORDER BY ts",
        (key,),
    ) == [(5.0, 0), (5.0, 0), (3.0, 2), (8.0, 0), (1.0, 1), (3.0, 0), (0.0, 3), (2.0, 0)]
    # older than the rollup watermark: in the views once the next refresh materialized it
    wait_until(
        lambda: (
            scalar(pg_url, "SELECT sum(increase) FROM counter_1m WHERE device_key = %s", (key,))
            == 27.0
        ),
        what="the increments in counter_1m",
    )
    hourly = scalar(pg_url, "SELECT sum(increase) FROM counter_1h WHERE device_key = %s", (key,))
    assert hourly == 27.0
    # a late, replayed reading changes nothing: the increase across the gap was already counted
    gw.send(
        gw.batch([Sample(device="press-1", signal="stroke_count", ts_ms=t0 + 30_000, value=65_527)])
    )
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM batch_ledger") == len(values) + 1)
    assert scalar(pg_url, "SELECT sum(increase) FROM counter_increments") == 27.0


def test_state_intervals_follow_changes_late_samples_and_disconnects(
    start_ingest, fake_gateway, pg_url
):
    start_ingest()
    gw = fake_gateway(enterprise="ent-s", gateway="gw-s", devices=["lathe-1"])
    gw.birth()
    t0 = now_ms() - 20 * MINUTE_MS

    def state(offset_min: float, value: str) -> Sample:
        return Sample(
            device="lathe-1",
            signal="machine_state",
            ts_ms=t0 + int(offset_min * MINUTE_MS),
            value=value,
        )

    gw.send(gw.batch([state(0, "running"), state(1, "running"), state(2, "idle")]))
    gw.send(gw.batch([state(4, "running")]))
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM state_intervals") == 3)
    key = device_key(pg_url, "lathe-1")

    def intervals() -> list[tuple[str, dt.datetime, dt.datetime | None]]:
        return rows(
            pg_url,
            "SELECT state, started_at, ended_at FROM state_intervals WHERE device_key = %s "
            "ORDER BY started_at",
            (key,),
        )

    m = lambda n: at(t0 + int(n * MINUTE_MS))  # noqa: E731
    assert intervals() == [
        ("running", m(0), m(2)),
        ("idle", m(2), m(4)),
        ("running", m(4), None),
    ]
    # a late sample (a replayed backlog) inside the first interval: rebuilt from raw samples
    gw.send(gw.batch([state(1.5, "fault")]))
    wait_until(lambda: len(intervals()) == 4, what="the late fault placed")
    assert intervals() == [
        ("running", m(0), m(1.5)),
        ("fault", m(1.5), m(2)),
        ("idle", m(2), m(4)),
        ("running", m(4), None),
    ]
    # the device disconnects: offline from the status's time, also as a raw sample
    gw.device_status("lathe-1", "disconnected")
    wait_until(lambda: intervals()[-1][0] == "offline", what="the device offline")
    assert intervals()[-2][2] == intervals()[-1][1]
    assert rows(pg_url, "SELECT state FROM device_states WHERE device_key = %s", (key,)) == [
        ("offline",)
    ]
    assert (
        scalar(
            pg_url,
            "SELECT value_text FROM current_values c JOIN signals s ON s.id = c.signal_id "
            "WHERE s.name = 'machine_state' AND device_key = %s",
            (key,),
        )
        == "offline"
    )
    # back: the next state sample ends the offline interval
    gw.send(
        gw.batch([Sample(device="lathe-1", signal="machine_state", ts_ms=now_ms(), value="setup")])
    )
    wait_until(lambda: intervals()[-1][0] == "setup", what="setup after offline")


def test_a_gateway_going_offline_takes_its_devices_offline(start_ingest, fake_gateway, pg_url):
    start_ingest()
    gw = fake_gateway(enterprise="ent-o", gateway="gw-o", devices=["a", "b"])
    gw.birth()
    t = now_ms()
    gw.send(
        gw.batch(
            [
                Sample(device="a", signal="machine_state", ts_ms=t, value="running"),
                Sample(device="b", signal="machine_state", ts_ms=t, value="idle"),
            ]
        )
    )
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM device_states") == 2)
    gw.birth(online=False)  # as its Last Will would be published
    wait_until(
        lambda: rows(pg_url, "SELECT DISTINCT state FROM device_states") == [("offline",)],
        what="both devices offline",
    )
    assert scalar(pg_url, "SELECT online FROM gateways WHERE id = 'gw-o'") is False
    offline_rows = scalar(pg_url, "SELECT count(*) FROM telemetry WHERE value_text = 'offline'")
    gw.birth(online=False)  # the same status again (retained copy, second worker): no new rows
    gw.birth(online=True)
    wait_until(lambda: scalar(pg_url, "SELECT online FROM gateways WHERE id = 'gw-o'") is True)
    assert (
        scalar(pg_url, "SELECT count(*) FROM telemetry WHERE value_text = 'offline'")
        == offline_rows
        == 2
    )


@pytest.mark.only_storage_path("postgresql")  # TimescaleDB: test_timescaledb_policies.py
def test_rollups_materialize_closed_minutes_and_redo_late_ones(start_ingest, fake_gateway, pg_url):
    start_ingest(storage={"rollup_refresh_s": 0.3, "rollup_grace_s": 0})
    gw = fake_gateway(enterprise="ent-r", gateway="gw-r", devices=["g1"])
    gw.birth()
    base = (now_ms() // MINUTE_MS - 10) * MINUTE_MS  # ten minutes ago, on a minute boundary

    def speed(offset_ms: int, value: float) -> Sample:
        return Sample(device="g1", signal="spindle_speed", ts_ms=base + offset_ms, value=value)

    gw.send(
        gw.batch([speed(0, 10.0), speed(20_000, 30.0), speed(40_000, 20.0), speed(MINUTE_MS, 5.0)])
    )
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") == 4)
    key = device_key(pg_url, "g1")

    def first_minute() -> list[tuple]:
        return rows(
            pg_url,
            "SELECT samples, min_value, max_value, avg_value, last_value FROM telemetry_1m "
            "WHERE device_key = %s AND bucket = %s",
            (key, at(base)),
        )

    # older than the watermark: recorded as invalidated, then materialized by a refresh
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM rollup_1m WHERE device_key = %s", (key,)) == 2,
        what="both minutes materialized",
    )
    assert first_minute() == [(3, 10.0, 30.0, 20.0, 20.0)]
    assert scalar(pg_url, "SELECT count(*) FROM rollup_invalidations") == 0
    # late data into a materialized minute is redone by the next refresh
    gw.send(gw.batch([speed(50_000, 100.0)]))
    wait_until(
        lambda: first_minute() == [(4, 10.0, 100.0, 40.0, 100.0)],
        what="the late sample in the materialized minute",
    )
    hour = rows(
        pg_url,
        "SELECT sum(samples), max(max_value) FROM telemetry_1h WHERE device_key = %s",
        (key,),
    )
    assert hour == [(5, 100.0)]


@pytest.mark.only_storage_path("postgresql")  # TimescaleDB: test_timescaledb_policies.py
def test_the_rollup_views_aggregate_fresh_data_in_real_time(start_ingest, fake_gateway, pg_url):
    start_ingest(storage={"rollup_refresh_s": 0.3, "rollup_grace_s": 3600})
    gw = fake_gateway(enterprise="ent-rt", gateway="gw-rt", devices=["g1"])
    gw.birth()
    t = now_ms()
    gw.send(
        gw.batch(
            [
                Sample(device="g1", signal="spindle_speed", ts_ms=t, value=7.0),
                Sample(device="g1", signal="part_count", ts_ms=t, value=100),
                Sample(device="g1", signal="part_count", ts_ms=t + 1, value=104),
            ]
        )
    )
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") == 3)
    key = device_key(pg_url, "g1")
    speed = rows(
        pg_url,
        "SELECT v.samples, v.last_value FROM telemetry_1m v JOIN signals s ON s.id = v.signal_id "
        "WHERE v.device_key = %s AND s.name = 'spindle_speed'",
        (key,),
    )
    assert speed == [(1, 7.0)]
    assert scalar(pg_url, "SELECT count(*) FROM rollup_1m") == 0  # nothing materialized yet
    assert scalar(pg_url, "SELECT sum(increase) FROM counter_1m WHERE device_key = %s", (key,)) == 4
    assert scalar(pg_url, "SELECT sum(increase) FROM counter_1h WHERE device_key = %s", (key,)) == 4
    assert (
        scalar(pg_url, "SELECT sum(samples) FROM telemetry_1h WHERE device_key = %s", (key,)) == 3
    )


@pytest.mark.only_storage_path("postgresql")  # TimescaleDB: test_timescaledb_policies.py
def test_partitions_are_created_ahead_and_dropped_after_retention(start_ingest, pg_url):
    from ingest.db.partitions import drop_expired_partitions, ensure_partitions

    service = start_ingest()
    names = {
        r[0] for r in rows(pg_url, "SELECT relname FROM pg_class WHERE relname LIKE 'telemetry_p%'")
    }
    today = dt.datetime.now(dt.UTC).date()
    for days in range(-7, 4):
        assert f"telemetry_p{today + dt.timedelta(days=days):%Y%m%d}" in names
    with psycopg.connect(pg_url) as conn:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=200)
        created = ensure_partitions(conn, service.settings.storage, service.settings.limits, later)
        assert f"telemetry_p{later.date():%Y%m%d}" in created
        dropped = drop_expired_partitions(conn, service.settings.storage, later)
    assert f"telemetry_p{today:%Y%m%d}" in dropped  # 90-day raw retention
    assert not any(n.startswith("rollup_1h_") for n in dropped)  # kept for ten years


def test_retention_prunes_old_ledger_rows_and_dead_letters(start_ingest, fake_gateway, pg_url):
    service = start_ingest()
    gw = fake_gateway(enterprise="ent-l", gateway="gw-l", devices=["x"])
    gw.birth()
    for n in range(3):
        gw.send(gw.batch([Sample(device="x", signal="feed_rate", ts_ms=now_ms() + n, value=n)]))
    gw.publish("shulian/v1/ent-l/gw-l/telemetry", b"garbage")
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM batch_ledger") == 3)
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM dead_letters") == 1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE batch_ledger SET committed_at = now() - interval '20 days' WHERE seq < 3"
        )
        conn.execute("UPDATE dead_letters SET received_at = now() - interval '40 days'")
        assert conn.execute("SELECT count(*) FROM dead_letter_windows").fetchone() == (1,)
        conn.execute("UPDATE dead_letter_windows SET minute = now() - interval '40 days'")
    assert service.maintenance is not None
    service.maintenance.run_job("retention")
    assert scalar(pg_url, "SELECT count(*) FROM batch_ledger") == 1
    assert scalar(pg_url, "SELECT count(*) FROM dead_letters") == 0
    assert scalar(pg_url, "SELECT count(*) FROM dead_letter_windows") == 0


PRESENCE_FROM_CURRENT_VALUES = """
SELECT cv.device_key, max(cv.ts), bool_or(cv.value <> 0) FILTER (WHERE g.id IS NOT NULL)
FROM current_values cv LEFT JOIN signals g ON g.id = cv.signal_id AND g.base = 'alarm_active'
GROUP BY cv.device_key ORDER BY cv.device_key"""


def test_device_presence_is_current_values_per_device(start_ingest, fake_gateway, pg_url):
    """device_presence (what the pages read for online, networked and alarms) equals what
    current_values says per device after in-order, late and replayed samples, alarms on and off,
    and devices without an alarm signal."""
    start_ingest()
    gw = fake_gateway(enterprise="ent-p", gateway="gw-p", devices=["lathe-1", "lathe-2", "meter-1"])
    gw.birth()
    t0 = now_ms() - 10 * MINUTE_MS
    for step in range(6):  # the alarm goes on and off; the last step (5) leaves it off
        gw.send(gw.batch(machine_samples(["lathe-1", "lathe-2"], t0 + step * MINUTE_MS, step)))
    # a late sample: older than what current_values holds, changes neither table
    gw.send(gw.batch([Sample(device="lathe-1", signal="alarm_active", ts_ms=t0, value=True)]))
    # a device with no alarm signal: presence without an alarm flag
    gw.send(gw.batch([Sample(device="meter-1", signal="spindle_speed", ts_ms=t0, value=1.0)]))
    # lathe-2's alarm comes on at the newest time
    newest = t0 + 6 * MINUTE_MS
    gw.send(gw.batch([Sample(device="lathe-2", signal="alarm_active", ts_ms=newest, value=True)]))
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM batch_ledger") == 9, what="every batch")
    expected = rows(pg_url, PRESENCE_FROM_CURRENT_VALUES)
    presence = rows(
        pg_url, "SELECT device_key, last_seen, alarm FROM device_presence ORDER BY device_key"
    )
    assert presence == expected
    by_device = {
        device: (seen, alarm)
        for device, seen, alarm in rows(
            pg_url,
            "SELECT d.device_id, p.last_seen, p.alarm FROM device_presence p "
            "JOIN devices d ON d.key = p.device_key",
        )
    }
    assert by_device == {
        "lathe-1": (at(t0 + 5 * MINUTE_MS), False),
        "lathe-2": (at(newest), True),
        "meter-1": (at(t0), None),
    }

"""TimescaleDB's own machinery through the real ingest: compression, continuous aggregates, retention.

The twins of the plain-path tests in test_ingest_derived.py (rollups, real-time aggregation,
partition retention). Policies are TimescaleDB jobs: a test runs one at once with
``CALL run_job(id)``, or moves its next start to now so the server's background scheduler runs it.

Compression and retention act on data older than the replay horizon, which the ingest refuses to
store. So those tests play the passing of time the way a deployment sees it: an ingest with a
wide horizon stores data 10 (or 80) days old, then the ingest is restarted with a narrow horizon
and short policies (as ``shulian ingest migrate`` or any start re-applies them), and the job runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from ingest_support import (
    FakeGateway,
    ingest_settings,
    now_ms,
    rows,
    run_timescaledb_job,
    scalar,
    wait_until,
)

from ingest.db.migrate import Chain
from ingest.service import IngestService, prepare_database
from ingest.settings import DAY_S
from monitoring import kpis
from monitoring.db.migrate import ALL_CHAINS
from monitoring.settings import KpiSettings
from shulian.devservices import Mosquitto
from wire.payloads import Sample

pytestmark = pytest.mark.only_storage_path("timescaledb")


@pytest.fixture()
def migration_chains() -> tuple[Chain, ...]:
    """The compression test reads the stored data back through the monitoring's KPIs too."""
    return ALL_CHAINS


MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
VIEWS = ("telemetry_1m", "telemetry_1h", "counter_1m", "counter_1h")


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def device_key(url: str, device: str) -> int:
    return int(scalar(url, "SELECT key FROM devices WHERE device_id = %s", (device,)))


def job_id(url: str, proc: str, table: str) -> int:
    """The id of a policy job, e.g. ('policy_compression', 'telemetry')."""
    found = scalar(
        url,
        "SELECT job_id FROM timescaledb_information.jobs "
        "WHERE proc_name = %s AND hypertable_name = %s",
        (proc, table),
    )
    assert found is not None, f"no {proc} job on {table}"
    return int(found)


def materialized(url: str, view: str, where: str = "true", params: Any = None) -> list[tuple]:
    """Rows of a continuous aggregate's materialization hypertable (what refreshes wrote)."""
    row = rows(
        url,
        "SELECT materialization_hypertable_schema, materialization_hypertable_name "
        "FROM timescaledb_information.continuous_aggregates WHERE view_name = %s",
        (view,),
    )
    assert row, f"{view} is not a continuous aggregate"
    schema, table = row[0]
    query = psycopg.sql.SQL("SELECT * FROM {}.{} WHERE {} ORDER BY 1, 2, 3").format(
        psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table), psycopg.sql.SQL(where)
    )
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def chunks(url: str, table: str) -> list[tuple[dt.datetime, dt.datetime, bool]]:
    return rows(
        url,
        "SELECT range_start, range_end, is_compressed FROM timescaledb_information.chunks "
        "WHERE hypertable_name = %s ORDER BY range_start",
        (table,),
    )


def machine_minutes(device: str, start_ms: int, minutes: int) -> list[Sample]:
    """Ten samples a minute of a gauge, a counter (with a shift reset), a state and an alarm."""
    out: list[Sample] = []
    for n in range(minutes * 10):
        ts = start_ms + n * 6_000
        out += [
            Sample(device=device, signal="spindle_speed", ts_ms=ts, value=1000.0 + (n % 37) * 0.5),
            Sample(device=device, signal="part_count", ts_ms=ts, value=(n if n < 150 else n - 150)),
            Sample(
                device=device,
                signal="machine_state",
                ts_ms=ts,
                value="running" if n % 100 < 70 else "idle",
            ),
            Sample(device=device, signal="alarm_active", ts_ms=ts, value=n % 50 == 0),
        ]
    return out


def send_all(gw: FakeGateway, samples: list[Sample], per_batch: int = 200) -> None:
    for first in range(0, len(samples), per_batch):
        gw.send(gw.batch(samples[first : first + per_batch]))


def wide_horizon(days: float) -> dict[str, dict[str, Any]]:
    """Settings that accept data ``days`` old, with policies that keep it raw."""
    return {
        "limits": {"max_age_s": (days + 1) * DAY_S},
        "storage": {
            "compress_after_days": days + 2,
            "retention_days": days + 30,
            "ledger_retention_days": days + 2,
        },
    }


def restart_policies(url: str, mosquitto: Mosquitto, **sections: dict[str, Any]) -> None:
    """What a restart with new settings does to the policies (the migrate step of every start)."""
    prepare_database(ingest_settings(url, mosquitto.url, **sections), chains=ALL_CHAINS)


def readback(url: str, old_day: dt.date, keys: list[int]) -> dict[str, Any]:
    """Everything the ingest's queries and the monitoring module read of the stored data."""
    out: dict[str, Any] = {
        "count": scalar(url, "SELECT count(*) FROM telemetry"),
        "telemetry": rows(
            url,
            "SELECT ts, value, value_text, device_key, signal_id, quality FROM telemetry "
            "ORDER BY device_key, signal_id, ts",
        ),
        "counter_increments": rows(
            url,
            "SELECT ts, increase, device_key, signal_id, event FROM counter_increments "
            "ORDER BY device_key, signal_id, ts",
        ),
        # a lookup through the (device, signal, ts) index: each signal's newest old sample
        "last_before": rows(
            url,
            "SELECT DISTINCT ON (device_key, signal_id) device_key, signal_id, ts, value "
            "FROM telemetry WHERE ts < now() - interval '5 days' "
            "ORDER BY device_key, signal_id, ts DESC",
        ),
    }
    for view in VIEWS:
        out[view] = rows(url, f"SELECT * FROM {view} ORDER BY bucket, device_key, signal_id")

    async def day_figures() -> list[dict[str, Any]]:
        settings = KpiSettings()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await kpis.refresh_day(conn, settings, old_day)
            window = kpis.window_for(settings, dt.datetime.now(dt.UTC), old_day, old_day)
            figures = await kpis.device_figures(conn, settings, window, dt.datetime.now(dt.UTC))
        return [kpis.total([f]).as_dict() for f in figures if f.key in keys]

    out["kpis"] = asyncio.run(day_figures())
    return out


def test_compression_policy_compresses_old_chunks_and_the_data_reads_back_the_same(
    start_ingest: Callable[..., IngestService],
    fake_gateway: Callable[..., FakeGateway],
    pg_url: str,
    mosquitto: Mosquitto,
) -> None:
    service = start_ingest(**wide_horizon(10))
    gw = fake_gateway(enterprise="ent-z", gateway="gw-z", devices=["m1", "m2"])
    gw.birth()
    # two hours of data from 08:00 (city time) ten days ago
    old_day = kpis.city_today(KpiSettings(), at(now_ms() - 10 * DAY_MS))
    old_ms = int(kpis.day_start(KpiSettings(), old_day).timestamp() * 1000) + 8 * HOUR_MS
    fresh_ms = now_ms() - 5 * MINUTE_MS
    samples = machine_minutes("m1", old_ms, 120) + machine_minutes("m2", old_ms, 120)
    samples += machine_minutes("m1", fresh_ms, 2)
    send_all(gw, samples)
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") == len(samples),
        timeout_s=120,
        what="every sample stored",
    )
    # let the stored data's minutes be materialized first, as they would be ten days later
    for view in VIEWS:
        run_timescaledb_job(pg_url, job_id(pg_url, "policy_refresh_continuous_aggregate", view))
    keys = [device_key(pg_url, "m1"), device_key(pg_url, "m2")]
    before = readback(pg_url, old_day, keys)
    # 149 up to the shift reset (the first reading is a baseline), then 1049 counted from zero
    assert [k["output"] for k in before["kpis"]] == [1198, 1198]
    assert all(not compressed for _, _, compressed in chunks(pg_url, "telemetry"))
    service.stop()

    restart_policies(
        pg_url,
        mosquitto,
        limits={"max_age_s": DAY_S},
        storage={"compress_after_days": 2, "retention_days": 30},
    )
    for table in ("telemetry", "counter_increments"):
        job = job_id(pg_url, "policy_compression", table)
        config = scalar(
            pg_url, "SELECT config FROM timescaledb_information.jobs WHERE job_id = %s", (job,)
        )
        assert config["compress_after"] == "48:00:00"
        run_timescaledb_job(pg_url, job)

    horizon = at(now_ms() - 2 * DAY_MS)
    for table in ("telemetry", "counter_increments"):
        found = chunks(pg_url, table)
        assert [c for _, end, c in found if end <= horizon] == [True], f"{table}: {found}"
        assert {c for _, end, c in found if end > horizon} == {False}, f"{table}: {found}"
        stats = rows(
            pg_url,
            "SELECT before_compression_total_bytes, after_compression_total_bytes "
            "FROM chunk_compression_stats(%s) WHERE compression_status = 'Compressed'",
            (table,),
        )
        assert len(stats) == 1
        assert stats[0][1] < stats[0][0], f"{table} did not shrink: {stats}"
    total_before, total_after = rows(
        pg_url,
        "SELECT before_compression_total_bytes, after_compression_total_bytes "
        "FROM hypertable_compression_stats('telemetry')",
    )[0]
    assert total_after * 2 < total_before, (total_before, total_after)

    after = readback(pg_url, old_day, keys)
    for name, value in before.items():
        assert after[name] == value, f"{name} differs after compression"


def test_the_scheduler_materializes_closed_minutes_and_redoes_late_ones(
    start_ingest: Callable[..., IngestService],
    fake_gateway: Callable[..., FakeGateway],
    pg_url: str,
) -> None:
    start_ingest()
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
    refresh_1m = job_id(pg_url, "policy_refresh_continuous_aggregate", "telemetry_1m")

    def first_minute() -> list[tuple]:
        return rows(
            pg_url,
            "SELECT samples, min_value, max_value, avg_value, last_value FROM telemetry_1m "
            "WHERE device_key = %s AND bucket = %s",
            (key, at(base)),
        )

    def materialized_minutes() -> list[tuple]:
        return [
            (bucket, samples)
            for bucket, _, _, samples, *_ in materialized(
                pg_url, "telemetry_1m", "device_key = %s", (key,)
            )
        ]

    def scheduler_runs_now(job: int) -> None:
        """Let the server's background scheduler run the job now instead of within its period."""
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SELECT alter_job(%s, next_start => now())", (job,))

    # the policy's job, run by the scheduler, materializes both closed minutes
    scheduler_runs_now(refresh_1m)
    wait_until(
        lambda: materialized_minutes() == [(at(base), 3), (at(base + MINUTE_MS), 1)],
        timeout_s=150,
        what="both minutes materialized by the scheduler",
    )
    assert first_minute() == [(3, 10.0, 30.0, 20.0, 20.0)]
    # late data into a materialized minute: stored at once, in the view once a refresh redid it
    gw.send(gw.batch([speed(50_000, 100.0)]))
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") == 5)
    scheduler_runs_now(refresh_1m)
    # The view is real-time, so it can show the late sample before the materialization holds
    # it; what the refresh wrote is what this waits for.
    wait_until(
        lambda: materialized_minutes()[0] == (at(base), 4),
        timeout_s=150,
        what="the late sample in the materialized minute",
    )
    assert first_minute() == [(4, 10.0, 100.0, 40.0, 100.0)]
    hour = rows(
        pg_url,
        "SELECT sum(samples), max(max_value) FROM telemetry_1h WHERE device_key = %s",
        (key,),
    )
    assert hour == [(5, 100.0)]


def test_the_continuous_aggregates_include_fresh_data_in_real_time(
    start_ingest: Callable[..., IngestService],
    fake_gateway: Callable[..., FakeGateway],
    pg_url: str,
) -> None:
    start_ingest()
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
    assert scalar(pg_url, "SELECT sum(increase) FROM counter_1m WHERE device_key = %s", (key,)) == 4
    assert scalar(pg_url, "SELECT sum(increase) FROM counter_1h WHERE device_key = %s", (key,)) == 4
    assert (
        scalar(pg_url, "SELECT sum(samples) FROM telemetry_1h WHERE device_key = %s", (key,)) == 3
    )
    # none of it materialized: the refresh policies end a bucket before now (end_offset)
    for view in VIEWS:
        assert materialized(pg_url, view, "device_key = %s", (key,)) == [], view


def test_retention_drops_old_chunks_and_keeps_newer_data_and_rollups(
    start_ingest: Callable[..., IngestService],
    fake_gateway: Callable[..., FakeGateway],
    pg_url: str,
    mosquitto: Mosquitto,
) -> None:
    # Continuous aggregates drop whole chunks too, and theirs are long (10 days for telemetry_1m,
    # 70 for counter_1m: ten times the raw chunk): data 80 days old fills chunks all past retention.
    service = start_ingest(**wide_horizon(80))
    gw = fake_gateway(enterprise="ent-d", gateway="gw-d", devices=["p1"])
    gw.birth()
    old_ms = (now_ms() - 80 * DAY_MS) // HOUR_MS * HOUR_MS
    fresh_ms = now_ms() - 5 * MINUTE_MS
    old = machine_minutes("p1", old_ms, 10)
    fresh = machine_minutes("p1", fresh_ms, 2)
    send_all(gw, old + fresh)
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") == len(old) + len(fresh),
        what="every sample stored",
    )
    key = device_key(pg_url, "p1")
    for view in VIEWS:  # materialized while the raw data was there
        run_timescaledb_job(pg_url, job_id(pg_url, "policy_refresh_continuous_aggregate", view))
    old_hour = rows(
        pg_url,
        "SELECT bucket, signal_id, samples, min_value, max_value FROM telemetry_1h "
        "WHERE bucket < %s ORDER BY 1, 2",
        (at(fresh_ms - DAY_MS),),
    )
    assert len(old_hour) == 3  # the gauge, the counter's readings, the alarm flag
    old_parts = scalar(
        pg_url, "SELECT sum(increase) FROM counter_1h WHERE bucket < %s", (at(fresh_ms - DAY_MS),)
    )
    assert old_parts == 99  # 0..99 (the baseline, then 99 steps)
    service.stop()

    restart_policies(
        pg_url,
        mosquitto,
        limits={"max_age_s": DAY_S},
        storage={
            "compress_after_days": 3,
            "retention_days": 5,
            "rollup_1m_retention_days": 6,
        },
    )
    horizon = at(now_ms() - 5 * DAY_MS)
    assert any(end <= horizon for _, end, _ in chunks(pg_url, "telemetry"))
    for table in ("telemetry", "counter_increments", "telemetry_1m", "counter_1m"):
        run_timescaledb_job(pg_url, job_id(pg_url, "policy_retention", table))
    for table in ("telemetry", "counter_increments"):
        found = chunks(pg_url, table)
        assert found and all(end > horizon for _, end, _ in found), f"{table}: {found}"
    # the newer data stays, raw and aggregated
    assert scalar(pg_url, "SELECT count(*) FROM telemetry") == len(fresh)
    assert scalar(pg_url, "SELECT min(ts) FROM telemetry") == at(fresh_ms)
    fresh_speed = scalar(
        pg_url,
        "SELECT sum(samples) FROM telemetry_1m WHERE device_key = %s AND "
        "signal_id = (SELECT id FROM signals WHERE name = 'spindle_speed')",
        (key,),
    )
    assert fresh_speed == 20
    # the 1-minute rollups of the old day are dropped after 6 days, the hourly ones outlive
    # the raw data (kept for ten years)
    assert materialized(pg_url, "telemetry_1m", "bucket < %s", (horizon,)) == []
    assert materialized(pg_url, "counter_1m", "bucket < %s", (horizon,)) == []
    assert (
        rows(
            pg_url,
            "SELECT bucket, signal_id, samples, min_value, max_value FROM telemetry_1h "
            "WHERE bucket < %s ORDER BY 1, 2",
            (at(fresh_ms - DAY_MS),),
        )
        == old_hour
    )
    assert (
        scalar(
            pg_url,
            "SELECT sum(increase) FROM counter_1h WHERE bucket < %s",
            (at(fresh_ms - DAY_MS),),
        )
        == old_parts
    )

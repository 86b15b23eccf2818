"""Before/after evidence of machine data that came through the real ingest (both storage paths).

A fake gateway sends ent-a's lathe-1 history as backlog batches over Mosquitto; the ingest
stores samples, state intervals and counter increments; the daily KPI rows are materialized and
the API answers. The gateway's birth is now, but its data starts on day G = today - 5: go-live is
the first data day, as for a gateway that replays a backlog (or the demo's history).

- G and G+1 (the baseline, measured over 2 days): running 00:00-06:00, then off; part_count
  0 -> 100 and active_energy 0 -> 50 kWh each day (cumulative counters, 100 -> 200 on G+1).
- yesterday Y: running 00:00-12:00, then off; part_count 200 -> 500, active_energy 100 -> 190.

Known answers: baseline utilization 6 h / 24 h = 25 %, 100 parts a day, 0.5 kWh a part; Y's
month (only Y has data in it after the baseline) 50 %, 300 parts, 0.3 kWh a part.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient
from ingest_support import FakeGateway, run_timescaledb_job, scalar
from monitoring_data import issue_tokens, seed_registry
from support import wait_until

from ingest.service import IngestService
from monitoring import kpis
from monitoring.api.app import create_app
from monitoring.settings import KpiSettings, MonitoringSettings
from wire.payloads import Sample

TZ = ZoneInfo("Asia/Shanghai")


def _ms(day: date, hour: float) -> int:
    return int((datetime.combine(day, time(0), tzinfo=TZ).timestamp() + hour * 3600) * 1000)


def _day_samples(day: date, run_h: float, parts: tuple[float, float],
                 kwh: tuple[float, float]) -> list[Sample]:  # fmt: skip
    def sample(signal: str, hour: float, value: Any) -> Sample:
        return Sample(device="lathe-1", signal=signal, ts_ms=_ms(day, hour), value=value)

    end = run_h - 1 / 60  # the counters' last reading, a minute before the machine stops
    return [
        sample("machine_state", 0, "running"),
        sample("part_count", 0, parts[0]),
        sample("active_energy", 0, kwh[0]),
        sample("part_count", end, parts[1]),
        sample("active_energy", end, kwh[1]),
        sample("machine_state", run_h, "off"),
    ]


def _catch_up_rollups(service: IngestService, url: str, storage_path: str) -> None:
    """Late (backlog) data is in the counter views once the next rollup refresh has run."""
    if storage_path == "postgresql":
        assert service.maintenance is not None
        service.maintenance.run_job("rollup refresh")
        return
    with psycopg.connect(url) as conn:
        jobs = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_refresh_continuous_aggregate'"
        ).fetchall()
    for (job,) in jobs:
        run_timescaledb_job(url, job)


async def _materialize(url: str, days: list[date]) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for day in days:
            await kpis.refresh_day(conn, KpiSettings(), day)


def test_evidence_of_data_sent_through_the_ingest(
    pg_url: str,
    storage_path: str,
    start_ingest: Callable[..., IngestService],
    fake_gateway: Callable[..., FakeGateway],
) -> None:
    service = start_ingest()
    seed_registry(pg_url)
    today = datetime.now(TZ).date()
    g, yesterday = today - timedelta(days=5), today - timedelta(days=1)
    gw = fake_gateway("ent-a", "gw-ent-a", ["lathe-1"])
    gw.birth()
    history = [
        _day_samples(g, 6, (0, 100), (0, 50)),
        _day_samples(g + timedelta(days=1), 6, (100, 200), (50, 100)),
        _day_samples(yesterday, 12, (200, 500), (100, 190)),
    ]
    for samples in history:
        gw.send(gw.batch(samples, historical=True))
    sent = sum(len(s) for s in history)
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") == sent, 30,
               what=f"{sent} samples stored")  # fmt: skip
    _catch_up_rollups(service, pg_url, storage_path)
    asyncio.run(_materialize(pg_url, [g + timedelta(days=n) for n in range(5)]))

    tokens = issue_tokens(pg_url)
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    with TestClient(create_app(MonitoringSettings(db={"url": pg_url}))) as client:
        client.post("/api/enterprises/ent-a/baselines", json={"method": "measured",
                    "measured_days": 2}, headers=admin).raise_for_status()  # fmt: skip
        body = client.get("/api/enterprises/ent-a/evidence", headers=admin).json()

    assert body["go_live"] == g.isoformat()
    (gateway,) = body["gateways"]
    assert gateway["first_data_day"] == g.isoformat()
    assert gateway["first_birth"] is not None  # today: later than the data
    base = body["baseline"]
    assert (base["period"]["first_day"], base["period"]["last_day"], base["days"]) == (
        g.isoformat(),
        (g + timedelta(days=1)).isoformat(),
        2,
    )
    assert base["figures"]["utilization"] == pytest.approx(0.25, abs=1e-4)
    assert base["figures"]["output_per_day"] == pytest.approx(100)
    assert base["figures"]["kwh_per_part"] == pytest.approx(0.5, abs=1e-4)
    latest = body["latest"]
    assert latest["label"] == f"{yesterday:%Y-%m}" and latest["days"] == 1
    assert latest["figures"]["utilization"] == pytest.approx(0.5, abs=1e-4)
    assert latest["figures"]["output_per_day"] == pytest.approx(300)
    assert latest["figures"]["kwh_per_part"] == pytest.approx(0.3, abs=1e-4)
    assert latest["change"]["utilization"]["relative"] == pytest.approx(1.0, abs=1e-3)
    assert latest["change"]["output_per_day"]["relative"] == pytest.approx(2.0, abs=1e-3)
    assert latest["change"]["kwh_per_part"]["improved"] is True

"""The monitoring module answers the same on both storage paths for the same data.

One broker, two real ingests (one per path, each in its own share group so both get every
message), one plain PostgreSQL database and one TimescaleDB database with the same registry.
Fake gateways send a constructed hour and a half of four machines: state changes, a counter
reset and a uint16 wrap, an alarm, a device that falls silent, a disconnect, a replayed backlog
and a late sample. Then every page's JSON (overview, segment, district, enterprise, device, the
device's signals, series and timeline), the trend and the daily export are compared, evaluated
at one fixed moment: all live, and again once part of the day is materialized in the daily
KPI tables.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from ingest_support import (
    FakeGateway,
    ingest_settings,
    now_ms,
    run_timescaledb_job,
    scalar,
    wait_until,
)
from monitoring_data import DEVICES, ENTERPRISES, seed_registry

from ingest.service import IngestService, prepare_database
from monitoring import kpis
from monitoring.api import views
from monitoring.api.access import Reach
from monitoring.api.app import create_app
from monitoring.api.deps import Caller
from monitoring.api.scopes import Scope
from monitoring.auth import Principal, Role, create_token
from monitoring.db.migrate import ALL_CHAINS
from monitoring.settings import KpiSettings, MonitoringSettings
from shulian.devservices import Mosquitto, ServiceError, create_database, drop_database
from wire.payloads import Quality, Sample

PG_SERVER_URL = os.environ.get(
    "SHULIAN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PATHS = ("postgresql", "timescaledb")
MINUTE_MS = 60_000
SETTINGS = KpiSettings()
ADMIN = Caller(Principal(token_id=0, role=Role.ADMIN), Reach())


@pytest.fixture()
def both_databases(timescaledb_server_url: str) -> Iterator[dict[str, str]]:
    """A fresh database on the plain server and one on the TimescaleDB server."""
    name = f"shulian_paths_{uuid.uuid4().hex[:12]}"
    servers = {"postgresql": PG_SERVER_URL, "timescaledb": timescaledb_server_url}
    made: dict[str, str] = {}
    try:
        for path, server in servers.items():
            made[path] = create_database(server, name)
    except ServiceError as exc:
        pytest.skip(f"needs both servers: {exc}")
    yield made
    for path in made:
        drop_database(servers[path], name)


def machine_data(t0: int) -> list[list[Sample]]:
    """Batches in sending order, per gateway's turn: (ent-a, ent-b, ent-c) minute by minute."""

    def s(device: str, signal: str, minute: float, value: Any, **kw: Any) -> Sample:
        return Sample(
            device=device, signal=signal, ts_ms=t0 + int(minute * MINUTE_MS), value=value, **kw
        )

    batches: list[list[Sample]] = []
    parts = rejects = 0
    for minute in range(90):
        a: list[Sample] = []
        for half in (0.0, 0.5):  # lathe-1: every 30 s
            m = minute + half
            state = "running" if m < 40 or m >= 55 else "idle"
            if state == "running":
                parts += 1
            if m == 60:
                parts = 1  # a shift reset: counted from zero
            rejects += m % 10 == 0
            k = int(m * 2)
            a += [
                s("lathe-1", "machine_state", m, state),
                s("lathe-1", "part_count", m, parts),
                s("lathe-1", "reject_count", m, rejects),
                s("lathe-1", "active_energy", m, (65_500 + 3 * k) % 65_536),  # wraps at k = 12
                s("lathe-1", "spindle_speed", m, 1200 + (k % 7) * 10 if state == "running" else 0),
                s("lathe-1", "alarm_active", m, False),
            ]
        if minute <= 30:  # grinder-1 falls silent after half an hour, without a disconnect
            a += [
                s("grinder-1", "machine_state", minute, "running"),
                s("grinder-1", "part_count", minute, 500 + minute),
                s("grinder-1", "spindle_speed", minute, 3000 + minute),
            ]
        b: list[Sample] = []
        for third in (0.0, 1 / 3, 2 / 3):  # press-1: every 20 s
            m = minute + third
            state = "off" if m < 20 else "running" if m < 70 else "fault"
            b += [
                s("press-1", "machine_state", m, state),
                s("press-1", "alarm_active", m, state == "fault"),
                s("press-1", "active_energy", m, 1000 + int(m * 3)),
                s("press-1", "stroke_count", m, int(m * 12)),
            ]
        c = [
            s("hobber-1", "machine_state", minute, "idle" if minute < 30 else "running"),
            s("hobber-1", "part_count", minute, max(0, minute - 30)),
            s("hobber-1", "spindle_speed", minute, 80 + minute % 5),
            s(
                "hobber-1",
                "spindle_temperature",
                minute,
                60 + minute % 3,
                quality=Quality.UNCERTAIN,
            ),
            s("hobber-1", "spindle_load", minute, 999, quality=Quality.BAD),
        ]
        if 45 <= minute < 60:
            c = []  # hobber-1's gateway lost these minutes; they come later as a backlog
        batches += [a, b, c]
    return batches


def backlog(t0: int) -> list[Sample]:
    """hobber-1's minutes 45..59, replayed after newer data (and one fault inside them)."""
    out = []
    for minute in range(45, 60):
        ts = t0 + minute * MINUTE_MS
        out += [
            Sample(device="hobber-1", signal="machine_state", ts_ms=ts, value="running"),
            Sample(device="hobber-1", signal="part_count", ts_ms=ts, value=minute - 30),
            Sample(device="hobber-1", signal="spindle_speed", ts_ms=ts, value=80 + minute % 5),
        ]
    fault_ms = t0 + 50 * MINUTE_MS + 30_000
    out.append(Sample(device="hobber-1", signal="machine_state", ts_ms=fault_ms, value="fault"))
    return out


def press_state(url: str) -> str | None:
    return scalar(
        url,
        "SELECT state FROM device_states s JOIN devices d ON d.key = s.device_key "
        "WHERE d.device_id = 'press-1'",
    )


def stored(url: str) -> tuple[int, int]:
    return (
        int(scalar(url, "SELECT count(*) FROM telemetry")),
        int(scalar(url, "SELECT count(*) FROM batch_ledger")),
    )


async def pages(url: str, now: datetime, days: tuple[date, date]) -> dict[str, Any]:
    """Every page's JSON and every KPI the monitoring module computes, at ``now``."""
    out: dict[str, Any] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for first, last in ((None, None), days):
            key = f"{first}..{last}"
            out[f"overview {key}"] = await views.overview(conn, SETTINGS, now, first, last)
            for code in sorted({segment for _, _, _, segment, _ in ENTERPRISES}):
                out[f"segment {code} {key}"] = await views.group_page(
                    conn, SETTINGS, ADMIN, Scope("segment", code), now, first, last
                )
            for code in sorted({district for _, _, district, _, _ in ENTERPRISES}):
                out[f"district {code} {key}"] = await views.group_page(
                    conn, SETTINGS, ADMIN, Scope("district", code), now, first, last
                )
            for ent, *_ in ENTERPRISES:
                out[f"enterprise {ent} {key}"] = await views.enterprise_page(
                    conn, SETTINGS, ADMIN, ent, now, first, last
                )
        for ent, device, *_ in DEVICES:
            scope = Scope("device", f"{ent}/{device}")
            out[f"device {ent}/{device}"] = await views.device_live(
                conn, SETTINGS, ADMIN, scope, now
            )
        window = kpis.window_for(SETTINGS, now)
        figures = await kpis.device_figures(conn, SETTINGS, window, now)
        out["device figures"] = [dataclasses.asdict(f) for f in figures]
        out["trend"] = await kpis.daily_trend(conn, days[0], days[1])
        for day in days:
            out[f"export {day}"] = await kpis.daily_export_rows(conn, day)
    return out


def http_pages(url: str) -> dict[str, Any]:
    """The JSON of the endpoints whose answer does not move with the clock, through the app.

    (The timeline endpoint ends an open interval at the request's moment: its intervals are
    compared in the device page, at the fixed moment.)
    """

    async def token() -> str:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return (await create_token(conn, Role.ADMIN)).secret

    headers = {"Authorization": f"Bearer {asyncio.run(token())}"}
    out: dict[str, Any] = {}
    with TestClient(create_app(MonitoringSettings(db={"url": url}))) as client:
        for path in ["/api/enterprises", "/api/segments", "/api/districts"] + [
            f"/api/enterprises/{ent}/devices/{device}/{what}"
            for ent, device, *_ in DEVICES
            for what in (
                "signals",
                "series?signal=spindle_speed&hours=48",
                "series?signal=spindle_speed&hours=72",
                "series?signal=spindle_temperature&hours=48",
            )
        ]:
            response = client.get(path, headers=headers)
            out[path] = (response.status_code, response.json())
    return out


def test_every_monitoring_answer_is_the_same_on_both_storage_paths(
    both_databases: dict[str, str], mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHULIAN_INGEST_STORAGE__PATH", raising=False)
    services: dict[str, IngestService] = {}
    gateways: dict[str, FakeGateway] = {}
    try:
        for path, url in both_databases.items():
            settings = ingest_settings(
                url,
                mosquitto.url,
                storage={"path": path},
                mqtt={"share_group": f"paths-{path}"},
                registry={"auto_register_gateways": False},
            )
            prepare_database(settings, chains=ALL_CHAINS)
            seed_registry(url)
            service = IngestService(settings, chains=ALL_CHAINS)
            service.start(wait_for_db_s=10)
            assert service.consumer is not None and service.consumer.subscribed.wait(10)
            assert service.storage_path is not None and service.storage_path.value == path
            services[path] = service
        for ent, *_ in ENTERPRISES:
            devices = [d for e, d, *_ in DEVICES if e == ent]
            gw = FakeGateway(mosquitto.url, ent, f"gw-{ent}", devices).connect()
            gateways[ent] = gw
            gw.birth()
        t0 = (now_ms() // MINUTE_MS - 91) * MINUTE_MS
        sent = 0
        points = 0
        for n, samples in enumerate(machine_data(t0)):
            if samples:
                gateways[ENTERPRISES[n % 3][0]].send(gateways[ENTERPRISES[n % 3][0]].batch(samples))
                sent += 1
                points += len(samples)

        def all_stored() -> bool:
            return all(stored(url) == (points, sent) for url in both_databases.values())

        wait_until(all_stored, timeout_s=120, what="every batch stored on both paths")
        # the replayed backlog, then a disconnect: each after the previous is stored everywhere
        late = backlog(t0)
        gateways["ent-c"].send(gateways["ent-c"].batch(late))
        sent, points = sent + 1, points + len(late)
        wait_until(all_stored, timeout_s=60, what="the backlog stored on both paths")
        gateways["ent-b"].device_status("press-1", "disconnected")
        wait_until(
            lambda: all(press_state(url) == "offline" for url in both_databases.values()),
            what="press-1 offline on both paths",
        )
        # both rollups caught up (late data is in the views once the next refresh ran)
        maintenance = services["postgresql"].maintenance
        assert maintenance is not None
        maintenance.run_job("rollup refresh")
        tsdb = both_databases["timescaledb"]
        with psycopg.connect(tsdb) as conn:
            jobs = conn.execute(
                "SELECT job_id FROM timescaledb_information.jobs "
                "WHERE proc_name = 'policy_refresh_continuous_aggregate'"
            ).fetchall()
        assert len(jobs) == 4
        for (job,) in jobs:
            run_timescaledb_job(tsdb, job)
    finally:
        for gw in gateways.values():
            gw.close()
        for service in services.values():
            service.stop()

    now = datetime.now(UTC).replace(microsecond=0)
    today = kpis.city_today(SETTINGS, now)
    days = (kpis.city_today(SETTINGS, datetime.fromtimestamp(t0 / 1000, UTC)), today)
    answers: dict[str, dict[str, Any]] = {}
    for path, url in both_databases.items():
        answers[path] = {"live": asyncio.run(pages(url, now, days))}

    # part of the day materialized in the daily KPI tables, the rest live
    async def refresh(url: str) -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for day in sorted(set(days)):
                await kpis.refresh_day(conn, SETTINGS, day, now - timedelta(minutes=30))

    for path, url in both_databases.items():
        asyncio.run(refresh(url))
        answers[path]["refreshed"] = asyncio.run(pages(url, now, days))
        answers[path]["http"] = http_pages(url)

    plain, timescale = answers["postgresql"], answers["timescaledb"]
    lathe = plain["live"]["device ent-a/lathe-1"]["summary"]
    assert lathe["output"] > 100 and lathe["energy_kwh"] > 0  # the data is in the KPIs
    for stage in ("live", "refreshed", "http"):
        assert plain[stage].keys() == timescale[stage].keys()
        for name in plain[stage]:
            assert plain[stage][name] == timescale[stage][name], f"{stage}: {name} differs"

"""Data-integration measures on constructed days with known answers, through the real ingest.

A fake gateway publishes over Mosquitto to the ingest, which stores into PostgreSQL or
TimescaleDB (both storage paths); ``integration.refresh_day`` then materializes the day and the
query functions must give these answers. The day D is yesterday in the city's time zone
(Asia/Shanghai), so it is complete: 86,400 s.

Enterprise ent-int (segment 345), gateway gw-int:

- grinder-1 (profile raceway_grinder, class grinder), DeviceStatus with max_silence_s
  machine_state 61 s, part_count 61 s, active_energy 65 s (wire 1.2). Report-by-exception
  heartbeats every 60 s from 00:00:00 to 23:59:00 for all three, plus extra machine_state
  changes every 20 s between 08:00 and 09:00 (RBE news: more samples, no more completeness).
  active_energy is lost from 10:00 to 11:59 (last 09:59:00, next 12:00:00): a gap of 7,260 s of
  which 65 + 5 (tolerance) s are covered, so 7,190 s are missing.
- lathe-1 (profile bearing_lathe, class lathe), max_silence_s machine_state and part_count 61 s,
  no energy signal: heartbeats from 00:00 to 11:59:00, then silent. Each signal covers up to
  11:59:00 + 66 s = 43,206 s; the longest gap is 11:59:00 to 24:00 = 43,260 s.
- meter-1 (profile energy_meter, not a class of segment 345), an older gateway's device status
  without max_silence_s: active_energy every 30 s from 06:00:00 to 23:59:30. Its first sample
  ever is at 06:00, so its window is 64,800 s, with the default max silence (65 s): complete.
- hobber-1 (profile gear_hobber, class gear_hobber): registered, never reports.

Enterprise ent-live (segment 367), press-1: live batches today whose oldest samples are 40 s,
40 s and 400 s old when sent, and one historical (backlog) batch 1 h old: the delay figures.

All of D's batches are sent as backlog (historical): they count as historical deliveries, not in
the live delay statistics.
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
from ingest_support import FakeGateway, now_ms, rows, scalar
from support import wait_until

from ingest.service import IngestService
from monitoring import integration
from monitoring.api.app import create_app
from monitoring.auth import Role, create_token
from monitoring.settings import KpiSettings, MonitoringSettings
from wire import topics
from wire.codec import encode
from wire.payloads import DeviceStatus, Sample

TZ = ZoneInfo("Asia/Shanghai")
SETTINGS = KpiSettings()
DAY_S = 86_400

GRINDER_SILENCE = {"machine_state": 61.0, "part_count": 61.0, "active_energy": 65.0}
LATHE_SILENCE = {"machine_state": 61.0, "part_count": 61.0}
ENERGY_MISSING_S = (2 * 3600 + 60) - (65 + 5)
LATHE_COVERED_S = 12 * 3600 - 60 + 66


def _day() -> date:
    return datetime.now(TZ).date() - timedelta(days=1)


def _ms(day: date, seconds: float) -> int:
    start = datetime.combine(day, time(0), tzinfo=TZ)
    return int((start.timestamp() + seconds) * 1000)


def _register(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for ent, segment, gateway in (("ent-int", "345", "gw-int"), ("ent-live", "367", "gw-live")):
            conn.execute(
                "INSERT INTO enterprises (id, name, segment_code) VALUES (%s, %s, %s)",
                (ent, ent.upper(), segment),
            )
            conn.execute("INSERT INTO gateways (id, enterprise_id) VALUES (%s, %s)", (gateway, ent))
        for ent, gateway, device, profile in (
            ("ent-int", "gw-int", "grinder-1", "raceway_grinder"),
            ("ent-int", "gw-int", "lathe-1", "bearing_lathe"),
            ("ent-int", "gw-int", "meter-1", "energy_meter"),
            ("ent-int", "gw-int", "hobber-1", "gear_hobber"),
            ("ent-live", "gw-live", "press-1", "servo_press"),
        ):
            conn.execute(
                "INSERT INTO devices (enterprise_id, device_id, gateway_id, profile) "
                "VALUES (%s, %s, %s, %s)",
                (ent, device, gateway, profile),
            )


def _status(gw: FakeGateway, device: str, profile: str, silence: dict[str, float] | None) -> None:
    status = DeviceStatus(
        gateway=gw.gateway,
        device=device,
        connection="connected",
        ts_ms=now_ms(),
        profile=profile,
        max_silence_s=silence,
    )
    gw.publish(topics.device_status(gw.enterprise, gw.gateway, device), encode(status), retain=True)


def _day_samples(day: date) -> list[Sample]:
    out: list[Sample] = []
    for minute in range(24 * 60):
        t = minute * 60
        out.append(_sample("grinder-1", "machine_state", day, t, "running"))
        out.append(_sample("grinder-1", "part_count", day, t, float(minute)))
        if not 10 * 3600 <= t < 12 * 3600:
            out.append(_sample("grinder-1", "active_energy", day, t, 1000.0 + minute))
        if t < 12 * 3600:
            out.append(_sample("lathe-1", "machine_state", day, t, "idle"))
            out.append(_sample("lathe-1", "part_count", day, t, float(minute)))
    for t in range(8 * 3600 + 20, 9 * 3600, 20):
        if t % 60:
            out.append(_sample("grinder-1", "machine_state", day, t, "idle" if t % 40 else "setup"))
    for t in range(6 * 3600, DAY_S, 30):
        out.append(_sample("meter-1", "active_energy", day, t, 5000.0 + t / 3600))
    return sorted(out, key=lambda s: s.ts_ms)


def _sample(device: str, signal: str, day: date, seconds: int, value: Any) -> Sample:
    return Sample(device=device, signal=signal, ts_ms=_ms(day, seconds), value=value)


def _send(gw: FakeGateway, samples: list[Sample], *, historical: bool, size: int = 500) -> int:
    for start in range(0, len(samples), size):
        gw.send(gw.batch(samples[start : start + size], historical=historical))
    return len(samples)


async def _measure(url: str, day: date) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await integration.refresh_daily(conn, SETTINGS, days_back=1)
        today = day + timedelta(days=1)
        return {
            "devices": {
                d.device: d for d in await integration.device_measures(conn, SETTINGS, day, day)
            },
            "enterprise": (
                await integration.enterprise_measures(
                    conn, SETTINGS, day, day, enterprises=["ent-int"]
                )
            )[0],
            "segment": await integration.group_measures(conn, SETTINGS, day, day, segment="345"),
            "city": await integration.group_measures(conn, SETTINGS, day, day),
            "live": (
                await integration.device_measures(
                    conn, SETTINGS, today, today, enterprises=["ent-live"]
                )
            )[0],
            "two_days": {
                d.device: d
                for d in await integration.device_measures(
                    conn, SETTINGS, day, today, enterprises=["ent-int"]
                )
            },
            "trend": await integration.enterprise_trend(
                conn, SETTINGS, "ent-int", day - timedelta(days=1), today
            ),
        }


@pytest.fixture()
def measured(
    pg_url: str,
    start_ingest: Callable[..., IngestService],
    fake_gateway: Callable[..., FakeGateway],
) -> dict[str, Any]:
    start_ingest(writer={"delay_stats_flush_s": 0})
    _register(pg_url)
    day = _day()
    gw = fake_gateway("ent-int", "gw-int", ["grinder-1", "lathe-1", "meter-1", "hobber-1"])
    gw.birth()
    _status(gw, "grinder-1", "raceway_grinder", GRINDER_SILENCE)
    _status(gw, "lathe-1", "bearing_lathe", LATHE_SILENCE)
    _status(gw, "meter-1", "energy_meter", None)
    sent = _send(gw, _day_samples(day), historical=True)

    live = fake_gateway("ent-live", "gw-live", ["press-1"])
    live.birth()
    for age_s in (40, 40, 400):
        ts = now_ms() - age_s * 1000
        batch = [
            Sample(device="press-1", signal="stroke_count", ts_ms=ts + n * 1000, value=float(n))
            for n in range(3)
        ]
        sent += _send(live, batch, historical=False)
    old = now_ms() - 3600 * 1000
    sent += _send(
        live,
        [Sample(device="press-1", signal="stroke_count", ts_ms=old, value=0.0)],
        historical=True,
    )
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") == sent,
        60,
        what=f"{sent} samples stored",
    )
    wait_until(
        lambda: scalar(pg_url, "SELECT coalesce(sum(deliveries), 0) FROM ingest_delay_daily") == 3,
        10,
        what="the delay statistics stored",
    )
    return asyncio.run(_measure(pg_url, day))


def test_completeness_counts_rbe_heartbeats_as_complete_and_gaps_as_missing(
    measured: dict[str, Any],
) -> None:
    grinder = measured["devices"]["grinder-1"]
    assert grinder.declared and grinder.expected_signals == 3
    assert grinder.window_s == DAY_S
    assert grinder.completeness == pytest.approx(1 - ENERGY_MISSING_S / (3 * DAY_S), abs=1e-4)
    assert grinder.expected_samples == pytest.approx(DAY_S / 61 * 2 + DAY_S / 65, abs=0.1)
    assert grinder.samples == 1440 * 3 - 120 + 120  # 120 energy lost, 120 RBE state changes
    gap = grinder.longest_gap
    assert gap is not None and gap.signal == "active_energy" and gap.seconds == 2 * 3600 + 60
    assert gap.start.astimezone(TZ).time() == time(9, 59)
    assert gap.end.astimezone(TZ).time() == time(12, 0)
    assert (grinder.reports_state, grinder.reports_counters, grinder.reports_energy) == (
        True,
        True,
        True,
    )


def test_a_device_that_falls_silent_and_one_that_never_reported(measured: dict[str, Any]) -> None:
    lathe = measured["devices"]["lathe-1"]
    assert lathe.completeness == pytest.approx(LATHE_COVERED_S / DAY_S, abs=1e-4)
    assert lathe.longest_gap is not None
    assert (lathe.longest_gap.signal, lathe.longest_gap.seconds) == (
        "machine_state",
        DAY_S - (12 * 3600 - 60),
    )
    assert not lathe.reports_energy
    hobber = measured["devices"]["hobber-1"]
    assert not hobber.networked and hobber.completeness is None and hobber.window_s == 0
    assert hobber.longest_gap is None


def test_a_silence_across_midnight_is_one_gap(measured: dict[str, Any]) -> None:
    """lathe-1 stays silent through today: D's gap to midnight and today's from midnight join."""
    gap = measured["two_days"]["lathe-1"].longest_gap
    day = measured["enterprise"].first_day
    assert gap is not None and gap.signal == "machine_state"
    assert gap.start.astimezone(TZ) == datetime.combine(day, time(11, 59), tzinfo=TZ)
    midnight = datetime.combine(day + timedelta(days=1), time(0), tzinfo=TZ)
    assert gap.end > midnight
    assert gap.seconds == pytest.approx((gap.end - gap.start).total_seconds())


def test_an_older_gateway_is_measured_against_the_default_from_its_first_sample(
    measured: dict[str, Any],
) -> None:
    meter = measured["devices"]["meter-1"]
    assert not meter.declared and meter.expected_signals == 1
    assert meter.window_s == DAY_S - 6 * 3600
    assert meter.completeness == 1.0
    assert meter.samples == (DAY_S - 6 * 3600) // 30
    assert meter.longest_gap is not None and meter.longest_gap.seconds == 30


def test_enterprise_networked_share_completeness_and_class_coverage(
    measured: dict[str, Any],
) -> None:
    ent = measured["enterprise"]
    assert (ent.registered, ent.networked, ent.networked_share) == (4, 3, 0.75)
    assert ent.online is None  # a past day has no "now"
    expected = 3 * DAY_S + 2 * DAY_S + (DAY_S - 6 * 3600)
    covered = 3 * DAY_S - ENERGY_MISSING_S + 2 * LATHE_COVERED_S + (DAY_S - 6 * 3600)
    assert ent.completeness == pytest.approx(covered / expected, abs=1e-4)
    assert ent.longest_gap is not None and ent.longest_gap.device == "lathe-1"
    assert ent.segment_classes == 7  # device_profiles/345 has seven machine classes
    assert [(c.machine_class, c.devices, c.covered) for c in ent.classes] == [
        ("gear_hobber", 1, False),
        ("grinder", 1, True),
        ("lathe", 1, False),
    ]
    assert ent.class_coverage == pytest.approx(1 / 3, abs=1e-4)
    assert ent.unclassified_devices == 1  # the energy meter
    assert ent.delay.deliveries == 0 and ent.delay.historical_deliveries > 0


def test_segment_and_city_sum_their_enterprises(measured: dict[str, Any]) -> None:
    segment, city = measured["segment"], measured["city"]
    assert (segment.enterprises, segment.registered, segment.networked) == (1, 4, 3)
    assert segment.completeness == measured["enterprise"].completeness
    assert [(c.machine_class, c.enterprises, c.covering) for c in segment.classes] == [
        ("gear_hobber", 1, 0),
        ("grinder", 1, 1),
        ("lathe", 1, 0),
    ]
    assert (city.enterprises, city.registered, city.networked) == (2, 5, 3)


def test_timeliness_from_sample_to_storage(measured: dict[str, Any]) -> None:
    delay = measured["live"].delay
    assert delay.deliveries == 3
    assert delay.p50_s == 60.0  # two deliveries ~40 s late: bucket (30 s, 60 s]
    assert delay.p95_s == 600.0  # one ~400 s late: bucket (300 s, 600 s]
    assert delay.max_s is not None and 400 <= delay.max_s < 430
    assert delay.mean_s is not None and 160 <= delay.mean_s < 190
    assert delay.historical_deliveries == 1
    assert delay.historical_max_s is not None and 3600 <= delay.historical_max_s < 3600 + 60
    live = measured["live"]
    assert live.online is True and live.networked  # today includes now


def test_trend_has_one_row_per_day(measured: dict[str, Any]) -> None:
    trend = measured["trend"]
    assert [t.first_day for t in trend] == [t.last_day for t in trend]
    assert len(trend) == 3
    before, day, _today = trend
    assert (before.networked, before.completeness) == (0, None)
    assert day.completeness == measured["enterprise"].completeness
    assert day.registered == 4


def test_stored_max_silence_comes_from_the_device_status(
    pg_url: str, measured: dict[str, Any]
) -> None:
    stored = dict(
        rows(pg_url, "SELECT device_id, max_silence_s FROM devices WHERE enterprise_id = 'ent-int'")
    )
    assert stored["grinder-1"] == GRINDER_SILENCE
    assert stored["meter-1"] is None


def test_the_api_serves_the_same_measures_by_role(pg_url: str, measured: dict[str, Any]) -> None:
    async def tokens() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            bureau = await create_token(conn, Role.BUREAU)
            owner = await create_token(conn, Role.ENTERPRISE, enterprise="ent-int")
            return {"bureau": bureau.secret, "owner": owner.secret}

    secrets = asyncio.run(tokens())
    day = measured["enterprise"].first_day.isoformat()
    query = f"?start={day}&end={day}"
    with TestClient(create_app(MonitoringSettings(db={"url": pg_url}))) as client:

        def get(path: str, caller: str) -> Any:
            response = client.get(path, headers={"Authorization": f"Bearer {secrets[caller]}"})
            assert response.status_code == 200, response.text
            return response.json()

        own = get("/api/enterprises/ent-int/integration" + query, "owner")
        assert own["enterprise"]["completeness"] == measured["enterprise"].completeness
        assert own["enterprise"]["networked_share"] == 0.75
        devices = {d["device"]: d for d in own["devices"]}
        assert devices["grinder-1"]["longest_gap"]["signal"] == "active_energy"
        assert devices["lathe-1"]["completeness"] == measured["devices"]["lathe-1"].completeness
        bureau = get("/api/enterprises/ent-int/integration" + query, "bureau")
        assert bureau["devices"] is None and bureau["enterprise"] == own["enterprise"]
        city = get("/api/integration" + query, "bureau")
        assert city["city"]["registered"] == 5
        assert [s["segment"] for s in city["segments"]] == ["345", "367"]
        segment = get("/api/segments/345/integration" + query, "bureau")
        assert segment["segment"]["class_coverage"] == pytest.approx(1 / 3, abs=1e-4)
        assert len(segment["catalogue"]) == 7
        device = get("/api/enterprises/ent-int/devices/meter-1/integration" + query, "owner")
        assert device["device"]["completeness"] == 1.0
        trend = get(f"/api/enterprises/ent-int/integration/trend{query}", "owner")
        assert [d["first_day"] for d in trend["days"]] == [day]

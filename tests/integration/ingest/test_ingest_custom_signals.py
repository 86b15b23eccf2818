"""Custom signals in the real ingest: declared in a device status, stored with their meanings,
shown like canonical signals, and never in the industry KPIs unless mapped (``counts_as``); a
custom name that no status declared is refused like an unknown signal."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from ingest_support import now_ms, rows, scalar, wait_until

from ingest.db.migrate import Chain
from monitoring import kpis
from monitoring.api import views
from monitoring.db.migrate import ALL_CHAINS
from monitoring.settings import KpiSettings
from wire import topics
from wire.codec import encode
from wire.payloads import CustomSignal, DeviceConnection, DeviceStatus, Meaning, Sample

ENTERPRISE, GATEWAY = "ent-custom", "gw-custom"


@pytest.fixture()
def migration_chains() -> tuple[Chain, ...]:
    """The ingest these tests start migrates the monitoring's chain too: they read its KPIs."""
    return ALL_CHAINS


STROKES = CustomSignal(
    name="acme:strokes", kind="counter", meaning=Meaning(en="Strokes (vendor)", zh="冲次计数")
)
FAN = CustomSignal(
    name="acme:fan_speed", kind="gauge", unit="rpm",
    meaning=Meaning(en="Cabinet fan speed", zh="电柜风扇转速"),
)  # fmt: skip
GOOD = CustomSignal(
    name="acme:good_parts", kind="counter", counts_as="good_count",
    meaning=Meaning(en="Good parts (vendor count)", zh="厂商合格品计数"),
)  # fmt: skip


def _declare(gw: Any, device: str, declarations: list[CustomSignal]) -> None:
    status = DeviceStatus(
        gateway=GATEWAY, device=device, connection=DeviceConnection.CONNECTED, ts_ms=now_ms(),
        profile="vendor_press", custom_signals=declarations,
    )  # fmt: skip
    gw.publish(topics.device_status(ENTERPRISE, GATEWAY, device), encode(status), retain=True)


def _counter(gw: Any, device: str, signal: str, values: list[int], t0: int) -> None:
    samples = [
        Sample(device=device, signal=signal, ts_ms=t0 + n * 1000, value=v)
        for n, v in enumerate(values)
    ]
    gw.send(gw.batch(samples))


def _figures(url: str) -> dict[str, tuple[Any, ...]]:
    async def work() -> dict[str, tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            now = datetime.now(UTC)
            settings = KpiSettings()
            window = kpis.window_for(settings, now)
            figures = await kpis.device_figures(conn, settings, window, now, enterprise=ENTERPRISE)
            keys = dict(await (await conn.execute("SELECT key, device_id FROM devices")).fetchall())
            return {keys[f.key]: (f.parts, f.good, f.reject) for f in figures}

    return asyncio.run(work())


def _increase(url: str, device: str, signal: str) -> float:
    return float(
        scalar(
            url,
            "SELECT coalesce(sum(c.increase), 0) FROM counter_increments c "
            "JOIN devices d ON d.key = c.device_key JOIN signals g ON g.id = c.signal_id "
            "WHERE d.device_id = %s AND g.name = %s",
            (device, signal),
        )
    )


def test_custom_signals_are_stored_with_their_meanings_and_only_mapped_ones_count(
    start_ingest: Any, fake_gateway: Any, pg_url: str
) -> None:
    start_ingest()
    gw = fake_gateway(enterprise=ENTERPRISE, gateway=GATEWAY, devices=["press-1", "press-2"])
    gw.birth()
    # Before any status declares it, a custom name is refused (dead-lettered, nothing created).
    t_early = now_ms() - 180_000
    gw.send(gw.batch([Sample(device="press-1", signal="acme:strokes", ts_ms=t_early, value=1)]))
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM dead_letters WHERE reason = 'unknown_signal'"),
        what="the undeclared custom signal's dead letter",
    )
    assert rows(pg_url, "SELECT scope, samples, detail FROM dead_letters") == [
        (
            "sample",
            1,
            "[0] custom signal 'acme:strokes' is not declared in any device status (the gateway "
            "sends the profile's custom_signals there: docs/profiles.md, Custom signals)",
        )
    ]
    assert scalar(pg_url, "SELECT count(*) FROM signals WHERE name LIKE 'acme:%%'") == 0
    _declare(gw, "press-1", [STROKES, FAN])
    _declare(gw, "press-2", [GOOD])
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM signals WHERE name LIKE 'acme:%%'") == 3,
        what="the three declarations in the signals table",
    )
    assert rows(
        pg_url,
        "SELECT name, base, unit, kind, meaning, name_zh FROM signals "
        "WHERE name LIKE 'acme:%%' ORDER BY name",
    ) == [
        ("acme:fan_speed", "acme:fan_speed", "rpm", "gauge", "Cabinet fan speed", "电柜风扇转速"),
        ("acme:good_parts", "good_count", "", "counter", "Good parts (vendor count)", "厂商合格品计数"),
        ("acme:strokes", "acme:strokes", "", "counter", "Strokes (vendor)", "冲次计数"),
    ]  # fmt: skip

    t0 = now_ms() - 120_000
    _counter(gw, "press-1", "part_count", [100, 110], t0)
    wait_until(lambda: _figures(pg_url).get("press-1", (None,))[0] == 10, what="10 parts in KPIs")
    before = _figures(pg_url)

    # An unmapped custom counter is stored and its increments computed, yet no KPI moves.
    _counter(gw, "press-1", "acme:strokes", [1000, 1200, 1500], t0 + 10_000)
    gw.send(gw.batch([Sample(device="press-1", signal="acme:fan_speed.l", ts_ms=t0, value=2490)]))
    wait_until(lambda: _increase(pg_url, "press-1", "acme:strokes") == 500, what="increments")
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM signals WHERE name = 'acme:fan_speed.l'"),
        what="the qualified custom signal",
    )
    assert _figures(pg_url) == before
    assert before["press-1"] == (10.0, None, None)

    # A mapped one counts as the canonical counter it names.
    _counter(gw, "press-2", "acme:good_parts", [3, 10], t0 + 20_000)
    wait_until(lambda: _figures(pg_url).get("press-2", (0, 0))[1] == 7, what="7 good parts")
    assert _figures(pg_url)["press-1"] == before["press-1"]

    # The device page's current values carry the declared unit and meanings, qualifier or not.
    async def current() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            key = scalar(pg_url, "SELECT key FROM devices WHERE device_id = 'press-1'")
            return await views.current_signals(conn, key)

    wait_until(lambda: len(asyncio.run(current())) == 3, what="three current values")
    shown = {s["signal"]: s for s in asyncio.run(current())}
    assert {k: (v["value"], v["unit"], v["meaning"], v["zh"], v["custom"]) for k, v in shown.items()} == {
        "acme:fan_speed.l": (2490.0, "rpm", "Cabinet fan speed", "电柜风扇转速", True),
        "acme:strokes": (1500.0, "", "Strokes (vendor)", "冲次计数", True),
        "part_count": (110.0, "", "Parts produced (cumulative)", "产量计数", False),
    }  # fmt: skip

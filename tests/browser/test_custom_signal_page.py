"""A custom signal from a simulated machine to the device page, in Chinese and in English.

The servo press simulator serves a vendor value that has no canonical name (its drive cabinet
fan, HR 30 in 0.01 r/s). A profile declares it as ``sim:cabinet_fan_speed`` (rpm, with meanings
in both languages); the real gateway reads it, converts it, and publishes it with the
declaration in the device status through a real Mosquitto; the real ingest stores both in
PostgreSQL (each storage path); and the device page in Debian's chromium shows its value, unit and
meaning in zh-CN, then in English. The stored value is checked against the register as pymodbus
(a client nobody here wrote) reads it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from browser_support import api_server, chromium_page, need_chromium
from support import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from pipeline import (
    ENTERPRISE,
    Simulators,
    ingest_is_subscribed,
    log_tails,
    spawn_gateway,
    spawn_ingest,
    stop,
    write_site,
)

from monitoring.auth import Role, create_token
from shulian.devservices import Mosquitto, free_port
from simulators.scenario import single_kind_scenario

pytestmark = [pytest.mark.slow, pytest.mark.needs_pg, pytest.mark.needs_broker]

PROFILES = Path(__file__).resolve().parents[1] / "data" / "profiles"
DEVICE = "press-07"
FAN = "sim:cabinet_fan_speed"


@pytest.fixture()
def pipeline(pg_url: str, mosquitto: Mosquitto, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Simulator, ingest and gateway as their own processes; stopped whatever happens."""
    need_chromium()
    sims = Simulators(
        single_kind_scenario("servo_press", device_id=DEVICE, start_state="running"), tmp_path
    )
    started: list[Any] = []
    try:
        sims.start()
        ingest_log = tmp_path / "ingest.log"
        started.append(spawn_ingest(pg_url, mosquitto.url, ingest_log))
        wait_until(lambda: ingest_is_subscribed(ingest_log), 60, what="the ingest to subscribe")
        site = write_site(
            tmp_path / "site.yaml",
            mqtt_url=mosquitto.url,
            metrics_port=free_port(),
            endpoints=sims.endpoints,
            profiles={"servo_press": "servo_press_cabinet"},
            profile_paths=[PROFILES],
        )
        started.append(spawn_gateway(site, tmp_path / "gateway.log"))
        yield {"sims": sims, "logs": tmp_path}
    finally:
        for proc in reversed(started):
            stop(proc)
        sims.stop()


def _stored_fan(pg_url: str) -> float | None:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT cv.value FROM current_values cv JOIN signals g ON g.id = cv.signal_id "
            "JOIN devices d ON d.key = cv.device_key WHERE d.device_id = %s AND g.name = %s",
            (DEVICE, FAN),
        ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def _register_30(endpoint: dict[str, Any]) -> int:
    """HR 30 as a third-party Modbus client reads it (0.01 r/s per the manual)."""
    from pymodbus.client import AsyncModbusTcpClient

    async def read() -> int:
        client = AsyncModbusTcpClient(endpoint["host"], port=endpoint["port"])
        await client.connect()
        try:
            reply = await client.read_holding_registers(
                30, count=1, device_id=endpoint["unit_id"] or 1
            )
            assert not reply.isError(), reply
            return int(reply.registers[0])
        finally:
            client.close()

    return asyncio.run(read())


def _converted_value_matches_the_register(pg_url: str, endpoint: dict[str, Any]) -> bool:
    """The stored rpm is the register's 0.01 r/s x 60 (within the profile's 0.5 rpm deadband
    and one step of the register while the value moves)."""
    before = _register_30(endpoint)
    stored = _stored_fan(pg_url)
    after = _register_30(endpoint)
    if stored is None or before != after or before == 0:
        return False
    return abs(stored - before * 0.6) <= 1.2


def _show_custom_rows(page: Any) -> None:
    """Scroll the signal table (its rows are redrawn on every live update, its box stays) to
    the custom signals, for the screenshot."""
    page.locator("#signal-table").locator("xpath=..").evaluate(
        "box => { const row = [...box.querySelectorAll('tbody tr')]"
        ".find((r) => r.textContent.includes('sim:')); if (row) box.scrollTop = row.offsetTop - 40; }"
    )


def _admin_token(pg_url: str) -> str:
    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            return (await create_token(conn, Role.ADMIN, name="custom-signal test")).secret

    return asyncio.run(make())


def test_a_custom_signal_reaches_the_device_page_in_both_languages(
    pipeline: dict[str, Any], pg_url: str, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    endpoint = pipeline["sims"].endpoint(DEVICE)
    try:
        wait_until(
            lambda: _converted_value_matches_the_register(pg_url, endpoint),
            60,
            0.5,
            what="the fan speed stored in rpm as the simulator serves it",
        )
    except AssertionError:
        raise AssertionError(log_tails(pipeline["logs"])) from None
    with psycopg.connect(pg_url) as conn:
        declared = conn.execute(
            "SELECT base, unit, kind, meaning, name_zh FROM signals WHERE name = %s", (FAN,)
        ).fetchone()
        # The declaration came first: no sample of the custom signals was refused.
        refused = conn.execute("SELECT reason, detail FROM dead_letters").fetchall()
    assert refused == []
    assert declared == (
        FAN,
        "rpm",
        "gauge",
        "Drive cabinet cooling fan speed",
        "驱动柜冷却风扇转速",
    )

    token = _admin_token(pg_url)
    with api_server(pg_url) as base, chromium_page() as page:
        page.goto(base + "/login")
        page.fill("#token", token)
        page.click("button[type=submit]")
        expect(page).to_have_url(base + "/")  # signed in: the overview
        page.goto(f"{base}/enterprises/{ENTERPRISE}/devices/{DEVICE}")
        row = page.locator("#signal-table tbody tr", has_text=FAN)
        expect(row).to_contain_text("驱动柜冷却风扇转速")
        expect(row).to_contain_text("厂商自定义点位")
        expect(row.locator("td.num")).to_contain_text("rpm")
        shown = float(row.locator("td.num").inner_text().split()[0].replace(",", ""))
        stored = _stored_fan(pg_url)
        assert stored is not None and abs(shown - stored) <= 1.2  # the page's value is stored
        assert 1000 < shown < 3000  # 25-43 r/s per the simulated fan, in rpm
        temperature = page.locator("#signal-table tbody tr", has_text="sim:motor_temperature")
        expect(temperature).to_contain_text("伺服电机绕组温度")
        expect(temperature.locator("td.num")).to_contain_text("degC")  # as canonical ones
        _show_custom_rows(page)
        page.screenshot(path=str(artifacts_dir / "custom-signal-device-zh.png"), full_page=True)

        page.click("#lang-switch")
        row = page.locator("#signal-table tbody tr", has_text=FAN)
        expect(row).to_contain_text("Drive cabinet cooling fan speed")
        expect(row).to_contain_text("vendor signal")
        expect(row.locator("td.num")).to_contain_text("rpm")
        expect(page.locator("#signal-table")).to_contain_text("Servo motor winding temperature")
        _show_custom_rows(page)
        page.screenshot(path=str(artifacts_dir / "custom-signal-device-en.png"), full_page=True)

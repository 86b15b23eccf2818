"""The monitoring UI in headless Chromium (Debian's package, never a downloaded browser).

The overview loads with live figures, a new sample in the database changes the tiles within 5 s
through the SSE stream, and the language switch turns the page to English. Screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "monitoring"))
from browser_support import CHROMIUM, CHROMIUM_ARGS, api_server, need_chromium, wait_for_figures
from monitoring_data import (
    add_increment,
    add_interval,
    device_key,
    issue_tokens,
    prepare_schema,
    seed_registry,
    set_current,
    set_state,
)


def _seed_today(url: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        for ent, dev, state in [("ent-a", "lathe-1", "running"), ("ent-b", "press-1", "idle"),
                                ("ent-c", "hobber-1", "running")]:  # fmt: skip
            key = device_key(url, ent, dev)
            add_interval(conn, key, state, now - timedelta(hours=2), None)
            set_state(conn, key, state, now - timedelta(hours=2), now)
            set_current(conn, key, "machine_state", now, None, state)
            set_current(conn, key, "spindle_speed", now, 1450.0)
            add_increment(conn, key, "part_count", now - timedelta(minutes=30), 120)
            add_increment(conn, key, "active_energy", now - timedelta(minutes=30), 40.5)
        # An hour of spindle speed for the device page's chart.
        conn.execute(
            """INSERT INTO telemetry (ts, value, device_key, signal_id, quality)
               SELECT %(now)s - m * interval '1 minute', 1400 + 60 * sin(m / 6.0), %(key)s,
                      (SELECT id FROM signals WHERE name = 'spindle_speed'), 0
               FROM generate_series(1, 60) AS m""",
            {"now": now, "key": device_key(url, "ent-a", "lathe-1")},
        )


@pytest.fixture()
def server(pg_url: str) -> Iterator[tuple[str, dict[str, str], str]]:
    need_chromium()
    prepare_schema(pg_url)
    seed_registry(pg_url)
    _seed_today(pg_url)
    tokens = issue_tokens(pg_url)
    with api_server(pg_url) as base:
        yield base, tokens, pg_url


def _tile(page: Any, key: str) -> str:
    return str(page.locator(f'.tile[data-kpi="{key}"] .num').inner_text())


def test_overview_loads_updates_live_and_switches_language(
    server: tuple[str, dict[str, str], str], artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, tokens, url = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Reduced motion: charts draw at once, so screenshots show them finished.
            page = browser.new_page(
                viewport={"width": 1600, "height": 1000},
                reduced_motion="reduce",
                timezone_id="Asia/Shanghai",
            )
            page.goto(base + "/")
            expect(page).to_have_url(base + "/login")
            page.fill("#token", tokens["bureau"])
            page.click("button[type=submit]")
            expect(page).to_have_url(base + "/")
            # bench/monitoring.py times the overview to body[data-filled]: when it appears, the
            # numbers are there (checked once, at that moment, without waiting).
            page.wait_for_selector("body[data-filled]")
            assert page.locator('.tile[data-kpi="output"] .num').text_content() == "360"
            assert page.locator("#district-table tbody tr").count() == 10
            assert page.locator("#trend-chart canvas, #trend-chart svg").count() >= 1
            expect(page.locator('.tile[data-kpi="registered"] .num')).to_have_text("5")
            expect(page.locator('.tile[data-kpi="online_rate"] .num')).to_have_text("60.0%")
            expect(page.locator('.tile[data-kpi="output"] .num')).to_have_text("360")
            expect(page.locator("#district-table tbody tr")).to_have_count(10)
            expect(page.locator("#live")).to_be_visible()
            page.screenshot(path=str(artifacts_dir / "monitoring-overview-zh.png"), full_page=True)

            # A device that never reported comes online: the tile changes through SSE within 5 s.
            now = datetime.now(UTC)
            with psycopg.connect(url, autocommit=True) as conn:
                key = device_key(url, "ent-a", "grinder-2")
                set_state(conn, key, "running", now, now)
                add_interval(conn, key, "running", now, None)
                set_current(conn, key, "machine_state", now, None, "running")
            started = time.monotonic()
            expect(page.locator('.tile[data-kpi="online_rate"] .num')).to_have_text(
                "80.0%", timeout=5000
            )
            assert time.monotonic() - started < 5.0
            expect(page.locator('.tile[data-kpi="running_rate"] .num')).to_have_text("75.0%")

            page.click("#lang-switch")
            expect(page.locator(".brand")).to_have_text("shulian · Industry Operation Monitoring")
            expect(page.locator('.tile[data-kpi="online_rate"] .label')).to_have_text("Online rate")
            expect(page.locator('.tile[data-kpi="online_rate"] .num')).to_have_text("80.0%")
            page.screenshot(path=str(artifacts_dir / "monitoring-overview-en.png"), full_page=True)

            page.set_viewport_size({"width": 1366, "height": 768})
            page.goto(base + "/enterprises/ent-a")
            expect(page.locator('.tile[data-kpi="registered"] .num')).to_have_text("3")
            # The stream starts after the trend is drawn: its first update means a full page.
            expect(page.locator("body")).to_have_attribute("data-updates", re.compile(r"^\d+$"))
            page.screenshot(
                path=str(artifacts_dir / "monitoring-enterprise-laptop.png"), full_page=True
            )
        finally:
            browser.close()


def test_enterprise_opens_its_device_page_from_the_device_list(
    server: tuple[str, dict[str, str], str], artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, tokens, _ = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(
                viewport={"width": 1366, "height": 768},
                reduced_motion="reduce",
                timezone_id="Asia/Shanghai",
            )
            page.goto(base + "/login")
            page.fill("#token", tokens["ent-a"])
            page.click("button[type=submit]")
            expect(page).to_have_url(base + "/enterprises/ent-a")
            expect(page.locator("#device-table tbody tr")).to_have_count(3)
            expect(page.locator("#device-table")).to_contain_text("数控车床")  # cnc_lathe
            page.click("#device-table a:text('LATHE-1')")
            expect(page).to_have_url(base + "/enterprises/ent-a/devices/lathe-1")
            expect(page.locator("#device-state")).to_have_text("运行")
            expect(page.locator("#signal-table")).to_contain_text("主轴转速")  # spindle_speed
            expect(page.locator("#signal-table")).not_to_contain_text("spindle_speed")
            expect(page.locator("#signal-table tbody tr").first).to_contain_text("运行")
            expect(page.locator('.tile[data-kpi="output"] .num')).to_have_text("120")
            expect(page.locator("#series-signal")).to_have_value("spindle_speed")
            expect(page.locator("body")).to_have_attribute("data-updates", re.compile(r"^\d+$"))
            page.wait_for_function(
                "echarts.getInstanceByDom(document.getElementById('series-chart'))"
                ".getOption().series[0].data.length === 60"
            )
            page.screenshot(path=str(artifacts_dir / "monitoring-device-zh.png"), full_page=True)

            page.click("#lang-switch")
            expect(page.locator("#device-state")).to_have_text("Running")
            expect(page.locator("#signal-table")).to_contain_text("Main (or wheel) spindle speed")
            expect(page.locator(".meta")).to_contain_text("CNC lathe")
            page.screenshot(path=str(artifacts_dir / "monitoring-device-en.png"), full_page=True)
        finally:
            browser.close()


def test_chromium_binary_is_debians() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("needs /usr/bin/chromium")
    assert shutil.which("chromium") == CHROMIUM


def test_provider_lands_on_its_page_and_sign_out_then_back_shows_no_data(
    server: tuple[str, dict[str, str], str], artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, tokens, _ = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(
                viewport={"width": 1366, "height": 768},
                reduced_motion="reduce",
                timezone_id="Asia/Shanghai",
            )
            page.goto(base + "/login")
            page.fill("#token", tokens["provider"])
            page.click("button[type=submit]")
            expect(page).to_have_url(base + "/provider")
            expect(page.locator(".page-title")).to_contain_text("大连数联科技")
            card = page.locator('.served-enterprise[data-enterprise="ent-a"]')
            expect(card).to_contain_text("大连甲轴承有限公司")
            expect(card.locator(".device-status-table tbody tr")).to_have_count(3)
            expect(card.locator(".gateway-table")).to_contain_text("gw-ent-a")
            expect(card.locator(".device-status-table")).to_contain_text("运行")  # lathe-1 runs
            expect(page.locator("#served-count")).to_have_text("1")
            expect(page.locator("body")).to_have_attribute("data-updates", re.compile(r"^\d+$"))
            page.screenshot(path=str(artifacts_dir / "monitoring-provider-zh.png"), full_page=True)

            page.click("#lang-switch")
            expect(page.locator(".page-title .kind")).to_have_text("Service provider")
            expect(card.locator(".device-status-table")).to_contain_text("Running")
            page.screenshot(path=str(artifacts_dir / "monitoring-provider-en.png"), full_page=True)

            page.click("#signout")
            expect(page).to_have_url(base + "/login")
            page.go_back()
            # The page is asked for again (no-store, no back-forward cache), and the ended
            # session sends the browser to the sign-in page without any data.
            expect(page).to_have_url(base + "/login")
            expect(page.locator(".served-enterprise")).to_have_count(0)
            assert "大连甲轴承有限公司" not in page.content()
            assert page.request.get(base + "/api/providers/sp-1").status == 401
        finally:
            browser.close()


def test_open_pages_lose_device_data_within_5_s_of_the_grant_being_withdrawn(
    server: tuple[str, dict[str, str], str],
) -> None:
    import httpx
    from playwright.sync_api import expect, sync_playwright

    base, tokens, _ = server
    owner = {"Authorization": f"Bearer {tokens['ent-a']}"}
    grant = base + "/api/enterprises/ent-a/grants/bureau"
    assert httpx.put(grant, headers=owner).status_code == 200
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(reduced_motion="reduce", timezone_id="Asia/Shanghai")
            page = context.new_page()
            page.goto(base + "/login")
            page.fill("#token", tokens["bureau"])
            page.click("button[type=submit]")
            expect(page).to_have_url(base + "/")
            device_page = context.new_page()
            device_page.goto(base + "/enterprises/ent-a/devices/lathe-1")
            page.goto(base + "/enterprises/ent-a")
            expect(page.locator("#device-table tbody tr")).to_have_count(3)
            for watched in (page, device_page):
                expect(watched.locator("body")).to_have_attribute(
                    "data-updates", re.compile(r"^\d+$")
                )

            assert httpx.delete(grant, headers=owner).status_code == 200
            # The device page's stream closes and the page reloads to the 403 page; the
            # enterprise page keeps its summary and drops the device list.
            expect(device_page.locator(".error-page")).to_be_visible(timeout=5000)
            expect(device_page.locator(".error-page h1")).to_contain_text("403")
            expect(page.locator("#device-table")).to_have_count(0, timeout=5000)
            expect(page.locator('.tile[data-kpi="registered"] .num')).to_have_text("3")
        finally:
            browser.close()


def test_each_language_shows_its_own_names_kinds_states_and_error_messages(
    server: tuple[str, dict[str, str], str], artifacts_dir: Path
) -> None:
    """English pages show English enterprise names and machine-kind labels, never the Chinese
    name or a raw kind id; an energy meter that is counted online has an online badge; the
    no-permission page speaks the page's language, not the server's English message."""
    from playwright.sync_api import expect, sync_playwright

    base, tokens, url = server
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE enterprises SET name_en = 'Dalian Jia Bearing Co.' WHERE id = 'ent-a'")
        conn.execute(
            """INSERT INTO devices (enterprise_id, device_id, gateway_id, name, profile,
                   machine_kind, line) VALUES ('ent-a', 'meter-1', 'gw-ent-a', 'METER-1',
                   'energy_meter', 'energy_meter', 'L1')"""
        )
        set_current(conn, device_key(url, "ent-a", "meter-1"), "active_power", now, 3.2)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1366, "height": 900},
                reduced_motion="reduce",
                timezone_id="Asia/Shanghai",
            )
            context.add_cookies([{"name": "shulian_lang", "value": "en", "url": base}])
            page = context.new_page()
            page.goto(base + "/login")
            page.fill("#token", tokens["ent-a"])
            page.click("button[type=submit]")
            expect(page).to_have_url(base + "/enterprises/ent-a")
            expect(page.locator("#scope-name")).to_have_text("Dalian Jia Bearing Co.")
            meter = page.locator("#device-table tbody tr", has_text="METER-1")
            expect(meter).to_contain_text("Energy meter")
            expect(meter.locator(".badge")).to_have_text("Online")  # it is counted online
            expect(page.locator('.tile[data-kpi="online_rate"] .sub')).to_have_text(
                re.compile(r"online 2", re.IGNORECASE)  # lathe-1 and the meter
            )
            table = page.locator("#device-table").inner_text()
            assert "energy_meter" not in table and "cnc_lathe" not in table, table
            page.goto(base + "/enterprises/ent-a/devices/lathe-1")
            expect(page.locator(".meta")).to_contain_text("Dalian Jia Bearing Co.")
            page.screenshot(path=str(artifacts_dir / "monitoring-names-en.png"), full_page=True)
            assert "大连甲" not in page.locator("main").inner_text()

            # The bureau on the segment page sees the English name too.
            page.goto(base + "/login")
            page.fill("#token", tokens["bureau"])
            page.click("button[type=submit]")
            expect(page).to_have_url(base + "/")
            page.goto(base + "/segments/345")
            expect(page.locator("#enterprise-table")).to_contain_text("Dalian Jia Bearing Co.")
            assert "大连甲" not in page.locator("#enterprise-table").inner_text()

            # No grant: the bureau's no-permission page in Chinese says why, in Chinese.
            context.add_cookies([{"name": "shulian_lang", "value": "zh-CN", "url": base}])
            response = page.goto(base + "/enterprises/ent-a/devices/lathe-1")
            assert response is not None and response.status == 403
            message = page.locator(".error-page p").first.inner_text()
            assert "尚未授权主管部门" in message, message
            assert not re.search(r"[A-Za-z]{3,} [A-Za-z]{3,}", message), message
            page.screenshot(path=str(artifacts_dir / "monitoring-forbidden-zh.png"), full_page=True)
            # ... and in English on the English page.
            context.add_cookies([{"name": "shulian_lang", "value": "en", "url": base}])
            page.goto(base + "/enterprises/ent-a/devices/lathe-1")
            expect(page.locator(".error-page p").first).to_contain_text("has not granted")
        finally:
            browser.close()


NAMES_EN = {"ent-a": "Dalian Jia Bearing Co.", "ent-b": "Dalian Yi Auto Parts Co.",
            "ent-c": "Dalian Bing Gear Co."}  # fmt: skip
PAGES = {  # who signs in -> the pages they visit (the bureau's device page: no grant, 403)
    "bureau": ["/", "/segments/345", "/enterprises/ent-a", "/enterprises/ent-a/evidence",
               "/enterprises/ent-a/devices/lathe-1", "/evidence"],
    "ent-a": ["/enterprises/ent-a", "/enterprises/ent-a/devices/lathe-1",
              "/enterprises/ent-a/devices/grinder-1", "/enterprises/ent-a/evidence"],
}  # fmt: skip


# Which words a page shows does not depend on the storage path (the tests above check the figures
# on both paths), so the twenty pages in two languages are visited once: on plain PostgreSQL, the
# path every machine has, so the check also runs where TimescaleDB is not installed.
@pytest.mark.only_storage_path("postgresql")
def test_every_page_speaks_only_its_own_language(
    server: tuple[str, dict[str, str], str], artifacts_dir: Path
) -> None:
    """Per language, the visible text of <main> on the overview, a segment, an enterprise, its
    devices and its evidence, as the bureau and as the enterprise: no Chinese on English pages, no
    English UI or server words on Chinese ones, no raw machine kind, signal or state id on either
    (rules: tests/browser/language_check.py)."""
    from language_check import foreign_text
    from playwright.sync_api import sync_playwright

    base, tokens, url = server
    with psycopg.connect(url, autocommit=True) as conn:
        for ent, name_en in NAMES_EN.items():
            conn.execute("UPDATE enterprises SET name_en = %s WHERE id = %s", (name_en, ent))
    findings: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for lang in ("zh-CN", "en"):
                for who, paths in PAGES.items():
                    context = browser.new_context(
                        viewport={"width": 1366, "height": 900}, timezone_id="Asia/Shanghai"
                    )
                    context.add_cookies([{"name": "shulian_lang", "value": lang, "url": base}])
                    page = context.new_page()
                    page.goto(base + "/login")
                    page.fill("#token", tokens[who])
                    page.click("button[type=submit]")
                    page.wait_for_url(lambda u: "/login" not in u)
                    for path in paths:
                        page.goto(base + path)
                        wait_for_figures(page)
                        text = page.locator("main").inner_text()
                        assert text.strip(), f"{lang} {who} {path}: empty <main>"
                        findings += [f"{lang} {who} {path}: {f}" for f in foreign_text(text, lang)]
                        name = (
                            f"lang-{lang}-{who}-{path.strip('/').replace('/', '-') or 'overview'}"
                        )
                        page.screenshot(path=str(artifacts_dir / f"{name}.png"), full_page=True)
                    context.close()
        finally:
            browser.close()
    assert not findings, "\n".join(findings)

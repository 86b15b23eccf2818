"""A third-party Sparkplug B edge node on the monitoring pages, online and offline, zh-CN and English.

The edge node is pysparkplug's payload classes over a plain paho client (sparkplug_support: nothing
of ours encodes); it sends NBIRTH, DBIRTH and DDATA by alias through a real Mosquitto to the real
ingest (in process, with the Sparkplug mapping) on PostgreSQL (each storage path). The
enterprise, signed in with its own token in Debian's chromium, sees the mapped device running with
its value on the device page and the enterprise page. DDEATH and NDEATH then turn the open page
offline without a reload: the pages follow ``/api/live``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from browser_support import api_server, chromium_page, need_chromium
from support import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "ingest"))
from sparkplug_support import EdgeNode, sparkplug_ingest, write_mapping

from monitoring.auth import Role, create_token
from shulian.devservices import Mosquitto

pytestmark = [pytest.mark.slow, pytest.mark.needs_pg, pytest.mark.needs_broker]

ENTERPRISE, DEVICE = "ent-001", "press-01"  # what sparkplug_support's mapping names
DEVICE_PAGE = f"/enterprises/{ENTERPRISE}/devices/{DEVICE}"


def _enterprise_token(pg_url: str) -> str:
    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            made = await create_token(conn, Role.ENTERPRISE, enterprise=ENTERPRISE)
            return made.secret

    return asyncio.run(make())


def _stored_state(pg_url: str) -> str | None:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT cv.value_text FROM current_values cv JOIN signals g ON g.id = cv.signal_id "
            "JOIN devices d ON d.key = cv.device_key "
            "WHERE d.enterprise_id = %s AND d.device_id = %s AND g.name = 'machine_state'",
            (ENTERPRISE, DEVICE),
        ).fetchone()
    return None if row is None else row[0]


def _sign_in(page: Any, base: str, token: str) -> None:
    from playwright.sync_api import expect

    page.goto(base + "/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page).not_to_have_url(base + "/login")


def _live_updates(page: Any) -> int:
    return int(page.evaluate("document.body.dataset.updates || '0'"))


def _expect_running_with_force(page: Any, state: str, force_label: str) -> None:
    """The device page: the badge in ``state``'s words, and press force 2.5 kN (2500 N sent,
    scaled by the mapping's 0.001) in the signal table under its name in the page's language."""
    from playwright.sync_api import expect

    expect(page.locator("#device-state")).to_have_class("badge state-running")
    expect(page.locator("#device-state")).to_have_text(state)
    row = page.locator("#signal-table tbody tr", has_text=force_label)
    expect(row.locator("td.num")).to_have_text("2.50 kN")


def test_a_sparkplug_edge_node_shows_online_then_offline_live_in_both_languages(
    pg_url: str, mosquitto: Mosquitto, tmp_path: Path, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    need_chromium()
    service = sparkplug_ingest(pg_url, mosquitto.url, write_mapping(tmp_path))
    node = EdgeNode(mosquitto.url).connect()
    try:
        node.birth(strokes=10)
        node.data(
            "plc-1", {"Press/Force": 2500.0, "Press/Strokes": 11, "State": "running"}
        ).wait_for_publish(10)
        wait_until(lambda: _stored_state(pg_url) == "running", what="DDATA stored")
        token = _enterprise_token(pg_url)
        with api_server(pg_url) as base, chromium_page() as page:
            _sign_in(page, base, token)
            # zh-CN (the default): the enterprise page lists the device running...
            page.goto(f"{base}/enterprises/{ENTERPRISE}")
            row = page.locator("#device-table tbody tr", has_text=DEVICE)
            expect(row.locator(".badge")).to_have_text("运行")
            page.screenshot(path=str(artifacts_dir / "sparkplug-enterprise-zh.png"), full_page=True)
            # ... and its page shows the state and the scaled value.
            page.goto(base + DEVICE_PAGE)
            _expect_running_with_force(page, "运行", "冲压力")
            page.screenshot(path=str(artifacts_dir / "sparkplug-online-zh.png"), full_page=True)

            page.click("#lang-switch")  # sets the cookie and reloads
            _expect_running_with_force(page, "Running", "Peak press force of the last stroke")
            page.screenshot(path=str(artifacts_dir / "sparkplug-online-en.png"), full_page=True)

            # The device dies while its page is open: it turns offline live, no reload.
            wait_until(lambda: _live_updates(page) > 0, what="the page following /api/live")
            page.evaluate("window.__not_reloaded = true")
            node.device_death("plc-1")
            expect(page.locator("#device-state")).to_have_text("Offline", timeout=20_000)
            expect(page.locator("#device-state")).to_have_class("badge state-offline")
            assert page.evaluate("window.__not_reloaded === true")  # the same document
            page.screenshot(path=str(artifacts_dir / "sparkplug-offline-en.png"), full_page=True)

            page.click("#lang-switch")
            expect(page.locator("#device-state")).to_have_text("离线")

            # Born again (a rebirth), online again on the open zh-CN page; then the whole
            # edge node dies (NDEATH) and the page turns offline live again.
            node.birth(strokes=20)
            node.data(
                "plc-1", {"Press/Force": 2500.0, "Press/Strokes": 21, "State": "running"}
            ).wait_for_publish(10)
            wait_until(lambda: _live_updates(page) > 0, what="the page following /api/live")
            page.evaluate("window.__not_reloaded = true")
            _expect_running_with_force(page, "运行", "冲压力")
            node.node_death()
            expect(page.locator("#device-state")).to_have_text("离线", timeout=20_000)
            expect(page.locator("#device-state")).to_have_class("badge state-offline")
            assert page.evaluate("window.__not_reloaded === true")
            page.screenshot(path=str(artifacts_dir / "sparkplug-offline-zh.png"), full_page=True)

            # The enterprise page agrees, in both languages.
            page.goto(f"{base}/enterprises/{ENTERPRISE}")
            row = page.locator("#device-table tbody tr", has_text=DEVICE)
            expect(row.locator(".badge")).to_have_text("离线")
            page.click("#lang-switch")
            row = page.locator("#device-table tbody tr", has_text=DEVICE)
            expect(row.locator(".badge")).to_have_text("Offline")
    finally:
        node.close()
        service.stop()

"""The fleet console in Debian's chromium: a gateway goes offline and a device error appears live.

Real parts: Mosquitto, the ingest (in process) and PostgreSQL (each storage path), the monitoring
app in uvicorn. The gateway is a plain-paho client sending real wire messages (its birth, device
statuses, and a Last Will registered at connect). With the provider's console open, a device
status with an error arrives and its text shows in the device's row; then the gateway's
connection is cut without a DISCONNECT, the broker publishes its Will, and the console shows the
gateway offline, first in the list. Neither needs a reload (the page keeps a marker set before).
Once in zh-CN, once in English.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import api_server, chromium_page, need_chromium

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "ingest"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "monitoring"))
from ingest_support import FakeGateway, ingest_settings, now_ms
from monitoring_data import issue_tokens, seed_registry

from ingest.service import IngestService
from monitoring.db.migrate import ALL_CHAINS
from shulian.devservices import Mosquitto
from wire import topics
from wire.codec import encode
from wire.payloads import DeviceStatus, GatewayStatus

pytestmark = [pytest.mark.needs_pg, pytest.mark.needs_broker]

I18N = Path(__file__).resolve().parents[2] / "monitoring" / "web" / "i18n"
DEVICES = ["grinder-1", "grinder-2", "lathe-1"]
ERROR = "no reply from 192.168.10.21:502 (unit 1) within 1.0 s"


@pytest.fixture()
def ingest(pg_url: str, mosquitto: Mosquitto) -> Iterator[IngestService]:
    need_chromium()
    service = IngestService(ingest_settings(pg_url, mosquitto.url), chains=ALL_CHAINS)
    service.start(wait_for_db_s=10)
    assert service.consumer is not None and service.consumer.subscribed.wait(10)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture()
def gateway(mosquitto: Mosquitto) -> Iterator[FakeGateway]:
    gw = FakeGateway(mosquitto.url, "ent-a", "gw-ent-a", DEVICES)
    gw.will = GatewayStatus(gateway=gw.gateway, enterprise=gw.enterprise, online=False,
                            boot=gw.boot, ts_ms=now_ms(), devices=DEVICES, will=True)  # fmt: skip
    yield gw
    with contextlib.suppress(Exception):
        gw.close()


def _device_status(gw: FakeGateway, device: str, connection: str, error: str | None) -> None:
    status = DeviceStatus(gateway=gw.gateway, device=device, connection=connection,
                          ts_ms=now_ms(), last_good_ms=now_ms() - 5000, error=error)  # fmt: skip
    gw.publish(topics.device_status(gw.enterprise, gw.gateway, device), encode(status), retain=True)


def _cut_without_disconnect(gw: FakeGateway) -> None:
    """The link dies (no DISCONNECT packet): the broker publishes the gateway's Last Will."""
    gw.client.loop_stop()
    gw.client.socket().close()


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_gateway_offline_and_device_error_appear_live(
    lang: str, pg_url: str, ingest: IngestService, gateway: FakeGateway, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    t: dict[str, str] = json.loads((I18N / f"{lang}.json").read_text("utf-8"))
    seed_registry(pg_url)
    token = issue_tokens(pg_url)["provider"]
    gw = gateway.connect()
    gw.birth()
    for device in DEVICES:
        _device_status(gw, device, "connected", None)
    with api_server(pg_url) as base, chromium_page() as page:
        page.context.add_cookies([{"name": "shulian_lang", "value": lang, "url": base}])
        page.goto(base + "/login")
        page.fill("#token", token)
        page.click("button[type=submit]")
        expect(page).to_have_url(base + "/provider")
        page.click("#open-fleet")  # the provider's landing page leads to the console
        expect(page).to_have_url(base + "/fleet")
        expect(page.locator(".page-title .kind")).to_have_text(t["page.fleet"])
        card = page.locator('.fleet-gateway[data-gateway="ent-a/gw-ent-a"]')
        expect(card.locator(".gateway-state")).to_have_text(t["gateway.online"])
        grinder = card.locator('.fleet-device[data-device="grinder-1"]')
        expect(grinder).to_contain_text(t["connection.connected"])
        expect(page.locator(".fleet-gateway")).to_have_count(1)  # only sp-1's enterprise
        page.evaluate("window.__notReloaded = true")

        _device_status(gw, "grinder-1", "error", ERROR)
        expect(grinder.locator(".device-error")).to_have_text(ERROR, timeout=10_000)
        expect(grinder).to_contain_text(t["connection.error"])
        expect(card.locator(".problems")).to_contain_text(t["problem.device"])
        page.screenshot(path=str(artifacts_dir / f"fleet-device-error-{lang}.png"), full_page=True)

        _cut_without_disconnect(gw)
        expect(card.locator(".gateway-state")).to_have_text(t["gateway.offline"], timeout=15_000)
        expect(card.locator(".problems")).to_contain_text(t["problem.offline"])
        expect(card).to_have_class(_contains("stands-out"))
        assert page.evaluate("window.__notReloaded") is True
        assert int(page.locator("body").get_attribute("data-updates") or 0) >= 2
        page.screenshot(path=str(artifacts_dir / f"fleet-offline-{lang}.png"), full_page=True)

        # Filters: the offline gateway is under "offline", not under "online".
        page.select_option("#fleet-problem", "offline")
        expect(page.locator(".fleet-gateway")).to_have_count(1)
        page.select_option("#fleet-problem", "")
        page.select_option("#fleet-state", "online")
        expect(page.locator(".fleet-gateway")).to_have_count(0)
        expect(page.locator("#fleet-none")).to_be_visible()


def _contains(word: str) -> Any:
    import re

    return re.compile(rf"(^|\s){word}(\s|$)")

"""The evidence report in headless Chromium: the provider enters a baseline through the page's
form, the enterprise reads its report in Chinese and English, and the browser's PDF of it (the
print stylesheet, Playwright's ``page.pdf``) holds the enterprise's name and the before/after
table. The PDFs and screenshots go to test-artifacts/."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "monitoring"))
from browser_support import pdf_text, squeeze
from evidence_data import NOW, build_history
from monitoring_data import issue_tokens, prepare_schema, seed_registry

from monitoring.api import views
from monitoring.api.app import create_app
from monitoring.settings import MonitoringSettings
from shulian.devservices import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
NAME_EN = "Dalian Jia Bearing Co., Ltd."


@pytest.fixture()
def server(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, str]]]:
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    prepare_schema(pg_url)
    seed_registry(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE enterprises SET name_en = %s WHERE id = 'ent-a'", (NAME_EN,))
    build_history(pg_url)
    tokens = issue_tokens(pg_url)
    monkeypatch.setattr(views, "utc_now", lambda: NOW)  # the constructed months' "today"
    port = free_port()
    app = create_app(MonitoringSettings(db={"url": pg_url}))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", tokens
    srv.should_exit = True
    thread.join(timeout=10)


def test_evidence_report_renders_and_prints_in_both_languages(
    server: tuple[str, dict[str, str]], artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, tokens = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900},
                                    timezone_id="Asia/Shanghai")  # fmt: skip
            # The enterprise's provider enters the baseline: measured over the first 3 days.
            page.goto(base + "/login")
            page.fill("#token", tokens["provider"])
            page.click("button[type=submit]")
            expect(page).to_have_url(base + "/provider")
            page.goto(base + "/enterprises/ent-a/evidence")
            page.check("#baseline-form input[value=measured]")
            page.fill("#baseline-form input[name=measured_days]", "3")
            page.click("#baseline-form button[type=submit]")
            expect(page.locator("#baseline-method")).to_contain_text("3 (2025-04-28 – 2025-04-30)")
            expect(page.locator("#baseline-history tbody tr")).to_have_count(1)
            page.click("#signout")
            expect(page).to_have_url(base + "/login")

            page.fill("#token", tokens["ent-a"])
            page.click("button[type=submit]")
            expect(page).to_have_url(base + "/enterprises/ent-a")
            page.click("#evidence-link")
            expect(page).to_have_url(base + "/enterprises/ent-a/evidence")
            expect(page.locator("h1")).to_contain_text("数字化转型成效证明材料")
            expect(page.locator("#go-live")).to_have_text("2025-04-28")
            utilization = page.locator('#before-after-table tr[data-figure="utilization"]')
            expect(utilization).to_contain_text("设备利用率")
            expect(utilization.locator("td")).to_have_text(
                ["设备利用率", "12.5%", "37.5%", "25.0%", "+100.0%"]
            )
            expect(page.locator("#measures-table")).to_contain_text("设备联网率")
            expect(page.locator("#baseline-entry")).to_have_count(0)  # not the enterprise's to set
            page.screenshot(path=str(artifacts_dir / "evidence-zh.png"), full_page=True)
            pdf_zh = page.pdf(format="A4", landscape=True, print_background=False)
            (artifacts_dir / "evidence-zh.pdf").write_bytes(pdf_zh)
            text = squeeze(pdf_text(pdf_zh))
            for expected in ("大连甲轴承有限公司", "改造前后对比", "设备利用率", "12.5%", "25.0%",
                             "+100.0%", "日均产量", "300.0", "数据贯通", "数据来源与计算方法"):  # fmt: skip
                assert expected in text, expected
            assert "打印" not in text  # the print stylesheet hides the buttons

            page.click("#lang-switch")
            expect(page.locator("h1")).to_contain_text("Digital transformation evidence report")
            expect(page.locator("#scope-name")).to_have_text(NAME_EN)
            expect(utilization.locator("td").first).to_have_text("Utilization")
            page.screenshot(path=str(artifacts_dir / "evidence-en.png"), full_page=True)
            pdf_en = page.pdf(format="A4", landscape=True)
            (artifacts_dir / "evidence-en.pdf").write_bytes(pdf_en)
            text = squeeze(pdf_text(pdf_en))
            for expected in (NAME_EN, "Beforeandafter", "Utilization", "12.5%", "+100.0%",
                             "Outputperday", "Datasources"):  # fmt: skip
                assert squeeze(expected) in text, expected

            # The bureau's list: sorted by a heading, in the page's language (English now).
            page.click("#signout")
            page.fill("#token", tokens["bureau"])
            page.click("button[type=submit]")
            page.click("header nav a[href='/evidence']")
            expect(page.locator("#evidence-list tbody tr")).to_have_count(3)
            page.click("#evidence-list a[data-sort=output_per_day]")
            expect(page).to_have_url(re.compile(r"sort=output_per_day&order=desc"))
            first = page.locator("#evidence-list tbody tr").first
            expect(first).to_have_attribute("data-enterprise", "ent-a")
            expect(first).to_contain_text(NAME_EN)
            output = first.locator("td.num").nth(5 + 2)  # after the 5 integration measures
            expect(output).to_contain_text("+200.0%")
            expect(output).to_contain_text("100.0 → 300.0")
            page.screenshot(path=str(artifacts_dir / "evidence-list-en.png"), full_page=True)
        finally:
            browser.close()

"""What the browser tests share: Debian's chromium and the monitoring API on a free port."""

from __future__ import annotations

import io
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from monitoring.api.app import create_app
from monitoring.settings import MonitoringSettings
from shulian.devservices import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


def need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")


@contextmanager
def api_server(pg_url: str, live_poll_s: float = 0.5) -> Iterator[str]:
    """The monitoring API and web UI on ``pg_url`` in a thread; yields its base URL."""
    settings = MonitoringSettings(db={"url": pg_url}, live_poll_s=live_poll_s)
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@contextmanager
def chromium_page(width: int = 1366, height: int = 900) -> Iterator[Any]:
    """A page in headless chromium as the UI tests see it: reduced motion (charts draw at once,
    so screenshots show them finished) and China's time zone."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(
                viewport={"width": width, "height": height},
                reduced_motion="reduce",
                timezone_id="Asia/Shanghai",
            )
        finally:
            browser.close()


def wait_for_figures(page: Any, timeout_ms: float = 15_000) -> None:
    """Wait until a page that fetches its figures after load has drawn them.

    Such a page (the ones app.js's PAGE_SOURCES lists) draws what it fetched, then opens its live
    stream and counts each update in ``body[data-updates]``: the first one means every figure is
    on the page. Server-rendered pages (evidence, errors) are complete at load already. A fixed
    pause guessed at this and cost seconds per page.
    """
    page.wait_for_function(
        "() => !(document.body.dataset.page in PAGE_SOURCES) || !!document.body.dataset.updates",
        timeout=timeout_ms,
    )


def pdf_text(pdf: bytes) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(pdf)).pages)


def squeeze(text: str) -> str:
    """PDF text comes out with line breaks and spaces where the layout put them, and CJK fonts
    map some characters to their compatibility forms (⼤ KANGXI RADICAL BIG for 大): NFKC."""
    return "".join(unicodedata.normalize("NFKC", text).split())

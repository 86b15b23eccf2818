"""`shulian demo` as a newcomer runs it: stored telemetry within 60 s, every URL answering, and
30 days of history in the bureau's pages within 90 s."""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
from browser_support import CHROMIUM, chromium_page, pdf_text, squeeze, wait_for_figures

from shulian.demo import DEMO_DATA
from shulian.devservices import free_port, mosquitto_binary, timescaledb_bindir

pytestmark = [pytest.mark.slow]

URL_RE = re.compile(r"http://127\.0\.0\.1:\d+\S*")
COUNT_RE = re.compile(r"stored points: ([\d,]+)")


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return out


def _run_until_points(
    args: list[str], env: dict[str, str], timeout_s: float
) -> tuple[int, list[str], float]:
    """Start the demo; return the first positive stored-points count, the banner, and the time."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shulian", "demo", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    lines = _lines(proc)
    seen: list[str] = []
    try:
        while time.monotonic() - started < timeout_s:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, "demo exited early:\n" + "".join(seen[-40:])
                continue
            seen.append(line)
            match = COUNT_RE.search(line)
            if match and int(match.group(1).replace(",", "")) > 0:
                elapsed = time.monotonic() - started
                urls = [u for text in seen for u in URL_RE.findall(text)]
                for url in urls:  # every URL it prints answers (a gateway may still be starting)
                    wait_until(lambda u=url: _answers(u), timeout_s=20, what=f"{url} to answer")
                return int(match.group(1).replace(",", "")), seen, elapsed
        raise AssertionError(f"no stored points within {timeout_s} s:\n" + "".join(seen[-60:]))
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture()
def demo_workdir() -> Iterator[Path]:
    """The demo's folder, outside pytest's tmp_path: another pytest session starting meanwhile
    resets that root to 0700, and the embedded server's own user can then no longer reach it."""
    path = Path(tempfile.mkdtemp(prefix="shulian-demo-test-"))
    yield path / "demo"
    shutil.rmtree(path, ignore_errors=True)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MQTT_URL")}
    return env


def test_demo_with_amqtt_and_a_given_database(
    tmp_path: Path, pg_url: str, storage_path: str
) -> None:
    """No Mosquitto: the pure-Python broker (MQTT 3.1.1) carries the same pipeline."""
    env = {**_clean_env(), "DATABASE_URL": pg_url}
    args = ["--workdir", str(tmp_path / "demo"), "--port", str(free_port()), "--broker", "amqtt"]
    args.append("--no-history")  # the broker is under test here; the history is the next test's
    args.append("--one-process")  # the small-site form; the next test runs two processes
    count, banner, _ = _run_until_points(args, env, timeout_s=90)
    text = "".join(banner)
    assert "amqtt" in text and "given by DATABASE_URL" in text
    assert "(the same process)" in text
    named = {
        "timescaledb": "storage     TimescaleDB ",
        "postgresql": "storage     plain PostgreSQL",
    }
    assert named[storage_path] in text, text
    assert count > 0


DEADLINE_S = 90
TOKEN_RE = re.compile(r"token       bureau: (slk_\S+)")
GRANTED = ("ent-001", "ent-001-lathe-01")  # shulian/demo_data/grants.csv
NOT_GRANTED = ("ent-002", "ent-002-hobber-01")


def _get(base: str, path: str, token: str, lang: str = "") -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if lang:
        headers["Cookie"] = f"shulian_lang={lang}"
    request = urllib.request.Request(base + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return int(resp.status), resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode("utf-8")


def _history_seen(base: str, token: str) -> tuple[list[float], list[str]]:
    """The bureau's 30-day trend outputs and the enterprises' warning colours."""
    status, body = _get(base, "/api/trend?days=30", token)
    outputs = [day["output"] for day in json.loads(body)["days"]] if status == 200 else []
    status, body = _get(base, "/api/overview", token)
    colours = [w["colour"] for w in json.loads(body)["warnings"]] if status == 200 else []
    return outputs, colours


def _is_filled(outputs: list[float], colours: list[str]) -> bool:
    """30 days with output, every enterprise judged against its baseline (none grey), and at
    least three colours among them."""
    days_filled = len(outputs) == 30 and all(o > 0 for o in outputs)
    return days_filled and len(colours) == 5 and "grey" not in colours and len(set(colours)) >= 3


@pytest.mark.skipif(mosquitto_binary() is None, reason="needs a mosquitto binary")
def test_demo_on_defaults_starts_with_30_days_of_history(
    demo_workdir: Path, artifacts_dir: Path
) -> None:
    """Nothing given: embedded PostgreSQL and a private Mosquitto, as on a fresh clone.

    Stored points within 60 s and every printed URL answering; within 90 s 30 filled days in the
    bureau's trend and at least three warning colours, all from the simulators' history sent
    through gateway, broker and ingest; one enterprise's device page open to the bureau, another's
    saying why not in both languages."""
    port = free_port()
    args = ["--workdir", str(demo_workdir), "--port", str(port), "--broker", "mosquitto"]
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shulian", "demo", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_clean_env(),
    )  # fmt: skip
    lines = _lines(proc)
    seen: list[str] = []
    base = f"http://127.0.0.1:{port}"
    try:
        token = ""
        seen_history: tuple[list[float], list[str]] = ([], [])
        first_points = None
        while time.monotonic() - started < DEADLINE_S and not _is_filled(*seen_history):
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                assert proc.poll() is None, "demo exited early:\n" + "".join(seen[-40:])
            match = TOKEN_RE.search(seen[-1]) if seen else None
            token = match.group(1) if match else token
            count = COUNT_RE.search(seen[-1]) if seen else None
            if first_points is None and count and int(count.group(1).replace(",", "")) > 0:
                first_points = time.monotonic() - started
            if token:
                seen_history = _history_seen(base, token)
        elapsed = time.monotonic() - started
        logs = demo_workdir / "logs"
        outputs, colours = seen_history
        assert _is_filled(outputs, colours), (
            f"not 30 filled days and three warning colours within {DEADLINE_S} s: outputs "
            f"{outputs}, colours {colours}; the demo printed:\n{''.join(seen[-30:])}"
            + "".join(f"\n{p.name}: {p.read_text(errors='replace')[-800:]}" for p in
                      sorted(logs.glob("*.log")))
        )  # fmt: skip
        assert first_points is not None and first_points < 60
        text = "".join(seen)
        assert "embedded PostgreSQL" in text and "Mosquitto" in text
        # Two processes by default: the ingest's endpoint is apart from the dashboard's port
        assert (logs / "monitoring.log").exists() and "(the same process)" not in text
        # TimescaleDB whenever it is installed in the wheel's PostgreSQL (scripts/timescaledb
        # install), else plain PostgreSQL with the reason and the fix
        if timescaledb_bindir() is not None:
            assert "embedded PostgreSQL with TimescaleDB" in text
            assert re.search(r"storage     TimescaleDB 2\.\d+\.\d+ ", text), text
        else:
            assert "storage     plain PostgreSQL, TimescaleDB not used: TimescaleDB is not " in text
            assert "scripts/timescaledb install" in text
        for url in {u for line in seen for u in URL_RE.findall(line)}:  # every URL it prints
            wait_until(lambda u=url: _answers(u), timeout_s=20, what=f"{url} to answer")
        # The history went through the gateways: each backfill published historical batches
        backfilled = [(logs / f"backfill-ent-00{n}.log").read_text() for n in range(1, 6)]
        assert all(re.search(r"backfilled \d+ devices: [\d,]+ readings", t) for t in backfilled)
        assert "history: backfilled; live gateways started" in "".join(seen)
        print(f"history shown after {elapsed:.0f} s: colours {colours}, outputs {outputs}")

        status, _ = _get(base, f"/api/enterprises/{GRANTED[0]}/devices/{GRANTED[1]}", token)
        assert status == 200
        path = f"/enterprises/{GRANTED[0]}/devices/{GRANTED[1]}"
        assert _get(base, path, token)[0] == 200
        status, body = _get(
            base, f"/api/enterprises/{NOT_GRANTED[0]}/devices/{NOT_GRANTED[1]}", token
        )
        assert status == 403, body
        assert json.loads(body)["hint"] == (
            "The enterprise has not granted the bureau access to its device data."
        )
        path = f"/enterprises/{NOT_GRANTED[0]}/devices/{NOT_GRANTED[1]}"
        status, page = _get(base, path, token, "zh-CN")
        assert status == 403 and f"企业 {NOT_GRANTED[0]} 尚未授权主管部门查看其设备数据" in page
        status, page = _get(base, path, token, "en")
        assert status == 403
        assert f"Enterprise {NOT_GRANTED[0]} has not granted the bureau access" in page
        if Path(CHROMIUM).exists():
            _check_evidence_report(base, token, started, artifacts_dir)
        else:
            print("evidence report not printed: needs Debian's chromium at /usr/bin/chromium")
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


DEMO_NAMES = {  # shulian/demo_data/enterprises.csv
    "zh-CN": "瓦房店精密轴承有限公司（演示）",
    "en": "Wafangdian Precision Bearing Co. (demo)",
}
TABLE_TITLE = {"zh-CN": "改造前后对比", "en": "Before and after"}
MONTH_RE = re.compile(r"^\d{4}-\d{2}$")


def _check_evidence_report(base: str, token: str, started: float, out: Path) -> None:
    """The bureau's browser opens ent-001's evidence page in both languages within the deadline
    and prints it: the PDF names the enterprise and holds the before/after table with the
    diagnosis' baseline (demo_data/baselines.csv) and at least one month after it."""
    with chromium_page() as page:
        page.goto(base + "/login")
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url)
        for lang in ("zh-CN", "en"):
            page.context.add_cookies([{"name": "shulian_lang", "value": lang, "url": base}])
            page.goto(f"{base}/enterprises/{GRANTED[0]}/evidence")
            headings = page.locator("#before-after-table thead th").all_inner_texts()
            months = [h.strip() for h in headings if MONTH_RE.match(h.strip())]
            assert months, f"{lang}: no month after the baseline in {headings}"
            row = page.locator('#before-after-table tr[data-figure="utilization"] td')
            values = row.all_inner_texts()  # figure, baseline, months..., change
            assert values[1].strip() == "30.0%", values  # the diagnosis' utilization
            assert all(v.strip() not in ("", "–") for v in values[2:-1]), values
            pdf = page.pdf(format="A4", landscape=True)
            (out / f"demo-evidence-{lang}.pdf").write_bytes(pdf)
            text = squeeze(pdf_text(pdf))
            for expected in (DEMO_NAMES[lang], TABLE_TITLE[lang], *months):
                assert squeeze(expected) in text, f"{lang} PDF lacks {expected!r}"
        elapsed = time.monotonic() - started
        print(f"evidence pages and PDFs after {elapsed:.0f} s, months {months}")
        assert elapsed < DEADLINE_S, f"evidence report printed only after {elapsed:.0f} s"
        _check_languages(page, base)


DEMO_PAGES = ["/", "/segments/345", f"/enterprises/{GRANTED[0]}",
              f"/enterprises/{GRANTED[0]}/devices/{GRANTED[1]}", f"/enterprises/{GRANTED[0]}/evidence",
              f"/enterprises/{NOT_GRANTED[0]}/devices/{NOT_GRANTED[1]}", "/evidence"]  # fmt: skip


def _check_languages(page: Any, base: str) -> None:
    """The demo's own pages, as the bureau, speak only the page's language (the rules of
    tests/browser/language_check.py). The diagnosis' title quoted as the baseline's source is the
    enterprise's document, shown as entered: it is left out."""
    from language_check import foreign_text

    with (DEMO_DATA / "baselines.csv").open(encoding="utf-8") as fh:
        sources = [row["source"] for row in csv.DictReader(fh)]
    findings: list[str] = []
    for lang in ("zh-CN", "en"):
        page.context.add_cookies([{"name": "shulian_lang", "value": lang, "url": base}])
        for path in DEMO_PAGES:
            page.goto(base + path)
            wait_for_figures(page)
            text = page.locator("main").inner_text()
            for source in sources:
                text = text.replace(source, "")
            findings += [f"{lang} {path}: {f}" for f in foreign_text(text, lang)]
    assert not findings, "\n".join(findings)

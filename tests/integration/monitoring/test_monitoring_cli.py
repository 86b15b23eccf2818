"""`shulian monitoring ...`: the registry's CSV import, settings show, and `run` as a real process
(pages and API served; the refresh jobs only where they are enabled)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from monitoring_data import issue_tokens
from support import wait_until
from typer.testing import CliRunner

from monitoring.cli import app
from shulian.devservices import free_port, wait_listening

REPO = Path(__file__).resolve().parents[3]
runner = CliRunner()


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_import_enterprises_and_devices(monitoring_db: str, tmp_path: Path) -> None:
    enterprises = tmp_path / "enterprises.csv"
    enterprises.write_text(
        "id,name,district,segment,specialized\n"
        "ent-1,大连一号轴承,210211,345,是\n"
        "ent-2,大连二号汽配,金州区,367,0\n",
        encoding="utf-8",
    )
    devices = tmp_path / "devices.csv"
    devices.write_text(
        "enterprise,device,machine_kind,line,rated_cycle_s\n"
        "ent-1,grinder-1,grinder,L1,20\n"
        "ent-2,press-1,press,L2,\n"
    )
    done = runner.invoke(
        app, ["registry", "import", "enterprises", str(enterprises), "--db", monitoring_db]
    )
    assert done.exit_code == 0, done.output
    assert "2 created" in done.output
    done = runner.invoke(
        app, ["registry", "import", "devices", str(devices), "--db", monitoring_db]
    )
    assert done.exit_code == 0, done.output
    assert _rows(
        monitoring_db,
        "SELECT id, district_id, segment_code, specialized FROM enterprises "
        "WHERE id IN ('ent-1', 'ent-2') ORDER BY id",
    ) == [("ent-1", "210211", "345", True), ("ent-2", "210213", "367", False)]
    assert _rows(
        monitoring_db,
        "SELECT device_id, rated_cycle_s FROM devices "
        "WHERE device_id IN ('grinder-1', 'press-1') AND enterprise_id IN ('ent-1', 'ent-2') "
        "ORDER BY device_id",
    ) == [("grinder-1", 20.0), ("press-1", None)]

    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,district,segment\nent-3,X,210211,999\n")
    refused = runner.invoke(
        app, ["registry", "import", "enterprises", str(bad), "--db", monitoring_db]
    )
    assert refused.exit_code == 1
    assert "bad.csv:2: segment" in refused.output

    # A mistyped credit code refuses its row alone, named; the good row is written.
    codes = tmp_path / "codes.csv"
    codes.write_text(
        "id,name,district,segment,credit_code\n"
        "ent-1,大连一号轴承,210211,345,91110000600037341L\n"
        "ent-2,大连二号汽配,金州区,367,91110000600037341M\n",
        encoding="utf-8",
    )
    refused = runner.invoke(
        app, ["registry", "import", "enterprises", str(codes), "--db", monitoring_db]
    )
    assert refused.exit_code == 1
    assert "codes.csv:3: credit_code: '91110000600037341M' has the check character 'M'" in (
        refused.output
    )
    assert "0 created and 1 updated" in refused.output  # ent-1 existed: it was updated
    assert _rows(
        monitoring_db,
        "SELECT id, credit_code FROM enterprises WHERE id IN ('ent-1', 'ent-2') ORDER BY id",
    ) == [("ent-1", "91110000600037341L"), ("ent-2", None)]


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SHULIAN_MONITORING_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_settings_show_masks_secrets_and_names_sources(tmp_path: Path) -> None:
    config = tmp_path / "monitoring.yaml"
    config.write_text("http:\n  port: 8181\nrefresh:\n  enabled: false\n")
    env = {
        "DATABASE_URL": "postgresql://u:topsecret@db/x",
        "SHULIAN_MONITORING_DB__READ_URL": "postgresql://ro:alsosecret@replica/x",
    }
    shown = runner.invoke(app, ["settings", "show", "--config", str(config)], env=env)
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["db"] == {
        "url": "postgresql://u:***@db/x",
        "read_url": "postgresql://ro:***@replica/x",
    }
    assert data["http"]["port"] == 8181 and data["refresh"]["enabled"] is False
    table = runner.invoke(
        app, ["settings", "show", "--config", str(config), "--sources"], env=env
    ).output
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()}
    assert rows["http.port"] == ["8181", str(config)]
    assert rows["db.url"] == ['"postgresql://u:***@db/x"', "env", "DATABASE_URL"]
    assert rows["db.read_url"][-2:] == ["env", "SHULIAN_MONITORING_DB__READ_URL"]
    assert rows["kpi.timezone"][-1] == "default"
    assert "secret" not in shown.output + table


@pytest.mark.usefixtures("clean_env")
def test_a_bad_setting_is_named_with_its_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "monitoring.yaml"
    config.write_text("http:\n  prot: 8181\nrefresh:\n  daily_s: 0\n")
    shown = runner.invoke(app, ["settings", "show", "--config", str(config)])
    assert shown.exit_code == 2
    assert f"{config}: http.prot: Extra inputs are not permitted" in shown.output
    assert f"{config}: refresh.daily_s: Input should be greater than or equal to 1" in (
        shown.output
    )


class Process:
    """`python -m shulian monitoring run ...` with its output collected."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shulian", "monitoring", "run", "--port", str(self.port),
             *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(
            target=lambda: self.lines.extend(self.proc.stdout or []), daemon=True
        ).start()
        wait_listening("127.0.0.1", self.port, 60, "shulian monitoring run")

    def get(self, path: str, token: str | None = None) -> tuple[int, str, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return (
                response.status,
                response.getheader("content-type") or "",
                response.read().decode(),
            )
        finally:
            conn.close()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(30) == 0, "".join(self.lines[-30:])
        return "".join(self.lines)


@pytest.fixture()
def run_monitoring() -> Iterator[type[Process]]:
    started: list[Process] = []

    class Started(Process):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            started.append(self)

    yield Started
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def test_run_serves_the_pages_and_the_api(
    monitoring_db: str, run_monitoring: type[Process]
) -> None:
    tokens = issue_tokens(monitoring_db)
    served = run_monitoring("--db", monitoring_db)
    status, kind, body = served.get("/login")
    assert (status, kind.split(";")[0]) == (200, "text/html") and "<form" in body
    status, kind, body = served.get("/api/overview", tokens["bureau"])
    assert status == 200 and kind == "application/json", body
    assert "summary" in json.loads(body)
    assert served.get("/api/overview")[0] == 401
    assert served.get("/metrics")[0] == 404, "the ingest's endpoint is not the monitoring's"
    output = served.stop()
    assert "refresh jobs running: kpi-daily, kpi-status, integration-daily" in output
    assert "monitoring stopped" in output and "Traceback" not in output, output[-3000:]


def _refreshed_days(url: str) -> int:
    return int(_rows(url, "SELECT count(*) FROM kpi_daily_state")[0][0])  # type: ignore[call-overload]


def test_an_instance_with_refresh_disabled_runs_no_refresh(
    monitoring_db: str, run_monitoring: type[Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Web-only instances (a read replica's) leave the refresh to the one that runs it: the
    disabled one serves pages but writes no KPI day in several of its refresh periods, while an
    enabled one on the same database writes today's and yesterday's at once."""
    tokens = issue_tokens(monitoring_db)
    monkeypatch.setenv("SHULIAN_MONITORING_REFRESH__DAILY_S", "1")
    web_only = run_monitoring("--db", monitoring_db, "--no-refresh")
    assert web_only.get("/api/overview", tokens["bureau"])[0] == 200
    time.sleep(5)  # five refresh periods: an instance running the jobs writes within the first
    assert _refreshed_days(monitoring_db) == 0
    refreshing = run_monitoring("--db", monitoring_db)
    wait_until(lambda: _refreshed_days(monitoring_db) >= 2, 30, what="the KPI refresh")
    assert "refresh jobs running" in refreshing.stop()
    assert "refresh jobs running" not in web_only.stop()

"""`shulian ingest migrate | registry import | settings show` against a real database."""

from __future__ import annotations

import json
from pathlib import Path

from ingest_support import rows
from typer.testing import CliRunner

from ingest.cli import app

runner = CliRunner()


def test_migrate_then_import_enterprises_and_devices(
    pg_url: str, storage_path: str, tmp_path: Path
):
    first = runner.invoke(app, ["migrate", "--db", pg_url])
    assert first.exit_code == 0, first.output
    assert f"storage path: {storage_path}" in first.output
    again = runner.invoke(app, ["migrate", "--db", pg_url])
    assert "0 applied" in again.output

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
        app, ["registry", "import", "enterprises", str(enterprises), "--db", pg_url]
    )
    assert done.exit_code == 0, done.output
    assert "2 created" in done.output
    done = runner.invoke(app, ["registry", "import", "devices", str(devices), "--db", pg_url])
    assert done.exit_code == 0, done.output
    assert rows(
        pg_url, "SELECT id, district_id, segment_code, specialized FROM enterprises ORDER BY id"
    ) == [("ent-1", "210211", "345", True), ("ent-2", "210213", "367", False)]
    assert rows(pg_url, "SELECT device_id, rated_cycle_s FROM devices ORDER BY device_id") == [
        ("grinder-1", 20.0),
        ("press-1", None),
    ]

    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,district,segment\nent-3,X,210211,999\n")
    refused = runner.invoke(app, ["registry", "import", "enterprises", str(bad), "--db", pg_url])
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
    refused = runner.invoke(app, ["registry", "import", "enterprises", str(codes), "--db", pg_url])
    assert refused.exit_code == 1
    assert "codes.csv:3: credit_code: '91110000600037341M' has the check character 'M'" in (
        refused.output
    )
    assert "0 created and 1 updated" in refused.output  # ent-1 existed: it was updated
    assert rows(pg_url, "SELECT id, credit_code FROM enterprises ORDER BY id") == [
        ("ent-1", "91110000600037341L"),
        ("ent-2", None),
    ]


def test_settings_show_masks_secrets():
    shown = runner.invoke(
        app, ["settings", "show"], env={"DATABASE_URL": "postgresql://u:topsecret@db/x"}
    )
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["db"]["url"] == "postgresql://u:***@db/x"
    assert "topsecret" not in shown.output


def test_settings_show_sources_names_where_each_setting_came_from(tmp_path):
    config = tmp_path / "ingest.yaml"
    config.write_text("writer:\n  lanes: 3\n")
    shown = runner.invoke(
        app,
        ["settings", "show", "--config", str(config), "--sources"],
        env={
            "DATABASE_URL": "postgresql://u:topsecret@db/x",
            "SHULIAN_INGEST_MQTT__CLIENT_ID": "ingest-7",
        },
    )
    assert shown.exit_code == 0, shown.output
    table = {line.split()[0]: line.split()[1:] for line in shown.output.splitlines()}
    assert table["writer.lanes"] == ["3", str(config)]
    assert table["mqtt.client_id"] == ['"ingest-7"', "env", "SHULIAN_INGEST_MQTT__CLIENT_ID"]
    assert table["db.url"] == ['"postgresql://u:***@db/x"', "env", "DATABASE_URL"]
    assert table["writer.max_delay_ms"][-1] == "default"
    assert "topsecret" not in shown.output

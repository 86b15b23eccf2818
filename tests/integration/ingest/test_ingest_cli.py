"""`shulian ingest migrate | settings show` against a real database (the registry's CSV import is
the monitoring's command: tests/integration/monitoring/test_monitoring_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

from ingest_support import rows
from typer.testing import CliRunner

from ingest.cli import app

runner = CliRunner()


def test_migrate_creates_then_finds_the_schema(pg_url: str, storage_path: str) -> None:
    first = runner.invoke(app, ["migrate", "--db", pg_url])
    assert first.exit_code == 0, first.output
    assert f"storage path: {storage_path}" in first.output
    again = runner.invoke(app, ["migrate", "--db", pg_url])
    assert "0 applied" in again.output
    assert rows(pg_url, "SELECT count(*) FROM enterprises") == [(0,)]


def test_the_monitoring_commands_are_not_the_ingests() -> None:
    """token, kpi, export and registry moved to `shulian monitoring`; the ingest names none."""
    shown = runner.invoke(app, ["--help"])
    for command in ("token", "kpi", "export", "registry"):
        assert f" {command} " not in shown.output, shown.output


def test_a_monitoring_section_in_the_file_is_left_to_the_monitoring(tmp_path: Path) -> None:
    config = tmp_path / "ingest.yaml"
    config.write_text("writer:\n  lanes: 3\nmonitoring:\n  http:\n    port: 8181\n")
    shown = runner.invoke(app, ["settings", "show", "--config", str(config)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["writer"]["lanes"] == 3 and "monitoring" not in shown.output


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

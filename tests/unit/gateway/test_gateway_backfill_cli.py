"""`shulian gateway backfill` refuses a broken history log, naming the file and line, before it
publishes anything."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gateway.cli import app


def test_a_broken_history_record_is_named_by_file_and_line(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "gateway: {id: gw-1, enterprise: ent-1, data_dir: " + str(tmp_path / "data") + "}\n"
        "mqtt: {url: 'mqtt://127.0.0.1:1'}\n"  # never reached: the log is read first
        "devices:\n"
        "  - {id: press-1, profile: servo_press, endpoint: 'tcp://127.0.0.1:1502'}\n",
        encoding="utf-8",
    )
    history = tmp_path / "history"
    history.mkdir()
    log = history / "press-1.jsonl"
    log.write_text(
        '{"ts_ms": 1764806400000, "values": {"machine_state": 3, "part_count": 10}}\n'
        '{"ts_ms": "soon", "values": {}}\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["backfill", "--config", str(site), "--history", str(history)])
    assert result.exit_code == 2, result.output
    assert f"{log}:2: not a history record" in result.output

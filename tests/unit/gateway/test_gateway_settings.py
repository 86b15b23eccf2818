"""Gateway settings: precedence CLI > env > site file > default, clear errors, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.errors import ConfigError
from gateway.settings import build_settings, describe


def test_precedence_cli_over_env_over_file_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHULIAN_GW_MQTT__URL", "mqtt://env-host:1883")
    monkeypatch.setenv("SHULIAN_GW_BUFFER__MAX_BYTES", "5000000")
    file = {
        "gateway": {"id": "gw-1", "enterprise": "ent-1"},
        "mqtt": {"url": "mqtt://file-host:1883", "keepalive_s": 45},
        "buffer": {"max_bytes": 9000000},
    }
    s = build_settings(file, {"buffer": {"max_bytes": 7000000}})
    assert s.mqtt.url == "mqtt://env-host:1883"  # env beats file
    assert s.mqtt.keepalive_s == 45  # file beats default
    assert s.buffer.max_bytes == 7000000  # cli beats env
    assert s.buffer.batch_max_samples == 500  # default
    assert s.client_id == "shulian-ent-1-gw-1"


def test_unknown_setting_in_the_site_file_names_file_and_line() -> None:
    lines = {("mqtt", "urll"): ("site.yaml", 7)}
    with pytest.raises(ConfigError) as info:
        build_settings({"mqtt": {"urll": "x"}}, file_name="site.yaml", file_lines=lines)
    assert "site.yaml:7: mqtt.urll: unknown setting" in str(info.value)


def test_bad_value_from_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHULIAN_GW_MQTT__URL", "http://nope")
    with pytest.raises(ConfigError, match="SHULIAN_GW_MQTT__URL"):
        build_settings({})


def test_bad_value_in_file_names_line() -> None:
    lines = {("buffer", "max_bytes"): ("site.yaml", 12)}
    with pytest.raises(ConfigError, match=r"site.yaml:12: buffer.max_bytes"):
        build_settings({"buffer": {"max_bytes": 5}}, file_name="site.yaml", file_lines=lines)


def test_identity_is_required_to_run() -> None:
    with pytest.raises(ConfigError, match="SHULIAN_GW_GATEWAY__ID"):
        build_settings({}).require_identity()


def test_password_file_is_read_and_describe_masks_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    s = build_settings({"mqtt": {"username": "u", "password_file": str(secret)}})
    assert s.mqtt.resolve_password() == "s3cret"
    s2 = build_settings({"mqtt": {"password": "hunter2"}})
    rows = {
        name: (value, source)
        for name, value, source in describe(s2, {"mqtt": {"password": "hunter2"}})
    }
    assert rows["mqtt.password"][0] == "**********"
    assert "hunter2" not in repr(s2)


def test_settings_show_prints_values_and_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "gateway.yaml"
    site.write_text(
        "gateway: {id: gw-9, enterprise: ent-9}\nmqtt: {password: topsecret}\ndevices: []\n"
    )
    monkeypatch.setenv("SHULIAN_GW_LOG__LEVEL", "debug")
    result = CliRunner().invoke(
        app, ["settings", "show", "--config", str(site), "--metrics-port", "0"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "topsecret" not in out
    assert any(
        line.split()[:2] == ["gateway.id", "gw-9"] and "file" in line for line in out.splitlines()
    )
    assert any(
        line.startswith("log.level") and "env SHULIAN_GW_LOG__LEVEL" in line
        for line in out.splitlines()
    )
    assert any(
        line.startswith("metrics.port") and line.rstrip().endswith("cli")
        for line in out.splitlines()
    )

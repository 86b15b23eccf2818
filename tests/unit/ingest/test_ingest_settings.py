"""Settings: precedence of sources, cross-section checks, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.errors import ConfigError
from ingest.settings import load_settings, masked_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SHULIAN_INGEST_") or name in ("DATABASE_URL", "MQTT_URL"):
            monkeypatch.delenv(name)


def test_defaults_are_consistent():
    settings = load_settings()
    assert settings.mqtt.protocol == "5"
    assert settings.mqtt.share_group == "ingest"
    assert settings.registry.auto_register_gateways is False
    assert settings.registry.auto_register_devices is True


def test_prefixed_env_beats_plain_env_beats_file_and_flags_beat_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    file = tmp_path / "ingest.yaml"
    file.write_text(
        "db:\n  url: postgresql://file/db\n  pool_max: 9\nmqtt:\n  url: mqtt://file:1883\n"
    )
    monkeypatch.setenv("DATABASE_URL", "postgresql://plain/db")
    monkeypatch.setenv("SHULIAN_INGEST_MQTT__URL", "mqtt://prefixed:1884")
    monkeypatch.setenv("MQTT_URL", "mqtt://plain:1885")
    settings = load_settings(file)
    assert settings.db.url.get_secret_value() == "postgresql://plain/db"
    assert settings.db.pool_max == 9  # only the file sets it, and the url override keeps it
    assert settings.mqtt.url.get_secret_value() == "mqtt://prefixed:1884"
    assert (settings.mqtt.host, settings.mqtt.port) == ("prefixed", 1884)
    flagged = load_settings(file, mqtt={"client_id": "w1"})
    assert flagged.mqtt.client_id == "w1"
    assert flagged.mqtt.url.get_secret_value() == "mqtt://prefixed:1884"


def test_replay_horizon_must_fit_inside_compression_retention_and_ledger():
    with pytest.raises(ConfigError) as caught:
        load_settings(limits={"max_age_s": 20 * 86_400})
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(
        "storage.compress_after_days (8.0) must exceed limits.max_age_s (20 days)"
    )
    assert problems[1].startswith("storage.ledger_retention_days (14.0) must exceed")


def test_shared_subscriptions_need_mqtt5_and_prod_needs_real_urls():
    with pytest.raises(ConfigError, match=r"mqtt\.share_group needs MQTT 5"):
        load_settings(mqtt={"protocol": "3.1.1"})
    assert load_settings(mqtt={"protocol": "3.1.1", "share_group": ""}).mqtt.protocol == "3.1.1"
    with pytest.raises(ConfigError, match=r"db\.url is the development default"):
        load_settings(environment="prod")


def test_bad_values_name_the_setting(tmp_path: Path):
    file = tmp_path / "bad.yaml"
    file.write_text("writer:\n  lanes: 0\n")
    with pytest.raises(ConfigError, match=r"writer\.lanes"):
        load_settings(file)
    file.write_text("writer: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(file)


def test_masked_settings_hide_passwords():
    settings = load_settings(
        db={"url": "postgresql://ingest:s3cret@db:5432/shulian"},
        mqtt={"url": "mqtt://gw:pw@broker:1883"},
    )
    shown = masked_settings(settings)
    assert shown["db"]["url"] == "postgresql://ingest:***@db:5432/shulian"
    assert shown["mqtt"]["url"] == "mqtt://gw:***@broker:1883"
    assert settings.mqtt.login() == ("gw", "pw")


def test_mqtt_tls_and_login_settings_resolve_and_refuse_contradictions(tmp_path: Path):
    secret = tmp_path / "mqtt-password"
    secret.write_text("from-file\nignored\n")
    settings = load_settings(
        mqtt={
            "url": "mqtts://broker.example",
            "username": "ingest@shulian",
            "password_file": secret,
        }
    )
    assert (settings.mqtt.port, settings.mqtt.is_tls) == (8883, True)
    assert settings.mqtt.address == "mqtts://broker.example:8883"
    assert settings.mqtt.login() == ("ingest@shulian", "from-file")
    assert masked_settings(load_settings(mqtt={"password": "pw"}))["mqtt"]["password"] != "pw"
    with pytest.raises(ConfigError) as caught:
        load_settings(
            mqtt={
                "url": "mqtt://u:pw@broker:1883",
                "password": "other",
                "ca_file": str(tmp_path / "ca.crt"),
                "cert_file": str(tmp_path / "client.crt"),
            }
        )
    assert caught.value.problems == [
        "mqtt.url holds a password and mqtt.password/password_file gives another: keep one of them",
        "mqtt.cert_file and mqtt.key_file go together (client certificate and its key)",
        "mqtt.ca_file is set but mqtt.url is plaintext mqtt://: use mqtts://host:8883 so the "
        "connection is encrypted and the broker verified",
    ]
    with pytest.raises(ConfigError, match=r"mqtt\.url: 'http://broker': use mqtt://"):
        load_settings(mqtt={"url": "http://broker"})

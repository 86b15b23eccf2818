"""The monitoring's settings when the ingest's process hosts it (shulian/hosting.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.settings import load_settings
from monitoring.errors import ConfigError
from shulian.hosting import monitoring_settings

URL = "postgresql://ingest@db.example/shulian"


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ingest.yaml"
    path.write_text(f"db: {{url: '{URL}'}}\n{text}")
    return path


def test_the_hosted_monitoring_takes_its_section_and_the_ingest_s_database(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, "monitoring:\n  http: {port: 8099}\n")
    settings = monitoring_settings(load_settings(config), config)
    assert settings.http.port == 8099
    assert settings.db.url.get_secret_value() == URL


def test_a_log_section_for_the_hosted_monitoring_is_refused_naming_it(tmp_path: Path) -> None:
    """One process logs one way: a monitoring.log section would be ignored without a word."""
    config = _config(tmp_path, "monitoring:\n  log: {level: DEBUG}\n")
    with pytest.raises(ConfigError) as refused:
        monitoring_settings(load_settings(config), config)
    assert f"{config}: monitoring.log: the monitoring hosted in the ingest's process" in str(
        refused.value
    )

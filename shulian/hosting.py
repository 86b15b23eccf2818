"""The ingest and the monitoring in one process, for small sites: ``shulian ingest run
--with-monitoring``.

The ingest never imports the monitoring (import-linter), so the composition lives here: this
module is the ``ingest`` noun of the ``shulian`` command (shulian/cli.py); it registers the
monitoring as an app the ingest's ``run`` can host. The monitoring's settings are the ``monitoring:``
section of the ingest's settings file plus the ``SHULIAN_MONITORING_*`` variables; its ``db.url``
is the ingest's unless the section or ``SHULIAN_MONITORING_DB__URL`` gives one. One port (the
monitoring's ``http.port``) then answers the pages, the API, ``/metrics`` and
``/api/ingest/health``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest import cli as ingest_cli
from ingest.settings import IngestSettings, read_settings_file
from monitoring.errors import ConfigError
from monitoring.settings import ENV_PREFIX, MonitoringSettings, load_settings

if TYPE_CHECKING:
    from ingest.db.migrate import Chain
    from ingest.service import IngestService

SECTION = "monitoring"


def monitoring_settings(ingest: IngestSettings, config_file: Path | None) -> MonitoringSettings:
    """The hosted monitoring's settings (see the module's docstring).

    Raises:
        ConfigError: naming ``monitoring.<key>`` and the file, or a disagreement with the ingest.
    """
    data = read_settings_file(config_file) if config_file else {}
    section = data.get(SECTION) or {}
    if not isinstance(section, dict):
        raise ConfigError([f"{config_file}: {SECTION}: must be a mapping of settings"])
    if "log" in section:
        # One process has one logging set-up: the ingest's. Accepting the section would let
        # its level or format be ignored without a word.
        raise ConfigError(
            [
                f"{config_file}: {SECTION}.log: the monitoring hosted in the ingest's process "
                "logs as the ingest does; set the top-level log section instead, or run "
                "`shulian monitoring run` as its own process to give it its own"
            ]
        )
    own_url = "url" in (section.get("db") or {}) or f"{ENV_PREFIX}DB__URL" in os.environ
    overrides: dict[str, Any] = {} if own_url else {"db": {"url": ingest.db.url}}
    settings = load_settings(config_file, file_data=section, where=f"{SECTION}.", **overrides)
    if settings.kpi.timezone != ingest.writer.delay_stats_timezone:
        raise ConfigError(
            [
                f"{SECTION}.kpi.timezone ({settings.kpi.timezone}) differs from "
                f"writer.delay_stats_timezone ({ingest.writer.delay_stats_timezone}): the "
                "monitoring would read the delay statistics by other calendar days; set both alike"
            ]
        )
    return settings


def host_monitoring(
    ingest: IngestSettings, config_file: Path | None
) -> Callable[[IngestService], None]:
    """What ``run_service`` serves with: the monitoring's app plus the ingest's routes."""
    settings = monitoring_settings(ingest, config_file)

    def serve(service: IngestService) -> None:
        from ingest.http import add_routes
        from monitoring.api.app import create_app
        from monitoring.server import serve as serve_app

        app = create_app(settings)
        add_routes(app, service)
        serve_app(app, settings.http.host, settings.http.port)

    return serve


ingest_cli.hosts[SECTION] = host_monitoring


def monitoring_chains() -> Sequence[Chain]:
    """The one process that stores and serves also brings the monitoring's tables up to date
    (imported only then: the ingest alone loads nothing of the monitoring's)."""
    from monitoring.db.migrate import ALL_CHAINS

    return ALL_CHAINS


ingest_cli.hosted_chains[SECTION] = monitoring_chains
app = ingest_cli.app

__all__ = ["app", "host_monitoring", "monitoring_settings"]

"""``shulian ingest ...``: run the service, migrate the schema, show settings.

The monitoring has its own noun (``shulian monitoring``). ``run --with-monitoring`` hosts it in
this process for small sites; the host comes from ``hosts``, which the ``shulian`` command fills
(shulian/hosting.py), because the ingest itself never imports the monitoring.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ingest.db.migrate import INGEST_CHAIN, Chain
from ingest.errors import IngestError
from ingest.settings import IngestSettings, load_settings, masked_settings, setting_sources

if TYPE_CHECKING:
    from ingest.service import IngestService

app = typer.Typer(
    help="Run the cloud ingest (MQTT -> PostgreSQL/TimescaleDB) and manage its database.",
    no_args_is_help=True,
)
settings_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)
app.add_typer(settings_app, name="settings")

Host = Callable[[IngestSettings, Path | None], Callable[["IngestService"], None]]
"""Builds, from the ingest's settings and settings file, what ``run_service`` serves with."""
hosts: dict[str, Host] = {}
"""Apps ``run --with-<name>`` hosts in the ingest's process (shulian/hosting.py adds them)."""
hosted_chains: dict[str, Callable[[], Sequence[Chain]]] = {}
"""The migration chains (the ingest's first) a process hosting ``<name>`` applies at start."""

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML settings file (sections as in IngestSettings)"),
]
DbOpt = Annotated[
    str | None, typer.Option("--db", help="PostgreSQL URL (overrides DATABASE_URL and the file)")
]
MqttOpt = Annotated[
    str | None,
    typer.Option(
        "--mqtt", help="mqtt://host:port or mqtts://host:port (overrides MQTT_URL and the file)"
    ),
]


def _settings(config: Path | None, **flags: Any) -> IngestSettings:
    """Settings with CLI flags on top; ``flags`` use dotted section paths, None = not given."""
    overrides: dict[str, Any] = {}
    for dotted, value in flags.items():
        if value is None:
            continue
        section, _, name = dotted.partition("__")
        overrides.setdefault(section, {})[name] = value
    try:
        return load_settings(config, **overrides)
    except IngestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def run(
    config: ConfigOpt = None,
    db: DbOpt = None,
    mqtt: MqttOpt = None,
    client_id: Annotated[
        str | None, typer.Option(help="MQTT client id; distinct and stable per worker")
    ] = None,
    share_group: Annotated[
        str | None, typer.Option(help="Shared-subscription group ('' for none)")
    ] = None,
    protocol: Annotated[str | None, typer.Option(help="MQTT version: 5 or 3.1.1")] = None,
    lanes: Annotated[int | None, typer.Option(help="Parallel writer lanes")] = None,
    api: Annotated[
        bool | None,
        typer.Option("--api/--no-api", help="Serve /metrics and /api/ingest/health (api.port)"),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port of /metrics and /api/ingest/health")
    ] = None,
    with_monitoring: Annotated[
        bool,
        typer.Option(
            "--with-monitoring",
            help="Also run the monitoring (pages, API, refresh) in this process, on its "
            "http.port; the settings file's monitoring: section configures it",
        ),
    ] = False,
    auto_register_gateways: Annotated[
        bool | None,
        typer.Option("--auto-register-gateways/--no-auto-register-gateways"),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = None,
    log_format: Annotated[str | None, typer.Option(help="text or json")] = None,
) -> None:
    """Consume telemetry and store it exactly once (stops cleanly on SIGTERM)."""
    settings = _settings(
        config,
        db__url=db,
        mqtt__url=mqtt,
        mqtt__client_id=client_id,
        mqtt__share_group=share_group,
        mqtt__protocol=protocol,
        writer__lanes=lanes,
        api__enabled=api,
        api__port=port,
        registry__auto_register_gateways=auto_register_gateways,
        log__level=log_level,
        log__format=log_format,
    )
    from ingest.logs import configure_logging
    from ingest.service import run_service

    serve = _hosted("monitoring", settings, config) if with_monitoring else None
    chains = hosted_chains["monitoring"]() if with_monitoring else (INGEST_CHAIN,)
    configure_logging(settings.log)
    try:
        run_service(settings, serve=serve, chains=chains)
    except IngestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def migrate(config: ConfigOpt = None, db: DbOpt = None) -> None:
    """Create or update the schema (the service also does this at start) and print the path."""
    settings = _settings(config, db__url=db)
    from ingest.logs import configure_logging
    from ingest.service import prepare_database

    configure_logging(settings.log)
    try:
        result = prepare_database(settings)
    except IngestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(result.choice.describe())
    for name in result.applied:
        typer.echo(f"applied {name}")
    typer.echo(f"{len(result.applied)} applied, {result.already_applied} already applied")


@settings_app.command("show")
def settings_show(
    config: ConfigOpt = None,
    sources: Annotated[
        bool, typer.Option("--sources", help="one line per setting: value and where it came from")
    ] = False,
) -> None:
    """Print the effective settings (secrets masked) as JSON, or with --sources as a table."""
    settings = _settings(config)
    if not sources:
        json.dump(masked_settings(settings), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    rows = [(name, json.dumps(value, ensure_ascii=False), source)
            for name, value, source in setting_sources(settings, config)]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    value_width = min(48, max(len(r[1]) for r in rows))
    for name, value, source in rows:
        typer.echo(f"{name:<{width}}  {value:<{value_width}}  {source}")


def _hosted(name: str, settings: IngestSettings, config: Path | None) -> Callable[[Any], None]:
    host = hosts.get(name)
    if host is None:
        typer.echo(
            f"error: --with-{name} needs the `shulian` command (python -m shulian), which "
            f"brings the {name}; or run `shulian {name} run` as a process of its own",
            err=True,
        )
        raise typer.Exit(2)
    try:
        return host(settings, config)
    except Exception as exc:  # the hosted app's ConfigError: its settings are wrong
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc

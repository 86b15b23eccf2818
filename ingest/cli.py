"""``shulian ingest ...``: run the service, migrate the schema, import the registry, show settings."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ingest.errors import IngestError
from ingest.settings import IngestSettings, load_settings, masked_settings, setting_sources

app = typer.Typer(
    help="Run the cloud ingest (MQTT -> PostgreSQL/TimescaleDB) and manage its database.",
    no_args_is_help=True,
)
registry_app = typer.Typer(
    help="Import the registry (enterprises, devices) from CSV.", no_args_is_help=True
)
settings_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
app.add_typer(settings_app, name="settings")

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
        bool | None, typer.Option("--api/--no-api", help="Also serve the monitoring app")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Monitoring app port")] = None,
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

    configure_logging(settings.log)
    try:
        run_service(settings)
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


@registry_app.command("import")
def registry_import(
    kind: Annotated[str, typer.Argument(help="enterprises or devices")],
    file: Annotated[Path, typer.Argument(help="CSV file with a header row", exists=True)],
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Upsert enterprises or devices from CSV; errors name file:line: column.

    enterprises.csv: id,name,district,segment[,name_en,above_designated_size,specialized,
    little_giant,service_provider]; devices.csv: enterprise,device[,name,gateway,profile,
    machine_kind,line,rated_cycle_s].
    """
    if kind not in ("enterprises", "devices"):
        typer.echo(f"error: kind must be enterprises or devices, not {kind!r}", err=True)
        raise typer.Exit(2)
    settings = _settings(config, db__url=db)
    try:
        text = file.read_text(encoding="utf-8-sig")
        created, updated = asyncio.run(
            _import_csv(settings.db.url.get_secret_value(), kind, text, file.name)
        )
    except Exception as exc:  # the monitoring module's BadInputError, or the database's refusal
        hint = getattr(exc, "hint", "")
        typer.echo(f"error: {exc}" + (f" {hint}" if hint else ""), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{kind}: {created} created, {updated} updated from {file}")


async def _import_csv(db_url: str, kind: str, text: str, filename: str) -> tuple[int, int]:
    """Run the monitoring module's CSV import (the same function its API calls)."""
    from psycopg import AsyncConnection

    from monitoring.api.csv_import import import_devices, import_enterprises

    importer = import_enterprises if kind == "enterprises" else import_devices
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        return await importer(conn, text, filename)


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


def _mount_monitoring_commands() -> None:
    """``token``, ``kpi`` and ``export`` come from the monitoring module (monitoring/api/cli.py)."""
    try:
        from monitoring.api.cli import export_app, kpi_app, token_app
    except ImportError:  # the monitoring module is optional for a bare ingest worker
        return
    app.add_typer(token_app, name="token")
    app.add_typer(kpi_app, name="kpi")
    app.add_typer(export_app, name="export")


_mount_monitoring_commands()

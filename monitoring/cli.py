"""``shulian monitoring ...``: serve the pages and API, show settings, and the monitoring's
maintenance commands (tokens, KPI refresh, the daily export, the registry's CSV import)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from monitoring.api.cli import export_app, kpi_app, token_app
from monitoring.db.cli import migrate_command, roles_command
from monitoring.errors import MonitoringError
from monitoring.settings import MonitoringSettings, load_settings, masked_settings, setting_sources

app = typer.Typer(
    help="Run the industry-operation monitoring (pages and API) and manage its data.",
    no_args_is_help=True,
)
settings_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)
registry_app = typer.Typer(
    help="Import the registry (enterprises, devices) from CSV.", no_args_is_help=True
)
app.add_typer(settings_app, name="settings")
app.add_typer(registry_app, name="registry")
app.add_typer(token_app, name="token")
app.add_typer(kpi_app, name="kpi")
app.add_typer(export_app, name="export")
# The database side, run as the schema's owner: the monitoring's migrations and its two roles.
app.command("migrate")(migrate_command)
app.command("roles")(roles_command)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML settings file (sections as in MonitoringSettings)"),
]
DbOpt = Annotated[
    str | None, typer.Option("--db", help="PostgreSQL URL (overrides DATABASE_URL and the file)")
]


def _settings(config: Path | None, **flags: Any) -> MonitoringSettings:
    """Settings with CLI flags on top; ``flags`` use ``section__name`` paths, None = not given."""
    overrides: dict[str, Any] = {}
    for dotted, value in flags.items():
        if value is not None:
            section, _, name = dotted.partition("__")
            overrides.setdefault(section, {})[name] = value
    try:
        return load_settings(config, **overrides)
    except MonitoringError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def run(
    config: ConfigOpt = None,
    db: DbOpt = None,
    host: Annotated[str | None, typer.Option(help="Listen address (0.0.0.0: every one)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port")] = None,
    refresh: Annotated[
        bool | None,
        typer.Option(
            "--refresh/--no-refresh",
            help="Run the KPI, integration and export jobs here (one instance per deployment)",
        ),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = None,
    log_format: Annotated[str | None, typer.Option(help="text or json")] = None,
) -> None:
    """Serve the pages and the API; with refresh.enabled also keep the KPI tables current."""
    settings = _settings(
        config,
        db__url=db,
        http__host=host,
        http__port=port,
        refresh__enabled=refresh,
        log__level=log_level,
        log__format=log_format,
    )
    from monitoring.logs import configure_logging
    from monitoring.server import run as serve

    configure_logging(settings.log)
    serve(settings)


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
    except Exception as exc:  # the import's BadInputError, or the database's refusal
        hint = getattr(exc, "hint", "")
        typer.echo(f"error: {exc}" + (f" {hint}" if hint else ""), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{kind}: {created} created, {updated} updated from {file}")


async def _import_csv(db_url: str, kind: str, text: str, filename: str) -> tuple[int, int]:
    """Run the CSV import the API's upload runs (monitoring/api/csv_import.py)."""
    from psycopg import AsyncConnection

    from monitoring.api.csv_import import import_devices, import_enterprises

    importer = import_enterprises if kind == "enterprises" else import_devices
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        return await importer(conn, text, filename)

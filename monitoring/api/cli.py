"""``shulian monitoring token create|list|revoke``, ``kpi refresh`` and ``export push|document|deliveries``.

The monitoring's CLI (monitoring/cli.py) mounts these typer sub-apps as ``token``, ``kpi`` and
``export``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from psycopg import AsyncConnection

from monitoring import auth, integration, kpis
from monitoring.errors import MonitoringError
from monitoring.settings import DEV_DATABASE_URL, KpiSettings, MonitoringSettings, load_settings

token_app = typer.Typer(
    help="Create, list and revoke API tokens of the monitoring module.", no_args_is_help=True
)
kpi_app = typer.Typer(help="Maintain the daily KPI tables.", no_args_is_help=True)
export_app = typer.Typer(
    help="The daily export for upward platforms: push a day, print a document, list deliveries.",
    no_args_is_help=True,
)

DbUrl = Annotated[
    str,
    typer.Option(
        "--db",
        envvar=["SHULIAN_MONITORING_DB__URL", "DATABASE_URL"],
        help="PostgreSQL URL (default: DATABASE_URL)",
    ),
]


def _default_db() -> str:
    return os.environ.get("DATABASE_URL", DEV_DATABASE_URL)


async def _with_conn(url: str, work: Any) -> Any:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        return await work(conn)


_UNITS = {"d": 86_400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s`` (or combined: ``1d12h``) as a timedelta.

    Raises:
        typer.BadParameter: naming the text and the accepted form.
    """
    parts = re.findall(r"(\d+)\s*([dhms])", text.strip().lower())
    if not parts or re.sub(r"(\d+)\s*([dhms])|\s", "", text.lower()):
        raise typer.BadParameter(f"{text!r} is not a duration; write e.g. 90d, 12h, 30m or 1d12h")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise typer.BadParameter(f"{text!r}: a token must live for more than 0 s")
    return timedelta(seconds=seconds)


@token_app.command("create")
def create(
    role: Annotated[auth.Role, typer.Option(help="bureau, enterprise, provider or admin")],
    enterprise: Annotated[str | None, typer.Option(help="Enterprise id (role enterprise)")] = None,
    provider: Annotated[
        str | None, typer.Option(help="Service provider id (role provider)")
    ] = None,
    name: Annotated[str, typer.Option(help="Who or what uses the token")] = "",
    expires_in: Annotated[
        str | None,
        typer.Option(help="Lifetime, e.g. 90d, 12h, 30m; the token and its sessions end then"),
    ] = None,
    db: DbUrl = "",
) -> None:
    """Create a token and print it once; only its hash is stored."""
    expires_at = datetime.now(UTC) + parse_duration(expires_in) if expires_in else None
    try:
        issued = asyncio.run(
            _with_conn(
                db or _default_db(),
                lambda conn: auth.create_token(
                    conn,
                    role,
                    enterprise=enterprise,
                    provider=provider,
                    name=name,
                    expires_at=expires_at,
                ),
            )
        )
    except auth.TokenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(issued.secret)
    until = f", expires {expires_at.isoformat(timespec='seconds')}" if expires_at else ""
    typer.echo(
        f"token {issued.token_id} ({role.value}) created{until}; it cannot be shown again",
        err=True,
    )


@token_app.command("list")
def list_(db: DbUrl = "") -> None:
    """List tokens (id, first characters, role, binding, state, expiry); never the secrets."""
    rows = asyncio.run(_with_conn(db or _default_db(), auth.list_tokens))
    now = datetime.now(UTC)
    for row in rows:
        expires = row["expires_at"]
        if row["revoked_at"]:
            state = "revoked"
        elif expires and expires <= now:
            state = "expired"
        else:
            state = f"live until {expires.isoformat(timespec='minutes')}" if expires else "live"
        binding = row["enterprise"] or row["provider"] or "-"
        typer.echo(f"{row['id']}\t{row['hint']}…\t{row['role']}\t{binding}\t{state}\t{row['name']}")


@token_app.command("revoke")
def revoke(token_id: int, db: DbUrl = "") -> None:
    """Revoke a token by id; it and its browser sessions stop working at once."""
    done = asyncio.run(
        _with_conn(db or _default_db(), lambda conn: auth.revoke_token(conn, token_id))
    )
    if not done:
        typer.echo(f"error: no live token with id {token_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"token {token_id} revoked")


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML settings file (the monitoring's: kpi, export)"),
]


@kpi_app.command("refresh")
def refresh(
    days_back: Annotated[int, typer.Option(help="Refresh today and this many days before")] = 1,
    config: ConfigOpt = None,
    db: DbUrl = "",
) -> None:
    """Recompute the daily KPI tables (after importing history or fixing data)."""
    url, settings = _monitoring_settings(config, db)
    days = asyncio.run(
        _with_conn(url, lambda conn: kpis.refresh_daily(conn, settings.kpi, days_back=days_back))
    )
    typer.echo(f"refreshed {len(days)} day(s): {days[0]} .. {days[-1]}")


DayOpt = Annotated[
    str | None, typer.Option("--day", help="YYYY-MM-DD; default yesterday (in kpi.timezone)")
]


def _monitoring_settings(config: Path | None, db: str) -> tuple[str, MonitoringSettings]:
    """The database URL and the settings, as ``shulian monitoring run`` would load them."""
    try:
        overrides: dict[str, Any] = {"db": {"url": db}} if db else {}
        settings = load_settings(config, **overrides)
    except MonitoringError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    return settings.db.url.get_secret_value(), settings


def _day(text: str | None, settings: KpiSettings) -> date:
    if not text:
        return kpis.city_today(settings, datetime.now(UTC)) - timedelta(days=1)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a day; write YYYY-MM-DD") from None


@export_app.command("push")
def export_push_day(day: DayOpt = None, config: ConfigOpt = None, db: DbUrl = "") -> None:
    """Push one day to the configured receiver, with retries (exit 0 when accepted).

    An accepted day is never sent again; a failed or interrupted one is resent unchanged.
    """
    from monitoring.api import export_push

    url, settings = _monitoring_settings(config, db)
    chosen = _day(day, settings.kpi)
    try:
        delivery = asyncio.run(export_push.push_day(url, settings, chosen))
    except export_push.ExportPushError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"{chosen}: {delivery.status} after {delivery.attempts} attempt(s), sha256 "
        f"{delivery.content_sha256[:12]}, schema {delivery.schema_version}"
        + (f"; last error: {delivery.last_error}" if delivery.status != "accepted" else "")
    )
    if delivery.status != "accepted":
        raise typer.Exit(1)


@export_app.command("document")
def export_document(day: DayOpt = None, config: ConfigOpt = None, db: DbUrl = "") -> None:
    """Print a day's export document (JSON) as it would be sent now."""
    from monitoring.api.export_doc import build_daily_export

    url, settings = _monitoring_settings(config, db)
    chosen = _day(day, settings.kpi)

    async def build(conn: AsyncConnection[Any]) -> bytes:
        await kpis.refresh_day(conn, settings.kpi, chosen)
        await integration.refresh_day(conn, settings.kpi, chosen)
        return (await build_daily_export(conn, settings.kpi, chosen)).to_bytes()

    try:
        body = asyncio.run(_with_conn(url, build))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    sys.stdout.write(body.decode("utf-8") + "\n")


@export_app.command("deliveries")
def export_deliveries(config: ConfigOpt = None, db: DbUrl = "") -> None:
    """List the pushes: day, status, attempts, content hash, last error, acknowledgement."""
    from monitoring.api import export_push

    url, _ = _monitoring_settings(config, db)
    for delivery in asyncio.run(_with_conn(url, export_push.list_deliveries)):
        typer.echo(json.dumps(delivery.as_dict(), ensure_ascii=False))

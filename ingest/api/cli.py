"""``shulian ingest token create|list|revoke`` and ``shulian ingest kpi refresh``: typer sub-apps.

The ingest's CLI mounts them: ``app.add_typer(token_app, name="token")`` and
``app.add_typer(kpi_app, name="kpi")``.
"""

from __future__ import annotations

import asyncio
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from psycopg import AsyncConnection

from ingest import auth, kpis
from ingest.api.settings import KpiSettings

token_app = typer.Typer(
    help="Create, list and revoke API tokens of the monitoring module.", no_args_is_help=True
)
kpi_app = typer.Typer(help="Maintain the daily KPI tables.", no_args_is_help=True)

DbUrl = Annotated[
    str,
    typer.Option(
        "--db",
        envvar=["SHULIAN_INGEST_DB__URL", "DATABASE_URL"],
        help="PostgreSQL URL (default: DATABASE_URL)",
    ),
]


def _default_db() -> str:
    return os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/shulian")


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


@kpi_app.command("refresh")
def refresh(
    days_back: Annotated[int, typer.Option(help="Refresh today and this many days before")] = 1,
    db: DbUrl = "",
) -> None:
    """Recompute the daily KPI tables (after importing history or fixing data)."""
    days = asyncio.run(
        _with_conn(
            db or _default_db(),
            lambda conn: kpis.refresh_daily(conn, KpiSettings(), days_back=days_back),
        )
    )
    typer.echo(f"refreshed {len(days)} day(s): {days[0]} .. {days[-1]}")

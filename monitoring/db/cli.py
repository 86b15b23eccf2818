"""``shulian monitoring migrate`` and ``shulian monitoring roles``: the monitoring's database side.

Both run as the schema's owner on the primary (not as the monitoring's role, which may not create
tables or roles). The monitoring's main CLI mounts these two commands.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ingest.errors import MigrationError
from monitoring.db.migrate import migrate
from monitoring.db.roles import (
    DEFAULT_MONITORING_ROLE,
    DEFAULT_READ_ROLE,
    RoleNames,
    RolesError,
    apply_roles,
    roles_sql,
)

DbUrl = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="SHULIAN_MONITORING_MIGRATE_URL",
        help="Database URL of the schema's owner (the role that migrates), on the primary",
        show_envvar=True,
    ),
]


def migrate_command(
    db: DbUrl,
    storage_path: Annotated[
        str, typer.Option(help="auto, postgresql or timescaledb; the ingest's chain chose it")
    ] = "auto",
) -> None:
    """Apply the monitoring's migrations (after the ingest's: `shulian ingest migrate`)."""
    try:
        result = migrate(db, storage_path)
    except MigrationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(result.choice.describe())
    for name in result.applied:
        typer.echo(f"applied {name}")
    typer.echo(f"{len(result.applied)} applied, {result.already_applied} already applied")


def roles_command(
    apply: Annotated[
        str | None,
        typer.Option(
            "--apply",
            metavar="URL",
            help="Run the SQL at URL (the schema's owner, on the primary) instead of printing it",
        ),
    ] = None,
    monitoring_role: Annotated[
        str, typer.Option(help="The role `monitoring run` uses for db.url")
    ] = DEFAULT_MONITORING_ROLE,
    read_role: Annotated[
        str, typer.Option(help="The read-only role for db.read_url")
    ] = DEFAULT_READ_ROLE,
) -> None:
    """Print (or --apply) the SQL that creates or refreshes the monitoring's two roles."""
    try:
        names = RoleNames(monitoring_role, read_role)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if apply is None:
        typer.echo(roles_sql(names), nl=False)
        return
    try:
        apply_roles(apply, names)
    except RolesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"roles {names.monitoring} (monitoring, db.url) and {names.read_only} (read-only, "
        "db.read_url) are up to date; set their passwords with ALTER ROLE ... PASSWORD"
    )


app = typer.Typer(help="The monitoring's database: migrations and roles.", no_args_is_help=True)
app.command("migrate")(migrate_command)
app.command("roles")(roles_command)

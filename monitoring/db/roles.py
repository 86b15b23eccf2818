"""The two database roles a split deployment logs in as, as SQL that creates or refreshes them.

- The monitoring's role (``db.url`` of ``shulian monitoring run``): SELECT on every table and view
  of the schema; INSERT, UPDATE and DELETE on the monitoring's own tables (those its migration
  chain creates); and on the ingest's tables only the writes the web legitimately makes
  (``INGEST_WRITES``). It cannot write telemetry, the ledger or anything else the ingest writes.
- The read-only role (``db.read_url``): SELECT on every table and view, nothing else, and
  ``default_transaction_read_only`` on, so it behaves like a streaming replica even on the primary.

Partitions (the plain path's daily tables) and TimescaleDB chunks need no grants of their own:
PostgreSQL checks privileges on the table a query names, not on the partitions or chunks it
expands to, and views (the plain path's rollup views, TimescaleDB's continuous aggregates) read
their tables with their owner's privileges. Tables later migrations add are covered for SELECT by
the default privileges below; run the roles again after each migrate so new monitoring tables
also get their write grants (it is idempotent: it revokes and grants again).

The SQL runs as the owner of the schema (the role that migrates), on the primary: a replica
receives roles and grants by replication.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import psycopg
from psycopg import sql

from monitoring.db.migrate import MONITORING_CHAIN

INGEST_WRITES: Final[dict[str, tuple[str, ...]]] = {
    # The registry CSV import (monitoring/api/csv_import.py, POST /api/import/...) upserts rows.
    "enterprises": ("INSERT", "UPDATE"),
    "devices": ("INSERT", "UPDATE"),
    # Remote configuration (monitoring/api/remote_config.py): a provider uploads versions and
    # assigns them; an enterprise refuses an assignment (an UPDATE of its row). The ingest
    # delivers them (config_deliveries, config_reports stay the ingest's alone).
    "config_versions": ("INSERT",),
    "config_assignments": ("INSERT", "UPDATE"),
    # The daily KPI refresh deletes the late-data ranges the ingest noted, once recomputed.
    "kpi_late_data": ("DELETE",),
}
"""What the monitoring writes in the ingest's tables (docs/operations.md, "Database roles")."""

_CREATE_TABLE: Final = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?([a-z_][a-z0-9_]*)", re.I)
_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DEFAULT_MONITORING_ROLE: Final = "shulian_monitoring"
DEFAULT_READ_ROLE: Final = "shulian_monitoring_read"


@dataclass(frozen=True, slots=True)
class RoleNames:
    """Names of the two roles (lower-case SQL identifiers)."""

    monitoring: str = DEFAULT_MONITORING_ROLE
    read_only: str = DEFAULT_READ_ROLE

    def __post_init__(self) -> None:
        for what, name in (
            ("monitoring role", self.monitoring),
            ("read-only role", self.read_only),
        ):
            if not _NAME.match(name):
                raise ValueError(
                    f"{what} {name!r} is not a plain SQL name: use lower-case letters, digits "
                    "and _, starting with a letter or _ (at most 63)"
                )
        if self.monitoring == self.read_only:
            raise ValueError(f"the two roles need different names (both are {self.monitoring!r})")


def monitoring_tables() -> list[str]:
    """The tables the monitoring's migration chain creates: the monitoring writes all of them."""
    names = {
        match.group(1).lower()
        for migration in MONITORING_CHAIN.migrations()
        for match in _CREATE_TABLE.finditer(migration.sql)
    }
    return sorted(names)


def roles_sql(names: RoleNames = RoleNames()) -> str:
    """The SQL that creates (if missing) and refreshes both roles' privileges."""
    monitoring = sql.Identifier(names.monitoring)
    read_only = sql.Identifier(names.read_only)
    statements: list[sql.Composable] = []
    for role, literal in ((monitoring, names.monitoring), (read_only, names.read_only)):
        # CREATE ROLE has no IF NOT EXISTS; the DO block makes a re-run refresh, not fail.
        statements.append(
            sql.SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {}) THEN "
                "CREATE ROLE {} LOGIN; END IF; END $$"
            ).format(sql.Literal(literal), role)
        )
    both = sql.SQL(", ").join([monitoring, read_only])
    statements += [
        sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(read_only),
        sql.SQL("ALTER ROLE {} RESET default_transaction_read_only").format(monitoring),
        # Start from nothing, so a refresh also takes back what an older version granted.
        sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(both),
        sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(both),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(both),
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(both),
        # Tables and views later migrations create (as this role, the owner) are readable too.
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}").format(
            both
        ),
    ]
    own = monitoring_tables()
    statements.append(
        sql.SQL("GRANT INSERT, UPDATE, DELETE ON {} TO {}").format(
            sql.SQL(", ").join(sql.Identifier(t) for t in own), monitoring
        )
    )
    for table, privileges in INGEST_WRITES.items():
        statements.append(
            sql.SQL("GRANT {} ON {} TO {}").format(
                sql.SQL(", ").join(sql.SQL(p) for p in privileges),
                sql.Identifier(table),
                monitoring,
            )
        )
    # bigserial columns (api_tokens, web_sessions, kpi_late_data's ids) take their values from
    # sequences; identity columns need no grant. Only the sequences of tables it inserts into.
    inserts = [*own, *(t for t, p in INGEST_WRITES.items() if "INSERT" in p)]
    statements.append(
        sql.SQL(
            "DO $$ DECLARE s regclass; BEGIN FOR s IN "
            "SELECT d.objid::regclass FROM pg_depend d JOIN pg_class c ON c.oid = d.objid "
            "WHERE c.relkind = 'S' AND d.deptype = 'a' AND d.refobjid = ANY (ARRAY[{}]::regclass[]) "
            "LOOP EXECUTE format('GRANT USAGE ON SEQUENCE %s TO %I', s, {}); END LOOP; END $$"
        ).format(sql.SQL(", ").join(sql.Literal(t) for t in inserts), sql.Literal(names.monitoring))
    )
    return "".join(f"{statement.as_string(None)};\n" for statement in statements)


class RolesError(RuntimeError):
    """The roles cannot be set up at this database yet; the message says what to run first."""


def apply_roles(url: str, names: RoleNames = RoleNames()) -> None:
    """Run ``roles_sql`` at ``url`` in one transaction (as the schema's owner, on the primary).

    Raises:
        RolesError: the monitoring's tables are not there yet (migrate first), or the server
            refused (not the owner, a standby).
    """
    with psycopg.connect(url) as conn:
        missing = [
            table
            for table in (*monitoring_tables(), *INGEST_WRITES)
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)
        ]
        if missing:
            raise RolesError(
                f"tables {', '.join(missing)} are not in this database: the roles grant on "
                "the migrated schema. Run `shulian ingest migrate --db URL` and "
                "`shulian monitoring migrate --db URL` first"
            )
        try:
            with conn.transaction():
                conn.execute(roles_sql(names).encode())
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise RolesError(
                f"the database refused the roles: {first}. Run them as the schema's owner (the "
                "role that migrates) on the primary, not on a replica"
            ) from exc

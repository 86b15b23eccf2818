"""Apply the versioned SQL migrations in ingest/db/migrations, once, whoever starts first.

A migration is ``NNNN_name.sql`` (both storage paths) or a pair ``NNNN_name.postgresql.sql`` /
``NNNN_name.timescaledb.sql`` (one per path). The ingest owns 0001-0099, the monitoring module
0100 and up. Everything runs in one transaction under an advisory lock, so several workers
starting at once apply each migration exactly once and a failure leaves the schema untouched.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from ingest.db.timescale import (
    PathChoice,
    StoragePath,
    choose_path,
    require_timescaledb_loaded,
    timescaledb_available,
)
from ingest.errors import MigrationError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x5348554C49414E01  # "SHULIAN\x01": one advisory lock for migrating
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)(?:\.(postgresql|timescaledb))?\.sql$")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    path        text NOT NULL,          -- 'all', 'postgresql' or 'timescaledb'
    checksum    text NOT NULL,          -- sha256 of the file applied
    applied_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS storage_info (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    path        text NOT NULL,          -- the storage path this database was created with
    created_at  timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: StoragePath | None  # None: both paths
    file: Path

    @property
    def sql(self) -> str:
        return self.file.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.file.read_bytes()).hexdigest()


@dataclass(slots=True)
class MigrationResult:
    choice: PathChoice
    applied: list[str] = field(default_factory=list)
    already_applied: int = 0


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migration files, sorted; a badly named file or a clash raises MigrationError."""
    found: list[Migration] = []
    for file in sorted(directory.glob("*.sql")):
        match = _NAME_RE.match(file.name)
        if not match:
            raise MigrationError(
                "not a migration file name",
                where=str(file),
                hint="Name it NNNN_name.sql or NNNN_name.postgresql.sql / NNNN_name.timescaledb.sql",
            )
        version, name, path = match.groups()
        found.append(Migration(int(version), name, StoragePath(path) if path else None, file))
    by_version: dict[int, list[Migration]] = {}
    for migration in found:
        by_version.setdefault(migration.version, []).append(migration)
    for version, group in by_version.items():
        paths = [m.path for m in group]
        if len(group) > 1 and (None in paths or len(set(paths)) != len(paths)):
            raise MigrationError(
                f"version {version:04d} has clashing files: {', '.join(m.file.name for m in group)}",
                where=str(directory),
                hint="Use one common file, or one file per storage path",
            )
    return found


def for_path(migrations: list[Migration], path: StoragePath) -> list[Migration]:
    """The migrations that apply to ``path``, in version order."""
    return sorted(
        (m for m in migrations if m.path is None or m.path == path), key=lambda m: m.version
    )


def migrate(
    conn: psycopg.Connection, requested_path: str = "auto", directory: Path = MIGRATIONS_DIR
) -> MigrationResult:
    """Bring the schema up to date on ``conn`` (which must not be in a transaction).

    Raises:
        MigrationError: a migration failed (naming file and line), or the database was created
            with another storage path than ``requested_path``, or is newer than this code.
    """
    migrations = discover(directory)
    require_timescaledb_loaded(conn)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute(_BOOTSTRAP)
        choice = _storage_path(conn, requested_path)
        wanted = for_path(migrations, choice.path)
        applied = {
            int(version): checksum
            for version, checksum in conn.execute(
                "SELECT version, checksum FROM schema_migrations"
            ).fetchall()
        }
        unknown = sorted(set(applied) - {m.version for m in migrations})
        if unknown:
            raise MigrationError(
                f"the database has migrations this code does not know: {unknown}",
                hint="Run a newer shulian against this database",
            )
        result = MigrationResult(choice)
        for migration in wanted:
            if migration.version in applied:
                result.already_applied += 1
                if applied[migration.version] != migration.checksum:
                    log.warning(
                        "applied migration %s was edited since; edits never re-run",
                        migration.file.name,
                    )
                continue
            _apply(conn, migration)
            result.applied.append(migration.file.name)
    for name in result.applied:
        log.info("applied migration %s", name)
    return result


def _storage_path(conn: psycopg.Connection, requested: str) -> PathChoice:
    row = conn.execute("SELECT path FROM storage_info").fetchone()
    if row is None:
        choice = choose_path(conn, requested)
        conn.execute("INSERT INTO storage_info (path) VALUES (%s)", (choice.path.value,))
        return choice
    existing = StoragePath(row[0])
    if requested not in ("auto", existing.value):
        raise MigrationError(
            f"storage.path is {requested} but this database was created for {existing.value}",
            hint="A database keeps its storage path; migrate the data or use a new database",
        )
    if existing is StoragePath.TIMESCALEDB:
        return PathChoice(existing, "")
    if timescaledb_available(conn):
        return PathChoice(existing, "database created without timescaledb")
    return PathChoice(existing, "timescaledb not available")


def _apply(conn: psycopg.Connection, migration: Migration) -> None:
    text = migration.sql
    try:
        with conn.transaction():
            conn.execute(text.encode())  # no parameters: simple protocol, many statements
    except psycopg.Error as exc:
        position = getattr(exc.diag, "statement_position", None)
        line = text[: int(position)].count("\n") + 1 if position else None
        where = f"{migration.file}:{line}" if line else str(migration.file)
        raise MigrationError(
            f"migration failed: {str(exc).strip().splitlines()[0]}", where=where, cause=exc
        ) from exc
    conn.execute(
        "INSERT INTO schema_migrations (version, name, path, checksum) VALUES (%s, %s, %s, %s)",
        (
            migration.version,
            migration.name,
            migration.path.value if migration.path else "all",
            migration.checksum,
        ),
    )

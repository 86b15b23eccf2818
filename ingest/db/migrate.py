"""Apply chains of versioned SQL migrations, once, whoever starts first.

A migration is ``NNNN_name.sql`` (both storage paths) or a pair ``NNNN_name.postgresql.sql`` /
``NNNN_name.timescaledb.sql`` (one per path). A *chain* is one folder of them with an owner: the
ingest's chain (here, ``INGEST_CHAIN``) creates what the ingest writes; the monitoring's chain
(monitoring/db/migrations) creates the monitoring's own tables and needs the ingest's applied
first. Versions are unique across chains (they share ``schema_migrations``), so moving a file
from one chain to another keeps its number and a database that recorded it sees nothing new.

Everything runs in one transaction under an advisory lock, so several workers starting at once
apply each migration exactly once and a failure leaves the schema untouched. This module is the
storage contract the monitoring may import; it never imports the monitoring.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

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
-- Which chain applied each version; NULL on rows recorded before chains existed, claimed by the
-- chain that knows the version the next time it migrates.
ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS chain text;
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


@dataclass(frozen=True, slots=True)
class Chain:
    """One owner's folder of migrations, applied after every chain it ``requires``."""

    name: str
    """Recorded in ``schema_migrations.chain``: ``ingest``, ``monitoring``."""
    directory: Path
    command: str
    """What applies this chain alone, for messages: ``shulian ingest migrate --db URL``."""
    requires: tuple[Chain, ...] = ()

    def migrations(self) -> list[Migration]:
        return discover(self.directory)


INGEST_CHAIN: Final = Chain("ingest", MIGRATIONS_DIR, "shulian ingest migrate --db URL")
"""The ingest's chain: registry, telemetry, rollups, ingest state, remote-config delivery."""


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
    conn: psycopg.Connection,
    requested_path: str = "auto",
    chains: Sequence[Chain] = (INGEST_CHAIN,),
) -> MigrationResult:
    """Bring ``chains`` up to date on ``conn`` (which must not be in a transaction), in order.

    A chain whose ``requires`` are not applied (and not earlier in ``chains``) is refused before
    anything changes, naming the command that applies them.

    Raises:
        MigrationError: a migration failed (naming file and line), a required chain is missing,
            the database was created with another storage path than ``requested_path``, or it
            has migrations of these chains that this code does not know.
    """
    known = {chain.name: chain.migrations() for chain in _with_requirements(chains)}
    _check_disjoint(known)
    require_timescaledb_loaded(conn)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute(_BOOTSTRAP)
        _claim_unowned(conn, known)
        if conn.execute("SELECT 1 FROM storage_info").fetchone() is None and chains[0].requires:
            raise _missing(chains[0], chains[0].requires[0], None)
        choice = _storage_path(conn, requested_path)
        result = MigrationResult(choice)
        for chain in chains:
            _apply_chain(conn, chain, known, choice.path, result)
    for name in result.applied:
        log.info("applied migration %s", name)
    return result


def _with_requirements(chains: Sequence[Chain]) -> list[Chain]:
    """``chains`` and everything they require, each once."""
    seen: dict[str, Chain] = {}
    for chain in chains:
        for required in (*chain.requires, chain):
            seen.setdefault(required.name, required)
    return list(seen.values())


def _check_disjoint(known: dict[str, list[Migration]]) -> None:
    """Two chains never share a version: ``schema_migrations`` is keyed by version alone."""
    owner: dict[int, str] = {}
    for name, migrations in known.items():
        for migration in migrations:
            other = owner.setdefault(migration.version, name)
            if other != name:
                raise MigrationError(
                    f"version {migration.version:04d} is in both the {other} and the {name} chain",
                    where=str(migration.file),
                    hint="Give the new migration a number no other chain uses",
                )


def _claim_unowned(conn: psycopg.Connection, known: dict[str, list[Migration]]) -> None:
    """Rows recorded before chains existed (chain NULL) go to the chain that has the version."""
    for name, migrations in known.items():
        conn.execute(
            "UPDATE schema_migrations SET chain = %s WHERE chain IS NULL AND version = ANY(%s)",
            (name, [m.version for m in migrations]),
        )


def _apply_chain(
    conn: psycopg.Connection,
    chain: Chain,
    known: dict[str, list[Migration]],
    path: StoragePath,
    result: MigrationResult,
) -> None:
    recorded = conn.execute("SELECT version, checksum, chain FROM schema_migrations").fetchall()
    applied = {int(version): checksum for version, checksum, _ in recorded}
    for required in chain.requires:
        missing = [m for m in for_path(known[required.name], path) if m.version not in applied]
        if missing:
            raise _missing(chain, required, missing)
    ours = {m.version for m in known[chain.name]}
    unknown = sorted(int(v) for v, _, owner in recorded if owner == chain.name and v not in ours)
    if unknown:
        raise MigrationError(
            f"the database has {chain.name} migrations this code does not know: {unknown}",
            hint="Run a newer shulian against this database",
        )
    for migration in for_path(known[chain.name], path):
        if migration.version in applied:
            result.already_applied += 1
            if applied[migration.version] != migration.checksum:
                log.warning(
                    "applied migration %s was edited since; edits never re-run",
                    migration.file.name,
                )
            continue
        _apply(conn, chain, migration)
        result.applied.append(migration.file.name)


def _missing(chain: Chain, required: Chain, missing: list[Migration] | None) -> MigrationError:
    what = (
        f"the {required.name} schema is not in this database"
        if missing is None
        else f"the {required.name} schema is behind: "
        f"{', '.join(m.file.name for m in missing)} not applied"
    )
    return MigrationError(
        f"cannot migrate the {chain.name} chain: {what}",
        hint=f"Run `{required.command}` against this database first, then `{chain.command}`",
    )


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


def _apply(conn: psycopg.Connection, chain: Chain, migration: Migration) -> None:
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
        "INSERT INTO schema_migrations (version, name, path, checksum, chain)"
        " VALUES (%s, %s, %s, %s, %s)",
        (
            migration.version,
            migration.name,
            migration.path.value if migration.path else "all",
            migration.checksum,
            chain.name,
        ),
    )

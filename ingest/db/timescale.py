"""Detect TimescaleDB, choose the storage path, and apply the TimescaleDB policies from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import psycopg
from psycopg import sql

from ingest.db.partitions import MAINTENANCE_LOCK_KEY
from ingest.errors import MigrationError
from ingest.settings import DAY_S, LimitsSettings, StorageSettings

log = logging.getLogger(__name__)


class StoragePath(StrEnum):
    TIMESCALEDB = "timescaledb"
    POSTGRESQL = "postgresql"


@dataclass(frozen=True, slots=True)
class PathChoice:
    path: StoragePath
    why: str

    def describe(self) -> str:
        return f"storage path: {self.path.value}" + (f" ({self.why})" if self.why else "")


def timescaledb_available(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def timescaledb_preloaded(conn: psycopg.Connection) -> bool:
    """Whether the server loaded the library at start, which TimescaleDB requires.

    Without it ``CREATE EXTENSION timescaledb`` ends the session with FATAL, which no savepoint
    can catch, so the path is chosen before ever trying.
    """
    row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    libraries = {name.strip().strip('"') for name in str(row[0] if row else "").split(",")}
    return "timescaledb" in libraries


_PRELOAD_HINT = (
    "Add timescaledb to shared_preload_libraries in postgresql.conf "
    "(shared_preload_libraries = 'timescaledb') and restart PostgreSQL"
)


def choose_path(conn: psycopg.Connection, requested: str) -> PathChoice:
    """Pick the path for a new database, creating the extension when it is used.

    Runs inside the migration transaction. The extension is created only where the server
    preloads it; otherwise ``auto`` falls back to plain PostgreSQL, saying why and how to fix it,
    and an explicit ``timescaledb`` refuses.
    """
    if requested == StoragePath.POSTGRESQL:
        return PathChoice(StoragePath.POSTGRESQL, "chosen by storage.path")
    if not timescaledb_available(conn):
        if requested == StoragePath.TIMESCALEDB:
            raise MigrationError(
                "storage.path is timescaledb but the server has no timescaledb extension",
                hint="Install TimescaleDB on the server, or set storage.path to auto",
            )
        return PathChoice(StoragePath.POSTGRESQL, "timescaledb not available")
    if not timescaledb_preloaded(conn):
        if requested == StoragePath.TIMESCALEDB:
            raise MigrationError(
                "storage.path is timescaledb but the server does not preload the timescaledb "
                "library (shared_preload_libraries)",
                hint=_PRELOAD_HINT,
            )
        log.warning(
            "timescaledb is installed on the server but not preloaded; using plain PostgreSQL. %s",
            _PRELOAD_HINT,
        )
        return PathChoice(
            StoragePath.POSTGRESQL,
            "timescaledb installed but not in shared_preload_libraries",
        )
    try:
        with conn.transaction():  # a savepoint: a refusal must not abort the migration
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0]
        if requested == StoragePath.TIMESCALEDB:
            raise MigrationError(
                f"storage.path is timescaledb but CREATE EXTENSION timescaledb failed: {reason}",
                hint="Check the server log; the database user needs the right to create it",
                cause=exc,
            ) from exc
        return PathChoice(StoragePath.POSTGRESQL, f"timescaledb not usable: {reason}")
    return PathChoice(StoragePath.TIMESCALEDB, "")


def require_timescaledb_loaded(conn: psycopg.Connection) -> None:
    """A database with the extension needs the library loaded on every later start.

    Checked before any DDL: on such a database even ``CREATE TABLE IF NOT EXISTS`` fails with
    the extension's own "must be preloaded" error.
    """
    created = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if created is not None and not timescaledb_preloaded(conn):
        raise MigrationError(
            "this database was created on TimescaleDB but the server does not preload the "
            "timescaledb library (shared_preload_libraries)",
            hint=_PRELOAD_HINT,
        )


def apply_policies(
    conn: psycopg.Connection, storage: StorageSettings, limits: LimitsSettings
) -> None:
    """(Re)apply chunk interval, compression, retention and refresh policies; idempotent."""
    day = DAY_S
    replay_horizon_s = limits.max_age_s
    statements: list[sql.Composed] = [
        sql.SQL("SELECT set_chunk_time_interval('telemetry', {})").format(
            _interval(storage.chunk_interval_h * 3600)
        ),
    ]
    for table in ("telemetry", "counter_increments"):
        statements += [
            sql.SQL("SELECT remove_compression_policy({}, if_exists => true)").format(
                sql.Literal(table)
            ),
            sql.SQL("SELECT add_compression_policy({}, {})").format(
                sql.Literal(table), _interval(storage.compress_after_days * day)
            ),
            sql.SQL("SELECT remove_retention_policy({}, if_exists => true)").format(
                sql.Literal(table)
            ),
            sql.SQL("SELECT add_retention_policy({}, {})").format(
                sql.Literal(table), _interval(storage.retention_days * day)
            ),
        ]
    # A refresh window reaching past the replay horizon materializes late (replayed) data;
    # refreshing is incremental, so the wide window costs only what was invalidated.
    windows = {
        "telemetry_1m": (60, storage.rollup_1m_retention_days),
        "counter_1m": (60, storage.rollup_1m_retention_days),
        "telemetry_1h": (3600, storage.rollup_1h_retention_days),
        "counter_1h": (3600, storage.rollup_1h_retention_days),
    }
    for view, (bucket_s, retention_days) in windows.items():
        statements += [
            sql.SQL("SELECT remove_continuous_aggregate_policy({}, if_exists => true)").format(
                sql.Literal(view)
            ),
            sql.SQL(
                "SELECT add_continuous_aggregate_policy({}, start_offset => {}, "
                "end_offset => {}, schedule_interval => {})"
            ).format(
                sql.Literal(view),
                _interval(replay_horizon_s + 2 * bucket_s),
                _interval(bucket_s),
                _interval(bucket_s),
            ),
            sql.SQL("SELECT remove_retention_policy({}, if_exists => true)").format(
                sql.Literal(view)
            ),
            sql.SQL("SELECT add_retention_policy({}, {})").format(
                sql.Literal(view), _interval(retention_days * day)
            ),
        ]
    with conn.transaction():
        # Workers starting at the same moment would otherwise remove and add the same policies
        # at once, and all but one fail with "tuple concurrently updated".
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MAINTENANCE_LOCK_KEY,))
        for statement in statements:
            conn.execute(statement)
    log.info(
        "timescaledb policies applied",
        extra={
            "compress_after_days": storage.compress_after_days,
            "retention_days": storage.retention_days,
            "chunk_interval_h": storage.chunk_interval_h,
        },
    )


def _interval(seconds: float) -> sql.Composable:
    return sql.SQL("{}::interval").format(sql.Literal(f"{int(seconds)} seconds"))

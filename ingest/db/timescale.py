"""Detect TimescaleDB, choose the storage path, and apply the TimescaleDB policies from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import psycopg
from psycopg import sql

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


def choose_path(conn: psycopg.Connection, requested: str) -> PathChoice:
    """Pick the path for a new database, creating the extension when it is used.

    Runs inside the migration transaction; a failed CREATE EXTENSION (for example when the
    library is installed but not in shared_preload_libraries) falls back to plain PostgreSQL
    with the server's reason, unless TimescaleDB was explicitly requested.
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
    try:
        with conn.transaction():  # a savepoint: a refusal must not abort the migration
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        if requested == StoragePath.TIMESCALEDB:
            raise
        reason = str(exc).strip().splitlines()[0]
        return PathChoice(StoragePath.POSTGRESQL, f"timescaledb not usable: {reason}")
    return PathChoice(StoragePath.TIMESCALEDB, "")


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

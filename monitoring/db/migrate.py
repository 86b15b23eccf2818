"""The monitoring's migration chain (monitoring/db/migrations), applied after the ingest's.

The monitoring owns its own tables (tokens, grants, sessions, KPI and integration daily tables,
evidence baselines, export deliveries) and the read-path indexes it adds to ingest tables for its
queries; the ingest's chain (ingest/db/migrations) owns everything the ingest writes. The runner is
the ingest's storage contract (``ingest.db.migrate``); docs/operations.md lists who owns what.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import psycopg

from ingest.db.migrate import INGEST_CHAIN, Chain, MigrationResult
from ingest.db.migrate import migrate as migrate_chains

MIGRATIONS_DIR: Final = Path(__file__).parent / "migrations"
MONITORING_CHAIN: Final = Chain(
    "monitoring",
    MIGRATIONS_DIR,
    "shulian monitoring migrate --db URL",
    requires=(INGEST_CHAIN,),
)
"""Needs the ingest's chain applied first (it reads the ingest's tables and indexes them)."""

ALL_CHAINS: Final = (INGEST_CHAIN, MONITORING_CHAIN)
"""Both chains in order: what a one-process site (``ingest run --with-monitoring``), the demo and
the tests apply."""


def migrate(url: str, requested_path: str = "auto") -> MigrationResult:
    """Apply the monitoring's chain at ``url`` (an owner of the schema, not the monitoring role).

    Raises:
        MigrationError: the ingest's chain is missing or behind (the message names
            ``shulian ingest migrate``), or a migration failed.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        return migrate_chains(conn, requested_path, (MONITORING_CHAIN,))


def migrate_all(conn: psycopg.Connection, requested_path: str = "auto") -> MigrationResult:
    """Apply the ingest's chain, then the monitoring's, in one transaction."""
    return migrate_chains(conn, requested_path, ALL_CHAINS)

"""The two migration chains against a real database: the ingest's first, the monitoring's after it.

`shulian monitoring migrate` refuses a database without the ingest's schema (naming the command
to run first) and changes nothing; a database migrated before the chains were split (every
version recorded without a chain) sees nothing new from either.
"""

from __future__ import annotations

import psycopg
import pytest
from typer.testing import CliRunner

from ingest.cli import app as ingest_app
from ingest.db.migrate import INGEST_CHAIN, migrate
from ingest.errors import MigrationError
from monitoring.db.cli import app as db_app
from monitoring.db.migrate import ALL_CHAINS, MONITORING_CHAIN, migrate_all

runner = CliRunner()


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def _chains(url: str) -> dict[int, str | None]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, chain FROM schema_migrations").fetchall()
    return {int(v): c for v, c in rows}


def test_monitoring_migrate_refuses_a_database_without_the_ingest_schema(pg_url: str):
    refused = runner.invoke(db_app, ["migrate", "--db", pg_url])
    assert refused.exit_code == 1
    assert "the ingest schema is not in this database" in refused.output
    assert "Run `shulian ingest migrate --db URL` against this database first" in refused.output
    assert _tables(pg_url) == set()  # one transaction: not even the bookkeeping tables


def test_ingest_then_monitoring_each_apply_their_own_chain(pg_url: str, storage_path: str):
    ingest = runner.invoke(ingest_app, ["migrate", "--db", pg_url])
    assert ingest.exit_code == 0, ingest.output
    assert f"storage path: {storage_path}" in ingest.output
    assert "applied 0003_telemetry" in ingest.output
    tables = _tables(pg_url)
    assert {"enterprises", "telemetry", "kpi_late_data", "config_versions"} <= tables
    assert not {"api_tokens", "web_sessions", "kpi_device_daily"} & tables

    monitoring = runner.invoke(db_app, ["migrate", "--db", pg_url])
    assert monitoring.exit_code == 0, monitoring.output
    assert "applied 0100_api_tokens.sql" in monitoring.output
    assert "applied 0003" not in monitoring.output
    assert {"api_tokens", "web_sessions", "kpi_device_daily", "export_deliveries"} <= _tables(
        pg_url
    )
    recorded = _chains(pg_url)
    assert {v for v, c in recorded.items() if c == "monitoring"} == {
        m.version for m in MONITORING_CHAIN.migrations()
    }
    again = runner.invoke(db_app, ["migrate", "--db", pg_url])
    assert "0 applied" in again.output

    # The ingest alone, later, is not confused by the monitoring's versions it does not know.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert migrate(conn, storage_path).applied == []


def test_a_database_migrated_before_the_split_sees_nothing_new(pg_url: str, storage_path: str):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate_all(conn, storage_path)
        # As the single chain left it: every version recorded, no chain column.
        conn.execute("ALTER TABLE schema_migrations DROP COLUMN chain")
        before = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        ingest_only = migrate(conn, storage_path)
        assert ingest_only.applied == []
        assert migrate(conn, storage_path, ALL_CHAINS).applied == []
        after = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert before == after
    assert None not in _chains(pg_url).values()


def test_an_unknown_version_of_a_chain_is_refused_and_one_of_another_chain_is_not(pg_url: str):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn, "auto", ALL_CHAINS)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, path, checksum, chain) "
            "VALUES (9001, 'future', 'all', '', 'monitoring')"
        )
        assert migrate(conn, "auto", (INGEST_CHAIN,)).applied == []
        with pytest.raises(MigrationError, match=r"monitoring migrations this code does not know"):
            migrate(conn, "auto", ALL_CHAINS)

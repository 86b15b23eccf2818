"""Migration files: naming, one file per version or one per storage path."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.db.migrate import INGEST_CHAIN, MIGRATIONS_DIR, discover, for_path
from ingest.db.timescale import StoragePath
from ingest.errors import MigrationError
from monitoring.db.migrate import MONITORING_CHAIN


def test_the_shipped_migrations_cover_both_paths_in_order():
    migrations = discover()
    for path in StoragePath:
        chosen = for_path(migrations, path)
        versions = [m.version for m in chosen]
        assert versions == sorted(set(versions))
        assert {1, 2, 3} <= set(versions)
        assert all(m.path in (None, path) for m in chosen)
    ingest_owned = [m for m in migrations if m.version < 100]
    assert all(m.file.parent == MIGRATIONS_DIR for m in ingest_owned)


# Who owns which version (docs/operations.md, "Migrations"). A version never changes chain again:
# databases recorded it, and the chain that claims it next must be the one that has the file.
INGEST_VERSIONS = {1, 2, 3, 4, 5, 6, 8, 101, 104, 106, 108, 120, 121}
MONITORING_VERSIONS = {100, 102, 103, 105, 107, 110, 111, 122}


def test_each_chain_has_its_owners_versions_and_none_is_shared():
    ingest = {m.version for m in INGEST_CHAIN.migrations()}
    monitoring = {m.version for m in MONITORING_CHAIN.migrations()}
    assert ingest >= INGEST_VERSIONS and monitoring >= MONITORING_VERSIONS
    assert not ingest & monitoring
    assert MONITORING_CHAIN.requires == (INGEST_CHAIN,)


def test_the_ingest_chain_creates_no_monitoring_table():
    """The ingest writes into every table its chain creates; the monitoring's tables are not
    there, so an ingest migrated alone has all it writes and nothing it does not."""
    ingest_sql = " ".join(m.sql for m in INGEST_CHAIN.migrations())
    for table in ("api_tokens", "data_grants", "web_sessions", "kpi_device_daily",
                  "integration_device_daily", "export_deliveries", "evidence_baselines"):  # fmt: skip
        assert f"CREATE TABLE {table} " not in ingest_sql
        assert any(f"CREATE TABLE {table} " in m.sql for m in MONITORING_CHAIN.migrations())


def test_badly_named_and_clashing_files_are_refused(tmp_path: Path):
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "1_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="not a migration file name"):
        discover(tmp_path)
    (tmp_path / "1_b.sql").unlink()
    (tmp_path / "0001_a.postgresql.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="version 0001 has clashing files"):
        discover(tmp_path)


def test_path_variants_are_picked_per_path(tmp_path: Path):
    (tmp_path / "0001_common.sql").write_text("SELECT 1;")
    (tmp_path / "0002_t.postgresql.sql").write_text("SELECT 2;")
    (tmp_path / "0002_t.timescaledb.sql").write_text("SELECT 3;")
    (tmp_path / "0003_only_ts.timescaledb.sql").write_text("SELECT 4;")
    found = discover(tmp_path)
    assert [m.file.name for m in for_path(found, StoragePath.POSTGRESQL)] == [
        "0001_common.sql",
        "0002_t.postgresql.sql",
    ]
    assert [m.file.name for m in for_path(found, StoragePath.TIMESCALEDB)] == [
        "0001_common.sql",
        "0002_t.timescaledb.sql",
        "0003_only_ts.timescaledb.sql",
    ]

"""Migration files: naming, one file per version or one per storage path."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.db.migrate import MIGRATIONS_DIR, discover, for_path
from ingest.db.timescale import StoragePath
from ingest.errors import MigrationError


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

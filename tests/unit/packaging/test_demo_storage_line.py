"""The demo's banner says which storage path it runs on, and why not TimescaleDB when it doesn't.

The TimescaleDB line itself is checked end to end in tests/e2e/test_demo.py (it reads the
extension's version from the database); these are the plain-PostgreSQL wordings.
"""

from __future__ import annotations

from ingest.db.timescale import PathChoice, StoragePath
from shulian.demo import NO_TIMESCALEDB_HINT, storage_line

UNUSED_URL = "postgresql://unused.invalid/none"  # the plain path's line reads no database


def test_without_the_extension_the_banner_falls_back_and_says_how_to_add_it() -> None:
    choice = PathChoice(StoragePath.POSTGRESQL, "timescaledb not available")

    line = storage_line(UNUSED_URL, choice, NO_TIMESCALEDB_HINT)

    assert line.startswith("plain PostgreSQL, TimescaleDB not used: TimescaleDB is not installed")
    assert "scripts/timescaledb install" in line


def test_an_older_plain_demo_database_is_named_with_the_way_to_start_over() -> None:
    choice = PathChoice(StoragePath.POSTGRESQL, "database created without timescaledb")

    line = storage_line(UNUSED_URL, choice, "")

    assert line == (
        "plain PostgreSQL, TimescaleDB not used: database created without timescaledb; "
        "--fresh starts over on TimescaleDB"
    )

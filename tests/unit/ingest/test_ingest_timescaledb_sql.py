"""The TimescaleDB path cannot run here (no package for this Debian), so its SQL is checked with
PostgreSQL's own parser (pglast wraps libpg_query) and against what TimescaleDB requires."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pglast = pytest.importorskip("pglast")

REPO = Path(__file__).resolve().parents[3]
MIGRATIONS = REPO / "ingest" / "db" / "migrations"
MONITORING_MIGRATIONS = REPO / "monitoring" / "db" / "migrations"
TIMESCALE = MIGRATIONS / "0003_telemetry.timescaledb.sql"
PLAIN = MIGRATIONS / "0003_telemetry.postgresql.sql"


@pytest.mark.parametrize(
    "path",
    sorted([*MIGRATIONS.glob("*.sql"), *MONITORING_MIGRATIONS.glob("*.sql")]),
    ids=lambda p: f"{p.parent.parent.parent.name}/{p.name}",
)
def test_every_migration_parses_as_postgresql(path: Path) -> None:
    assert pglast.parse_sql(path.read_text(encoding="utf-8"))


def _normalized(path: Path) -> str:
    """The file re-rendered by the parser (comments dropped), on one line."""
    rendered = pglast.prettify(path.read_text(encoding="utf-8"))
    return re.sub(r"\s*,\s*", ", ", re.sub(r"\s+", " ", rendered)).replace("( ", "(")


def test_both_paths_create_the_same_query_interface() -> None:
    """The monitoring module queries the same names on both paths."""

    def created(path: Path) -> set[str]:
        names = set()
        for stmt in pglast.parse_sql(path.read_text(encoding="utf-8")):
            node = stmt.stmt
            kind = type(node).__name__
            if kind == "CreateStmt":
                names.add(node.relation.relname)
            elif kind == "ViewStmt":
                names.add(node.view.relname)
            elif kind == "CreateTableAsStmt":
                names.add(node.into.rel.relname)
        return names

    interface = {
        "telemetry",
        "counter_increments",
        "telemetry_1m",
        "telemetry_1h",
        "counter_1m",
        "counter_1h",
    }
    assert interface <= created(TIMESCALE)
    assert interface <= created(PLAIN)


def test_hypertables_compression_and_realtime_aggregates_are_declared() -> None:
    sql = _normalized(TIMESCALE)
    for table in ("telemetry", "counter_increments"):
        assert f"create_hypertable('{table}', 'ts'" in sql
    assert sql.count("timescaledb.compress_segmentby = 'device_key, signal_id'") == 2
    # Since TimescaleDB 2.13 a continuous aggregate is materialized-only unless told otherwise;
    # the live dashboard needs the newest minutes, so every aggregate turns real-time on.
    assert sql.count("timescaledb.continuous") == 4
    assert sql.count("timescaledb.materialized_only = 'false'") == 4

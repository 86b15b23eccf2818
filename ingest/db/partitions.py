"""Plain-PostgreSQL partitions: create them ahead of the data, drop them whole for retention.

Daily partitions (UTC days) for raw telemetry, counter increments and 1-minute rollups; monthly
ones for 1-hour rollups. Partitions reach back over the replay horizon (limits.max_age_s), so a
replayed backlog always finds its partition, and ``storage.partitions_ahead_days`` ahead, so the
clock passing midnight never stalls a flush.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Final, Literal

import psycopg
from psycopg import sql

from ingest.settings import DAY_S, LimitsSettings, StorageSettings

log = logging.getLogger(__name__)

MAINTENANCE_LOCK_KEY: Final = 0x5348554C49414E04
_SUFFIX_RE: Final = re.compile(r"_p(\d{6}|\d{8})$")


@dataclass(frozen=True, slots=True)
class PartitionedTable:
    name: str
    unit: Literal["day", "month"]
    retention: str
    """The StorageSettings field giving its retention in days."""


TABLES: Final = (
    PartitionedTable("telemetry", "day", "retention_days"),
    PartitionedTable("counter_increments", "day", "retention_days"),
    PartitionedTable("rollup_1m", "day", "rollup_1m_retention_days"),
    PartitionedTable("counter_rollup_1m", "day", "rollup_1m_retention_days"),
    PartitionedTable("rollup_1h", "month", "rollup_1h_retention_days"),
    PartitionedTable("counter_rollup_1h", "month", "rollup_1h_retention_days"),
)


def partition_bounds(table: PartitionedTable, day: dt.date) -> tuple[str, dt.date, dt.date]:
    """Name and [from, to) dates of the partition of ``table`` that holds ``day``."""
    if table.unit == "day":
        return f"{table.name}_p{day:%Y%m%d}", day, day + dt.timedelta(days=1)
    first = day.replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    return f"{table.name}_p{first:%Y%m}", first, following


def ensure_partitions(
    conn: psycopg.Connection,
    storage: StorageSettings,
    limits: LimitsSettings,
    now: dt.datetime | None = None,
) -> list[str]:
    """Create every missing partition from the replay horizon to the days ahead; returns names."""
    now = now or dt.datetime.now(dt.UTC)
    first = (now - dt.timedelta(seconds=limits.max_age_s + DAY_S)).date()
    last = (now + dt.timedelta(days=storage.partitions_ahead_days)).date()
    created: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MAINTENANCE_LOCK_KEY,))
        conn.execute("SET LOCAL lock_timeout = '10s'")
        existing = _existing(conn)
        for table in TABLES:
            day = first
            while day <= last:
                name, lo, hi = partition_bounds(table, day)
                day = hi
                if name in existing.get(table.name, set()):
                    continue
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        sql.Identifier(name),
                        sql.Identifier(table.name),
                        sql.Literal(f"{lo.isoformat()} 00:00:00+00"),
                        sql.Literal(f"{hi.isoformat()} 00:00:00+00"),
                    )
                )
                created.append(name)
    if created:
        log.info("created %d partitions (%s .. %s)", len(created), created[0], created[-1])
    return created


def drop_expired_partitions(
    conn: psycopg.Connection, storage: StorageSettings, now: dt.datetime | None = None
) -> list[str]:
    """Drop partitions whose whole range is older than their table's retention."""
    now = now or dt.datetime.now(dt.UTC)
    dropped: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MAINTENANCE_LOCK_KEY,))
        conn.execute("SET LOCAL lock_timeout = '10s'")
        existing = _existing(conn)
        for table in TABLES:
            keep_from = (now - dt.timedelta(days=getattr(storage, table.retention))).date()
            for name in sorted(existing.get(table.name, set())):
                match = _SUFFIX_RE.search(name)
                if not match:
                    continue
                digits = match.group(1)
                start = dt.date(
                    int(digits[:4]), int(digits[4:6]), int(digits[6:]) if len(digits) == 8 else 1
                )
                _, _, end = partition_bounds(table, start)
                if end <= keep_from:
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                    dropped.append(name)
    if dropped:
        log.info("dropped %d expired partitions (%s .. %s)", len(dropped), dropped[0], dropped[-1])
    return dropped


def _existing(conn: psycopg.Connection) -> dict[str, set[str]]:
    rows = conn.execute(
        """
        SELECT parent.relname, child.relname
        FROM pg_inherits
        JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
        JOIN pg_class child ON child.oid = pg_inherits.inhrelid
        JOIN pg_namespace n ON n.oid = parent.relnamespace
        WHERE n.nspname = current_schema() AND parent.relname = ANY(%s)
        """,
        ([t.name for t in TABLES],),
    ).fetchall()
    existing: dict[str, set[str]] = {}
    for parent, child in rows:
        existing.setdefault(parent, set()).add(child)
    return existing

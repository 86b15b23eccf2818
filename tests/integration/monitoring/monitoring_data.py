"""Build a migrated monitoring database with a small constructed registry (tests import this)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import psycopg

from ingest.registry import sync_signals
from monitoring.auth import Role, create_token
from monitoring.db.migrate import migrate_all

# Tests write raw rows; the rollup views aggregate raw rows after materialized_to, so it is moved
# to the distant past and every partitioned table gets a default partition.
_PARTITIONED = ("telemetry", "counter_increments", "rollup_1m", "rollup_1h",
                "counter_rollup_1m", "counter_rollup_1h")  # fmt: skip

ENTERPRISES = [
    # id, name, district, segment, provider
    ("ent-a", "大连甲轴承有限公司", "210211", "345", "sp-1"),
    ("ent-b", "大连乙汽车部件有限公司", "210213", "367", None),
    ("ent-c", "大连丙齿轮有限公司", "210211", "345", None),
]
DEVICES = [
    # enterprise, device, machine kind, rated cycle
    ("ent-a", "lathe-1", "cnc_lathe", 30.0),
    ("ent-a", "grinder-1", "grinder", None),
    ("ent-a", "grinder-2", "grinder", None),
    ("ent-b", "press-1", "press", 4.0),
    ("ent-c", "hobber-1", "hobber", 90.0),
]


def prepare_schema(url: str, storage_path: str = "postgresql") -> None:
    """Both chains migrated; on the plain path (the default), with default partitions."""
    with psycopg.connect(url, autocommit=True) as conn:
        migrate_all(conn, storage_path)
        if storage_path == "timescaledb":  # hypertables make their chunks as rows arrive
            sync_signals(conn)
            return
        for table in _PARTITIONED:
            conn.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        conn.execute(
            "UPDATE rollup_state SET materialized_to = '2000-01-01', pending_to = '2000-01-01'"
        )
        sync_signals(conn)


def seed_registry(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO service_providers (id, name) VALUES ('sp-1', '大连数联科技')")
        for ent, name, district, segment, provider in ENTERPRISES:
            conn.execute(
                """INSERT INTO enterprises (id, name, district_id, segment_code, service_provider_id,
                       above_designated_size, specialized) VALUES (%s, %s, %s, %s, %s, true, %s)""",
                (ent, name, district, segment, provider, ent == "ent-a"),
            )
            conn.execute(
                "INSERT INTO gateways (id, enterprise_id) VALUES (%s, %s)", (f"gw-{ent}", ent)
            )
        for ent, dev, kind, rated in DEVICES:
            conn.execute(
                """INSERT INTO devices (enterprise_id, device_id, gateway_id, name, profile,
                       machine_kind, line, rated_cycle_s) VALUES (%s, %s, %s, %s, %s, %s, 'L1', %s)""",
                (ent, dev, f"gw-{ent}", dev.upper(), f"{kind}.yaml", kind, rated),
            )


def device_key(url: str, enterprise: str, device: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT key FROM devices WHERE enterprise_id = %s AND device_id = %s",
            (enterprise, device),
        ).fetchone()
    assert row is not None
    return int(row[0])


def signal_id(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT id FROM signals WHERE name = %s", (name,)).fetchone()
    assert row is not None, name
    return int(row[0])


def issue_tokens(url: str) -> dict[str, str]:
    """One token per role binding used by the matrix."""

    async def work() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            made = {
                "admin": await create_token(conn, Role.ADMIN),
                "bureau": await create_token(conn, Role.BUREAU),
                "ent-a": await create_token(conn, Role.ENTERPRISE, enterprise="ent-a"),
                "ent-b": await create_token(conn, Role.ENTERPRISE, enterprise="ent-b"),
                "provider": await create_token(conn, Role.PROVIDER, provider="sp-1"),
            }
            return {k: v.secret for k, v in made.items()}

    return asyncio.run(work())


def add_interval(
    conn: psycopg.Connection[Any], key: int, state: str, start: datetime, end: datetime | None
) -> None:
    conn.execute(
        "INSERT INTO state_intervals (device_key, state, started_at, ended_at) VALUES (%s, %s, %s, %s)",
        (key, state, start, end),
    )


def set_state(
    conn: psycopg.Connection[Any], key: int, state: str, since: datetime, last: datetime
) -> None:
    conn.execute(
        """INSERT INTO device_states (device_key, state, since, last_ts) VALUES (%s, %s, %s, %s)
           ON CONFLICT (device_key) DO UPDATE SET state = EXCLUDED.state, since = EXCLUDED.since,
               last_ts = EXCLUDED.last_ts""",
        (key, state, since, last),
    )


def set_current(
    conn: psycopg.Connection[Any],
    key: int,
    signal: str,
    ts: datetime,
    value: float | None,
    text: str | None = None,
) -> None:
    conn.execute(
        """INSERT INTO current_values (device_key, signal_id, ts, value, value_text, quality)
           VALUES (%s, %s, %s, %s, %s, 0)
           ON CONFLICT (device_key, signal_id) DO UPDATE SET ts = EXCLUDED.ts,
               value = EXCLUDED.value, value_text = EXCLUDED.value_text""",
        (key, signal_id(conn, signal), ts, value, text),
    )


def add_increment(
    conn: psycopg.Connection[Any],
    key: int,
    signal: str,
    ts: datetime,
    increase: float,
    event: int = 0,
) -> None:
    """A counter increment as the ingest's counter logic stores it (event 1 reset, 2 wrap)."""
    conn.execute(
        """INSERT INTO counter_increments (ts, increase, device_key, signal_id, event)
           VALUES (%s, %s, %s, %s, %s)""",
        (ts, increase, key, signal_id(conn, signal), event),
    )

"""Read the registry (segments, districts, enterprises, gateways, devices) for the API."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from monitoring.api.access import Reach
from monitoring.auth import Principal, Role

FLAG_COLUMNS = ("above_designated_size", "specialized", "little_giant")
FLAG_NAMES = {
    "above_designated_size": "above_size",
    "specialized": "specialized",
    "little_giant": "little_giant",
}


async def fetch_all(
    conn: AsyncConnection[Any], sql: str, params: Any = None
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql, params)
    return list(await cur.fetchall())


async def fetch_one(
    conn: AsyncConnection[Any], sql: str, params: Any = None
) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql, params)
    return await cur.fetchone()


async def load_reach(conn: AsyncConnection[Any], principal: Principal) -> Reach:
    """The enterprises a provider serves, and those that granted the bureau their device data."""
    served: frozenset[str] = frozenset()
    granted: frozenset[str] = frozenset()
    if principal.role is Role.PROVIDER and principal.provider:
        served = await served_by(conn, principal.provider)
    if principal.role is Role.BUREAU:
        rows = await fetch_all(conn, "SELECT enterprise FROM data_grants WHERE grantee = 'bureau'")
        granted = frozenset(r["enterprise"] for r in rows)
    return Reach(served=served, granted=granted)


def flags_of(row: dict[str, Any]) -> list[str]:
    return [FLAG_NAMES[c] for c in FLAG_COLUMNS if row.get(c)]


async def segments(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    return await fetch_all(
        conn, "SELECT code, name_zh AS name, name_en FROM segments ORDER BY code"
    )


async def segment(conn: AsyncConnection[Any], code: str) -> dict[str, Any] | None:
    return await fetch_one(
        conn, "SELECT code, name_zh AS name, name_en FROM segments WHERE code = %s", (code,)
    )


async def districts(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    return await fetch_all(
        conn, "SELECT id AS code, name_zh AS name, name_en FROM districts ORDER BY id"
    )


async def district(conn: AsyncConnection[Any], code: str) -> dict[str, Any] | None:
    return await fetch_one(
        conn, "SELECT id AS code, name_zh AS name, name_en FROM districts WHERE id = %s", (code,)
    )


_ENTERPRISE_SELECT = """
SELECT e.id, e.name, e.name_en, e.district_id AS district, d.name_zh AS district_name,
       d.name_en AS district_name_en, e.segment_code AS segment, s.name_zh AS segment_name,
       s.name_en AS segment_name_en, e.above_designated_size, e.specialized, e.little_giant,
       e.service_provider_id AS service_provider, e.credit_code
FROM enterprises e
LEFT JOIN districts d ON d.id = e.district_id
LEFT JOIN segments s ON s.code = e.segment_code
"""


def _enterprise_out(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in FLAG_COLUMNS}
    out["flags"] = flags_of(row)
    return out


async def enterprises(
    conn: AsyncConnection[Any],
    *,
    only: frozenset[str] | None = None,
    segment: str | None = None,
    district: str | None = None,
) -> list[dict[str, Any]]:
    """Enterprises, optionally limited to ids in ``only`` and to one segment or district."""
    rows = await fetch_all(
        conn,
        _ENTERPRISE_SELECT
        + """WHERE (%(only)s::text[] IS NULL OR e.id = ANY(%(only)s::text[]))
               AND (%(segment)s::text IS NULL OR e.segment_code = %(segment)s)
               AND (%(district)s::text IS NULL OR e.district_id = %(district)s)
             ORDER BY e.id""",
        {
            "only": sorted(only) if only is not None else None,
            "segment": segment,
            "district": district,
        },
    )
    return [_enterprise_out(r) for r in rows]


async def provider(conn: AsyncConnection[Any], provider_id: str) -> dict[str, Any] | None:
    return await fetch_one(
        conn, "SELECT id, name FROM service_providers WHERE id = %s", (provider_id,)
    )


async def served_by(conn: AsyncConnection[Any], provider_id: str) -> frozenset[str]:
    """The enterprises that chose ``provider_id`` as their service provider."""
    rows = await fetch_all(
        conn, "SELECT id FROM enterprises WHERE service_provider_id = %s", (provider_id,)
    )
    return frozenset(r["id"] for r in rows)


async def enterprise(conn: AsyncConnection[Any], enterprise_id: str) -> dict[str, Any] | None:
    row = await fetch_one(conn, _ENTERPRISE_SELECT + "WHERE e.id = %s", (enterprise_id,))
    return _enterprise_out(row) if row else None


async def device(
    conn: AsyncConnection[Any], enterprise_id: str, device_id: str
) -> dict[str, Any] | None:
    return await fetch_one(
        conn,
        """SELECT dv.key, dv.device_id AS id, dv.enterprise_id AS enterprise,
                  e.name AS enterprise_name, e.name_en AS enterprise_name_en,
                  dv.gateway_id AS gateway, dv.name, dv.profile,
                  dv.machine_kind, dv.line, dv.rated_cycle_s, dv.connection, dv.last_seen_at
           FROM devices dv JOIN enterprises e ON e.id = dv.enterprise_id
           WHERE dv.enterprise_id = %s AND dv.device_id = %s""",
        (enterprise_id, device_id),
    )


_GATEWAYS_SELECT: Final = """SELECT g.enterprise_id, g.id, g.online, g.status_at, g.started_at,
       g.last_seen_at, g.version, g.config_hash, g.buffer_dropped_samples,
       (SELECT count(*) FROM devices d
        WHERE d.enterprise_id = g.enterprise_id AND d.gateway_id = g.id) AS devices
FROM gateways g WHERE g.enterprise_id = ANY(%s::text[]) ORDER BY g.enterprise_id, g.id"""


async def gateways(conn: AsyncConnection[Any], enterprise_id: str) -> list[dict[str, Any]]:
    return (await gateways_of(conn, [enterprise_id])).get(enterprise_id, [])


async def gateways_of(
    conn: AsyncConnection[Any], enterprise_ids: Collection[str]
) -> dict[str, list[dict[str, Any]]]:
    """The gateways of several enterprises in one query, by enterprise (none: no key)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for row in await fetch_all(conn, _GATEWAYS_SELECT, (list(enterprise_ids),)):
        found.setdefault(row.pop("enterprise_id"), []).append(row)
    return found


async def profiles_of(conn: AsyncConnection[Any], enterprise_id: str) -> list[dict[str, Any]]:
    """The profiles the enterprise's devices use, with how many devices use each."""
    return await fetch_all(
        conn,
        """SELECT d.profile AS name, coalesce(p.machine_kind, '') AS machine_kind,
                  coalesce(p.protocol, '') AS protocol, coalesce(p.description, '') AS description,
                  count(*) AS devices
           FROM devices d LEFT JOIN profiles p ON p.name = d.profile
           WHERE d.enterprise_id = %s AND d.profile <> ''
           GROUP BY d.profile, p.machine_kind, p.protocol, p.description ORDER BY d.profile""",
        (enterprise_id,),
    )


async def is_granted(conn: AsyncConnection[Any], enterprise_id: str) -> bool:
    row = await fetch_one(
        conn,
        "SELECT 1 AS ok FROM data_grants WHERE enterprise = %s AND grantee = 'bureau'",
        (enterprise_id,),
    )
    return row is not None


async def set_grant(
    conn: AsyncConnection[Any], enterprise_id: str, granted: bool, token_id: int
) -> None:
    if granted:
        await conn.execute(
            """INSERT INTO data_grants (enterprise, grantee, granted_by) VALUES (%s, 'bureau', %s)
               ON CONFLICT (enterprise, grantee) DO NOTHING""",
            (enterprise_id, token_id),
        )
    else:
        await conn.execute(
            "DELETE FROM data_grants WHERE enterprise = %s AND grantee = 'bureau'", (enterprise_id,)
        )

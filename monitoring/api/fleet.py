"""The fleet console's data: every gateway of a service provider's enterprises (admin: all), its
health from the gateway's own status and metrics messages, and its devices' connections.

The figures come from what the ingest already stores per gateway (``gateways``: status, version,
the last GatewayMetrics figures as JSON) and per device (``devices``: the last DeviceStatus), so
the console needs no table of its own. A gateway's problems are decided here, once, so that the
page, the filter and the API agree on which gateway "stands out".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection

from monitoring.api import registry
from monitoring.api.deps import Caller
from monitoring.api.registry import fetch_all
from monitoring.api.scopes import Scope, require_scope
from wire.payloads import DEVICE_READ_RATE

ALL: Final = "all"
"""The fleet key of every gateway (admin only)."""

QUIET_S: Final = 120.0
"""An online gateway from which nothing (data, status, metrics) arrived for this long went quiet:
its gateway publishes metrics every 10 s and batches every few seconds, so two minutes of silence
is a stuck gateway or a cut link the broker has not noticed yet (keep-alive up to 90 s)."""

BUFFER_FULL_RATIO: Final = 0.5
BUFFER_OLD_S: Final = 300.0
"""A buffer half full, or holding a sample older than five minutes, is filling: the gateway
cannot deliver, and the bound drops the oldest samples once it is reached."""

PROBLEMS: Final = ("offline", "quiet", "buffer", "dropped", "device", "config")


async def fleet_page(
    conn: AsyncConnection[Any], caller: Caller, key: str, now: datetime
) -> dict[str, Any]:
    """Every gateway the caller may run from the console, with its devices and problems."""
    await require_scope(conn, caller, Scope("fleet", key))
    only = None if key == ALL else sorted(await registry.served_by(conn, key))
    gateways = await _gateways(conn, only)
    devices = await _devices(conn, only)
    by_gateway: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for device in devices:
        by_gateway.setdefault((device["enterprise_id"], device["gateway_id"]), []).append(device)
    rows = []
    for gateway in gateways:
        figures = gateway.pop("metrics") or {}
        mine = by_gateway.get((gateway["enterprise_id"], gateway["id"]), [])
        for device in mine:
            device["reads_per_s"] = figures.get(DEVICE_READ_RATE + device["id"])
            del device["enterprise_id"], device["gateway_id"]
        row = {**gateway, **_buffer(figures), **_config(gateway), "devices": mine}
        row["problems"] = problems(row, now)
        rows.append(row)
    return {"as_of": now.isoformat(), "fleet": key, "gateways": rows}


def _buffer(figures: dict[str, float]) -> dict[str, Any]:
    max_bytes = figures.get("buffer_max_bytes") or 0
    size = figures.get("buffer_bytes")
    return {
        "buffer_samples": _int(figures.get("buffer_samples")),
        "buffer_bytes": _int(size),
        "buffer_fill": round(size / max_bytes, 4) if size is not None and max_bytes else None,
        "buffer_oldest_age_s": figures.get("buffer_oldest_age_s"),
        "points_read_per_s": figures.get("points_read_per_s"),
    }


def _config(gateway: dict[str, Any]) -> dict[str, Any]:
    """Remote configuration (docs/remote-config.md): the revision in force, the newest one the
    gateway applied, and, when its newest report refused a revision, that refusal's messages."""
    last = gateway.pop("config_last_report")
    refused = last is not None and last["status"] == "refused"
    return {
        "config_refusal": {"revision": last["revision"], "messages": last["messages"]}
        if refused
        else None
    }


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def problems(gateway: dict[str, Any], now: datetime) -> list[str]:
    """What makes a gateway stand out, in PROBLEMS order (empty: healthy)."""
    found = []
    if not gateway["online"]:
        found.append("offline")
    elif gateway["last_heard_at"] is None or (
        (now - gateway["last_heard_at"]).total_seconds() > QUIET_S
    ):
        found.append("quiet")
    fill, age = gateway["buffer_fill"], gateway["buffer_oldest_age_s"]
    if (fill is not None and fill >= BUFFER_FULL_RATIO) or (
        age is not None and age >= BUFFER_OLD_S
    ):
        found.append("buffer")
    if gateway["buffer_dropped_samples"]:
        found.append("dropped")
    if any(d["connection"] != "connected" or d["error"] for d in gateway["devices"]):
        found.append("device")
    if gateway["config_refusal"] is not None:
        found.append("config")
    return found


async def _gateways(conn: AsyncConnection[Any], only: list[str] | None) -> list[dict[str, Any]]:
    return await fetch_all(
        conn,
        """SELECT g.enterprise_id, e.name AS enterprise_name, e.name_en AS enterprise_name_en,
                  g.id, g.online, g.status_at AS since, g.version, g.config_hash,
                  g.buffer_dropped_samples, g.metrics, g.metrics_at,
                  greatest(g.last_seen_at, g.status_at, g.metrics_at) AS last_heard_at,
                  assigned.id AS config_assigned, applied.revision AS config_applied,
                  to_jsonb(report) AS config_last_report
           FROM gateways g JOIN enterprises e ON e.id = g.enterprise_id
           LEFT JOIN LATERAL (
               SELECT a.id FROM config_assignments a
               WHERE a.enterprise_id = g.enterprise_id AND a.gateway_id = g.id
                 AND a.refused_at IS NULL
               ORDER BY a.id DESC LIMIT 1) assigned ON true
           LEFT JOIN LATERAL (
               SELECT r.revision FROM config_reports r
               WHERE r.enterprise_id = g.enterprise_id AND r.gateway_id = g.id
                 AND r.status = 'applied'
               ORDER BY r.id DESC LIMIT 1) applied ON true
           LEFT JOIN LATERAL (
               SELECT r.revision, r.status, r.messages FROM config_reports r
               WHERE r.enterprise_id = g.enterprise_id AND r.gateway_id = g.id
               ORDER BY r.id DESC LIMIT 1) report ON true
           WHERE %(all)s OR g.enterprise_id = ANY(%(only)s)
           ORDER BY g.enterprise_id, g.id""",
        {"all": only is None, "only": only or []},
    )


async def _devices(conn: AsyncConnection[Any], only: list[str] | None) -> list[dict[str, Any]]:
    return await fetch_all(
        conn,
        """SELECT d.enterprise_id, d.gateway_id, d.device_id AS id, d.name, d.profile,
                  coalesce(d.connection, 'unknown') AS connection, d.connection_at,
                  d.last_good_at, d.connection_error AS error
           FROM devices d
           WHERE d.gateway_id IS NOT NULL AND (%(all)s OR d.enterprise_id = ANY(%(only)s))
           ORDER BY d.enterprise_id, d.gateway_id, d.device_id""",
        {"all": only is None, "only": only or []},
    )


async def dead_letters(
    conn: AsyncConnection[Any], caller: Caller, key: str, limit: int
) -> dict[str, Any]:
    """The newest dead letters of the fleet's gateways, with their reasons (no payloads)."""
    await require_scope(conn, caller, Scope("fleet", key))
    only = None if key == ALL else sorted(await registry.served_by(conn, key))
    rows = await fetch_all(
        conn,
        """SELECT id, received_at, reason, scope, topic, enterprise_id, gateway_id, samples,
                  detail
           FROM dead_letters
           WHERE gateway_id IS NOT NULL AND (%(all)s OR enterprise_id = ANY(%(only)s))
           ORDER BY received_at DESC, id DESC LIMIT %(limit)s""",
        {"all": only is None, "only": only or [], "limit": limit},
    )
    return {"fleet": key, "dead_letters": rows}

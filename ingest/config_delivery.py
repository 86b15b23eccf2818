"""Deliver remote configuration (docs/remote-config.md) and record what the gateways answered.

Every second the ingest compares, per gateway, the assignment in force with the revision it last
published; a difference is published retained on the gateway's ``config`` topic (QoS 1), so a
gateway that is offline now receives it when it connects. The API only writes rows; delivery
lives here because the ingest holds the broker connection, and an API process need not.

A gateway's answer (``config/report``) is stored in ``config_reports`` as it comes; a malformed
one is logged with its topic and dropped (it holds no measurement to lose).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import psycopg
import psycopg_pool
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from ingest.decode import Incoming
from wire import topics
from wire.payloads import ConfigBundle, ConfigFile, ConfigReport, bundle_hash

log = logging.getLogger(__name__)

INTERVAL_S: Final = 1.0
Publish = Callable[[str, bytes], None]
"""Publish retained at QoS 1 (``Consumer.publish_retained``)."""

_PENDING: Final = """
    SELECT a.enterprise_id, a.gateway_id, max(a.id) AS revision
    FROM config_assignments a
    WHERE a.refused_at IS NULL
    GROUP BY a.enterprise_id, a.gateway_id
    HAVING max(a.id) IS DISTINCT FROM (
        SELECT d.revision FROM config_deliveries d
        WHERE d.enterprise_id = a.enterprise_id AND d.gateway_id = a.gateway_id)
"""

_CLEARED: Final = """
    SELECT d.enterprise_id, d.gateway_id FROM config_deliveries d
    WHERE d.revision IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM config_assignments a
        WHERE a.enterprise_id = d.enterprise_id AND a.gateway_id = d.gateway_id
          AND a.refused_at IS NULL)
"""
"""Gateways whose every assignment was refused: their retained bundle must go (an empty retained
message clears it; the gateway keeps running its last good configuration)."""


class ConfigDelivery:
    """A thread publishing assignments as they change; ``report`` stores a gateway's answer."""

    def __init__(self, pool: psycopg_pool.ConnectionPool[Any], publish: Publish) -> None:
        self.pool = pool
        self.publish = publish
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-config", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            try:
                self.deliver_pending()
            except Exception:  # the thread boundary: delivery retries on the next tick
                log.exception("configuration delivery failed; retrying")

    def deliver_pending(self) -> int:
        """Publish every gateway's assignment that differs from what was published; how many."""
        with self.pool.connection() as conn:
            pending = conn.execute(_PENDING).fetchall()
            cleared = conn.execute(_CLEARED).fetchall()
        for enterprise, gateway in cleared:
            pending.append((enterprise, gateway, None))
        for enterprise, gateway, revision in pending:
            payload = b"" if revision is None else self._bundle(enterprise, gateway)
            if payload is None:
                continue
            self.publish(topics.config(enterprise, gateway), payload)
            with self.pool.connection() as conn:
                conn.execute(
                    """INSERT INTO config_deliveries (enterprise_id, gateway_id, revision)
                       VALUES (%s, %s, %s) ON CONFLICT (enterprise_id, gateway_id)
                       DO UPDATE SET revision = EXCLUDED.revision, published_at = clock_timestamp()""",
                    (enterprise, gateway, revision),
                )
            log.info(
                "configuration published",
                extra={"enterprise": enterprise, "gateway": gateway, "revision": revision},
            )
        return len(pending)

    def _bundle(self, enterprise: str, gateway: str) -> bytes | None:
        with self.pool.connection() as conn:
            bundle = bundle_for(conn, enterprise, gateway, int(time.time() * 1000))
        return None if bundle is None else bundle.model_dump_json().encode()

    def report(self, incoming: Incoming) -> None:
        """Store a gateway's ConfigReport; the topic names the enterprise and gateway."""
        try:
            topic = topics.parse_topic(incoming.topic)
            report = ConfigReport.model_validate_json(incoming.payload)
        except (topics.TopicError, ValidationError) as exc:
            log.warning(
                "configuration report dropped", extra={"topic": incoming.topic, "error": str(exc)}
            )
            return
        if report.gateway != topic.gateway:
            log.warning(
                "configuration report dropped: gateway %r in a message on %r",
                report.gateway,
                incoming.topic,
            )
            return
        with self.pool.connection() as conn:
            conn.execute(
                """INSERT INTO config_reports (enterprise_id, gateway_id, revision, status, sha256,
                       messages, restarted, reported_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, to_timestamp(%s / 1000.0))""",
                (
                    topic.enterprise,
                    topic.gateway,
                    report.revision,
                    report.status,
                    report.sha256,
                    Jsonb(report.messages),
                    Jsonb(report.restarted),
                    report.ts_ms,
                ),
            )
        log.info(
            "configuration report",
            extra={"gateway": topic.gateway, "revision": report.revision, "status": report.status},
        )


_IN_FORCE: Final = """
    SELECT a.id, a.enterprise_id, v.name, v.kind, v.version, v.sha256, v.content
    FROM (SELECT id, enterprise_id, version_ids FROM config_assignments
          WHERE enterprise_id = %s AND gateway_id = %s AND refused_at IS NULL
          ORDER BY id DESC LIMIT 1) a
    LEFT JOIN config_versions v ON v.id = ANY(a.version_ids)
    ORDER BY v.name
"""
"""The files of the newest assignment the gateway's enterprise did not refuse (the API writes the
assignments: monitoring/api/remote_config.py; what a gateway receives is wire's ConfigBundle)."""


def bundle_for(
    conn: psycopg.Connection[Any], enterprise: str, gateway: str, now_ms: int
) -> ConfigBundle | None:
    """The wire bundle of the assignment in force for ``gateway`` (None: nothing assigned)."""
    rows = conn.execute(_IN_FORCE, (enterprise, gateway)).fetchall()
    if not rows:
        return None
    files = [
        ConfigFile(name=name, kind=kind, version=version, sha256=sha256, content=content)
        for _, _, name, kind, version, sha256, content in rows
        if name is not None  # an assignment of no files still is one (LEFT JOIN)
    ]
    revision, owner = rows[0][0], rows[0][1]
    return ConfigBundle(
        gateway=gateway,
        enterprise=owner,
        revision=revision,
        ts_ms=now_ms,
        files=files,
        sha256=bundle_hash(files),
    )


def is_report(topic: str) -> bool:
    return topic.startswith(f"{topics.NAMESPACE}/") and topic.endswith("/config/report")


__all__ = ["ConfigDelivery", "bundle_for", "is_report"]

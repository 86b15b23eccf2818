"""Background upkeep: rollup refreshes, partitions, retention of ledger and dead letters, registry reload.

One thread per worker; every job is safe to run from several workers at once (advisory locks,
idempotent statements). A failing job logs, marks the database down and is retried next period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import psycopg_pool

from ingest.db.partitions import drop_expired_partitions, ensure_partitions
from ingest.db.rollups import refresh_rollups
from ingest.db.timescale import StoragePath
from ingest.metrics import IngestMetrics
from ingest.registry import RegistryCache
from ingest.settings import DAY_S, IngestSettings

log = logging.getLogger(__name__)

PRUNE_BATCH = 50_000


@dataclass(slots=True)
class _Job:
    name: str
    every_s: float
    run: Callable[[psycopg.Connection], None]
    next_mono: float = 0.0


class Maintenance:
    def __init__(
        self,
        settings: IngestSettings,
        pool: psycopg_pool.ConnectionPool,
        registry: RegistryCache,
        metrics: IngestMetrics,
        path: StoragePath,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.registry = registry
        self.metrics = metrics
        self.path = path
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-maintenance", daemon=True)
        storage = settings.storage
        now = time.monotonic()
        self.jobs = [
            _Job(
                "registry reload",
                settings.registry.refresh_s,
                self._reload_registry,
                now + settings.registry.refresh_s,
            ),
            _Job("retention", storage.maintenance_interval_s, self._retention, now),
        ]
        if path is StoragePath.POSTGRESQL:
            self.jobs += [
                _Job("partitions", storage.maintenance_interval_s, self._partitions, now),
                _Job("rollup refresh", storage.rollup_refresh_s, self._refresh, now),
            ]

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def run_job(self, name: str) -> None:
        """Run one job now, in the caller's thread (tests, and a flush missing its partition)."""
        job = next(j for j in self.jobs if j.name == name)
        with self.pool.connection() as conn:
            job.run(conn)

    def ensure_partitions_now(self) -> None:
        if self.path is StoragePath.POSTGRESQL:
            try:
                self.run_job("partitions")
            except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                log.warning("could not create partitions: %s", exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for job in self.jobs:
                if self._stop.is_set():
                    return
                if job.next_mono > now:
                    continue
                job.next_mono = now + job.every_s
                try:
                    with self.pool.connection(timeout=self.settings.db.pool_timeout_s) as conn:
                        job.run(conn)
                except Exception as exc:  # task boundary: log, retry next period
                    log.warning("maintenance job %s failed: %s", job.name, exc)
            wait_s = max(0.05, min(j.next_mono for j in self.jobs) - time.monotonic())
            self._wake.wait(wait_s)
            self._wake.clear()

    def _reload_registry(self, conn: psycopg.Connection) -> None:
        self.registry.load(conn)
        conn.commit()

    def _refresh(self, conn: psycopg.Connection) -> None:
        stats = refresh_rollups(conn, self.settings.storage.rollup_grace_s)
        if stats and (stats.invalidations or stats.hour_ranges):
            log.debug("rollups materialized to %s (%s)", stats.materialized_to, stats)

    def _partitions(self, conn: psycopg.Connection) -> None:
        ensure_partitions(conn, self.settings.storage, self.settings.limits)
        drop_expired_partitions(conn, self.settings.storage)

    def _retention(self, conn: psycopg.Connection) -> None:
        storage = self.settings.storage
        for table, column, days in (
            ("batch_ledger", "committed_at", storage.ledger_retention_days),
            ("dead_letters", "received_at", storage.dead_letter_retention_days),
            ("dead_letter_windows", "minute", storage.dead_letter_retention_days),
        ):
            total = 0
            while not self._stop.is_set():
                with conn.transaction():
                    deleted = conn.execute(
                        f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} "
                        f"WHERE {column} < now() - %s * interval '1 second' LIMIT %s))",
                        (days * DAY_S, PRUNE_BATCH),
                    ).rowcount
                total += deleted
                if deleted < PRUNE_BATCH:
                    break
            if total:
                log.info("pruned %d rows of %s older than %g days", total, table, days)

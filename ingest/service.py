"""The ingest service's composition root: settings -> schema, pool, registry, lanes, consumer.

``IngestService.start()`` migrates the schema (waiting for the database if it is not up yet),
then starts the writer lanes, the maintenance thread and the MQTT consumer; ``stop()`` lets each
lane finish and acknowledge its current flush, leaves the rest unacknowledged, and disconnects.
``run_service`` adds signal handling and, when ``api.enabled``, serves the ingest's own HTTP
endpoint (``/metrics``, ``/api/ingest/health``: ingest/http.py); a host may serve instead (the
monitoring in the same process, shulian/hosting.py).
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Final

import psycopg
import psycopg_pool

from ingest.config_delivery import ConfigDelivery, is_report
from ingest.consumer import Consumer, lane_of
from ingest.db.migrate import INGEST_CHAIN, Chain, MigrationResult, migrate
from ingest.db.partitions import ensure_partitions
from ingest.db.timescale import StoragePath, apply_policies
from ingest.decode import Incoming
from ingest.errors import ConfigError, StorageError
from ingest.maintenance import Maintenance
from ingest.metrics import IngestMetrics
from ingest.registry import RegistryCache, sync_signals
from ingest.settings import IngestSettings
from ingest.sparkplug import BirthStore, SparkplugHost, check_tenancy, load_mapping
from ingest.sparkplug import subscriptions as sparkplug_subscriptions
from ingest.writer import CommitListener, Lane, Writer, prepare_connection

log = logging.getLogger(__name__)


def prepare_database(
    settings: IngestSettings, *, wait_s: float = 0.0, chains: Sequence[Chain] = (INGEST_CHAIN,)
) -> MigrationResult:
    """Migrate, sync the signal vocabulary, and set up the storage path's partitions or policies.

    ``chains``: the ingest's migrations, and the monitoring's after them when this process also
    serves the monitoring (its chain comes from the caller: the ingest never imports it).
    Retries for up to ``wait_s`` while the database is unreachable (containers start in any order).
    """
    deadline = time.monotonic() + wait_s
    delay = 0.5
    while True:
        try:
            with psycopg.connect(
                settings.db.url.get_secret_value(),
                autocommit=True,
                connect_timeout=max(1, int(settings.db.connect_timeout_s)),
            ) as conn:
                result = migrate(conn, settings.storage.path, chains)
                log.info(result.choice.describe())
                sync_signals(conn)
                if result.choice.path is StoragePath.TIMESCALEDB:
                    apply_policies(conn, settings.storage, settings.limits)
                else:
                    conn.autocommit = False
                    ensure_partitions(conn, settings.storage, settings.limits)
                return result
        except psycopg.OperationalError as exc:
            if time.monotonic() + delay > deadline:
                raise StorageError(
                    f"cannot reach the database: {str(exc).strip().splitlines()[0]}",
                    hint="Check db.url / DATABASE_URL and that PostgreSQL is running",
                    cause=exc,
                ) from exc
            log.warning(
                "database not reachable yet (%s); retrying", str(exc).strip().splitlines()[0]
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class IngestService:
    """Everything that runs in one ingest worker, started and stopped together."""

    def __init__(
        self,
        settings: IngestSettings,
        metrics: IngestMetrics | None = None,
        *,
        settle_heap: bool = False,
        chains: Sequence[Chain] = (INGEST_CHAIN,),
    ) -> None:
        """``settle_heap``: tune the process's garbage collector once started (``settle_heap``
        below); the ingest process does, an embedding test need not. ``chains``: the migration
        chains ``start`` applies (``prepare_database``)."""
        self.settings = settings
        self.chains = tuple(chains)
        self.settle_heap = settle_heap
        self.metrics = metrics or IngestMetrics()
        self.registry = RegistryCache()
        self.pool: psycopg_pool.ConnectionPool | None = None
        self.writer: Writer | None = None
        self.lanes: list[Lane] = []
        self.consumer: Consumer | None = None
        self.config_delivery: ConfigDelivery | None = None
        self.sparkplug: SparkplugHost | None = None
        self.maintenance: Maintenance | None = None
        self.storage_path: StoragePath | None = None
        self._listeners: list[CommitListener] = []
        self._backlog_thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call ``listener`` after every commit (benchmarks and tests measure with it)."""
        self._listeners.append(listener)
        if self.writer is not None:
            self.writer.listeners.append(listener)

    def start(self, *, wait_for_db_s: float = 60.0) -> None:
        settings = self.settings
        # First, so unreadable TLS files stop start-up before anything else runs.
        mapping = (
            load_mapping(settings.sparkplug.mapping_file)
            if settings.sparkplug.mapping_file
            else None
        )
        extra = [(t, 1) for t in sparkplug_subscriptions()] if mapping else None
        host = settings.sparkplug.host_id
        consumer = Consumer(
            settings.mqtt,
            self._route,
            self.metrics,
            extra,
            host_state_topic=f"spBv1.0/STATE/{host}" if mapping and host else None,
        )
        result = prepare_database(settings, wait_s=wait_for_db_s, chains=self.chains)
        self.storage_path = result.choice.path
        self.pool = psycopg_pool.ConnectionPool(
            settings.db.url.get_secret_value(),
            min_size=settings.db.pool_min,
            max_size=settings.db.pool_max,
            kwargs={"connect_timeout": max(1, int(settings.db.connect_timeout_s))},
            check=psycopg_pool.ConnectionPool.check_connection,
            configure=prepare_connection,
            name="shulian-ingest",
            open=False,
        )
        self.pool.open(wait=True, timeout=settings.db.pool_timeout_s)
        with self.pool.connection() as conn:
            if mapping is not None:
                try:
                    check_tenancy(mapping, conn)
                except ConfigError:
                    self.pool.close()
                    raise
            self.registry.load(conn)
        if mapping is not None:
            self.sparkplug = SparkplugHost(
                mapping,
                settings.limits,
                consumer.publish,
                rebirth_interval_s=settings.sparkplug.rebirth_interval_s,
                park_limit=max(1, settings.mqtt.receive_maximum // 2),
                store=BirthStore(self.pool),
            )
        self.metrics.db_up.set(1)
        self.writer = Writer(settings, self.pool, self.registry, self.metrics, self.storage_path)
        self.writer.listeners.extend(self._listeners)
        self.maintenance = Maintenance(
            settings, self.pool, self.registry, self.metrics, self.storage_path
        )
        self.lanes = [
            Lane(
                i,
                self.writer,
                self._ack,
                on_missing_partition=self.maintenance.ensure_partitions_now,
            )
            for i in range(settings.writer.lanes)
        ]
        for lane in self.lanes:
            lane.start()
        self.maintenance.start()
        self.consumer = consumer
        self.config_delivery = ConfigDelivery(self.pool, consumer.publish_retained)
        self.consumer.start()
        self.config_delivery.start()
        self._backlog_thread = threading.Thread(
            target=self._watch_backlog, name="ingest-backlog", daemon=True
        )
        self._backlog_thread.start()
        if self.settle_heap:
            settle_heap()
        log.info(
            "ingest running: %d lanes, share group %r", len(self.lanes), settings.mqtt.share_group
        )

    def stop(self) -> None:
        """Finish current flushes (and acknowledge them), leave the rest unacknowledged, close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        for lane in self.lanes:
            lane.stop()
        if self.writer is not None and self.pool is not None:
            self.writer.store_delays()
        if self.config_delivery is not None:
            self.config_delivery.stop()
        if self.consumer is not None:
            self.consumer.stop()
        if self.maintenance is not None:
            self.maintenance.stop()
        if self.pool is not None:
            self.pool.close()
        log.info("ingest stopped")

    def health(self) -> dict[str, Any]:
        """Liveness figures for the API's health endpoint."""
        last_commit = self.metrics.last_commit._value.get()
        return {
            "storage_path": self.storage_path.value if self.storage_path else None,
            "mqtt_connected": bool(self.consumer and self.consumer.connected.is_set()),
            "db_up": bool(self.metrics.db_up._value.get()),
            "backlog_messages": sum(lane.backlog() for lane in self.lanes),
            "last_commit_age_s": round(time.time() - last_commit, 3) if last_commit else None,
        }

    def _route(self, incoming: Incoming) -> None:
        if self.config_delivery is not None and is_report(incoming.topic):
            self.config_delivery.report(incoming)  # tiny and rare: stored on paho's thread
            self._ack(incoming)
            return
        if self.sparkplug is not None and incoming.topic.startswith("spBv1.0/"):
            for decoded in self.sparkplug.route(incoming):
                self.lanes[lane_of(decoded.topic, len(self.lanes))].put(decoded)
            return
        self.lanes[lane_of(incoming.topic, len(self.lanes))].put(incoming)

    def _ack(self, incoming: Incoming) -> None:
        assert self.consumer is not None
        self.consumer.ack(incoming)

    def _watch_backlog(self) -> None:
        while not self._stopped.wait(1.0):
            self.metrics.backlog.set(sum(lane.backlog() for lane in self.lanes))


GC_YOUNG_THRESHOLD: Final = 100_000
"""Allocations between young collections (CPython's default: 700)."""


def settle_heap() -> None:
    """Exempt what start-up built from the cyclic garbage collector, and collect the young
    generation less often.

    Every decoded sample is a few container objects that live until their flush commits
    (tens of thousands per lane); with CPython's default thresholds the collector walked them
    again and again, about an eighth of the ingest's CPU at 140,000 points/s (perf:
    gc_collect_main, visit_decref, visit_reachable). Reference counting frees them after the
    flush; the collector is only needed for cycles, which are rare here.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run_service(
    settings: IngestSettings,
    *,
    on_started: Callable[[IngestService], None] | None = None,
    serve: Callable[[IngestService], None] | None = None,
    chains: Sequence[Chain] = (INGEST_CHAIN,),
) -> None:
    """Run until SIGTERM or SIGINT.

    Args:
        on_started: called once the service runs.
        serve: runs in the main thread until the process is told to stop, e.g. a web server
            that also answers the ingest's routes (``ingest.http.add_routes``). Without it the
            ingest serves its own endpoint when ``api.enabled``, else just waits for the signal.
        chains: the migration chains to apply at start: the ingest's, and those of what
            ``serve`` hosts (the monitoring's, given by shulian/hosting.py).
    """
    service = IngestService(settings, settle_heap=True, chains=chains)
    service.start()
    if on_started:
        on_started(service)
    try:
        if serve is not None or settings.api.enabled:
            from ingest import http

            # uvicorn shuts down on SIGTERM, restores the previous handlers and raises the
            # signal again: with ours in place that only logs, so the ingest's own graceful
            # stop runs afterwards.
            install_stop_handlers()
            (serve or http.serve)(service)
        else:
            _wait_for_signal()
    finally:
        service.stop()


def install_stop_handlers() -> threading.Event:
    """SIGTERM/SIGINT set the returned event instead of killing the process mid-flush."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping after the current flushes", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def _wait_for_signal() -> None:
    stop = install_stop_handlers()
    while not stop.wait(1.0):
        pass

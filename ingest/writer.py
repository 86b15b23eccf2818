"""Write decoded messages to the database exactly once: one transaction per flush of many messages.

A flush stores, in ONE transaction: registry updates from status messages, the ledger rows of new
batches ((gateway boot, seq) never seen before), their samples by binary COPY, the derived tables
(current values, counter increments, state intervals, rollup invalidations) and the dead letters.
Only after the commit are the messages acknowledged to the broker, so a crash at any point
either redelivers a batch that the ledger then skips, or redelivers one that was never stored.

``Lane`` threads batch messages across gateways (flush on size or deadline), retry transient
database failures with backoff, and split a flush the database refuses until the one bad message
is found and dead-lettered (a poison message must not block its neighbours).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import psycopg
import psycopg_pool

from ingest.counters import apply_counters
from ingest.db.pgcopy import TELEMETRY_COLUMNS, TelemetryCopy
from ingest.db.rollups import record_invalidation
from ingest.db.timescale import StoragePath
from ingest.dead_letters import Admission, DeadLetter, admit, copy_dead_letters, dead_letter
from ingest.decode import (
    Decoded,
    DeviceStatusMessage,
    GatewayStatusMessage,
    GoodSample,
    Incoming,
    MetricsMessage,
    Rejected,
    SampleRejection,
    TelemetryBatch,
    decode,
)
from ingest.delays import DelayRecorder, Delivery
from ingest.errors import Reason
from ingest.metrics import IngestMetrics
from ingest.registry import GatewayKey, RegistryCache, RegistryView, SignalInfo
from ingest.settings import IngestSettings
from ingest.states import OFFLINE, OfflineEvent, StateSample, apply_states, free_marker_ms
from wire.payloads import DeviceConnection
from wire.signals import is_custom

log = logging.getLogger(__name__)

GATEWAY_SEEN_EVERY_MS: Final = 10_000
DEVICE_SEEN_EVERY_MS: Final = 60_000
SUPPRESSED_LOG_EVERY_S: Final = 10.0


class TransientError(Exception):
    """The database is unavailable or asked us to retry; the flush is retried unchanged."""

    def __init__(self, message: str, *, missing_partition: bool = False) -> None:
        super().__init__(message)
        self.missing_partition = missing_partition


@dataclass(slots=True)
class Pending:
    """A received message, decoded, waiting for its flush."""

    incoming: Incoming
    decoded: Decoded

    @property
    def points(self) -> int:
        decoded = self.decoded
        return len(decoded.samples) if isinstance(decoded, TelemetryBatch) else 1


@dataclass(slots=True)
class _StagedBatch:
    pending: Pending
    batch: TelemetryBatch
    """Its samples are all of registered devices (the others became rejections)."""
    boot_key: int
    keys: dict[str, int]
    """device id -> devices.key"""
    signals: dict[str, SignalInfo]


@dataclass(slots=True)
class _Plan:
    """Everything one flush will write, gathered before the first row goes out."""

    batches: list[_StagedBatch] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    dead_letter_admission: Admission | None = None
    offline: list[OfflineEvent] = field(default_factory=list)
    gateways_seen: dict[GatewayKey, int] = field(default_factory=dict)
    seen: tuple[dict[GatewayKey, int], dict[int, int]] = ({}, {})
    stored_points: int = 0
    duplicates: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    """Per stored batch: its devices and oldest sample time, for the delay statistics."""
    rejected: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)


@dataclass(frozen=True, slots=True)
class FlushStats:
    messages: int
    points: int
    duplicates: int
    seconds: float


CommitListener = Callable[[Sequence[Pending], float], None]
"""Called after each commit with the committed messages and the commit's ``time.time()``."""


class Writer:
    """Turns a list of decoded messages into one database transaction (shared by all lanes)."""

    def __init__(
        self,
        settings: IngestSettings,
        pool: psycopg_pool.ConnectionPool,
        registry: RegistryCache,
        metrics: IngestMetrics,
        storage_path: StoragePath,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.registry = registry
        self.metrics = metrics
        self.storage_path = storage_path
        self.listeners: list[CommitListener] = []
        self._gateway_seen: dict[GatewayKey, int] = {}
        self._device_seen: dict[int, int] = {}
        self._suppressed_lock = threading.Lock()
        self._suppressed: collections.Counter[str] = collections.Counter()
        """'enterprise/gateway' -> dead letters held back since the last warning"""
        self._suppressed_logged_mono = 0.0
        self.delays = DelayRecorder(
            settings.writer.delay_stats_timezone, settings.writer.delay_stats_flush_s
        )

    def decode(self, incoming: Incoming) -> Pending:
        if incoming.predecoded is not None:
            return Pending(incoming, incoming.predecoded)
        return Pending(incoming, decode(incoming, self.settings.limits, int(time.time() * 1000)))

    def write(self, items: Sequence[Pending]) -> FlushStats:
        """Store ``items`` in one transaction.

        Raises:
            TransientError: the database is unreachable or asked to retry; nothing was stored.
            psycopg.Error | Exception: the database refused the data; nothing was stored.
        """
        started = time.perf_counter()
        try:
            with self.pool.connection(timeout=self.settings.db.pool_timeout_s) as conn:
                view = RegistryView(self.registry, conn, self.settings.registry)
                with conn.transaction():
                    plan = self._stage(conn, view, items)
                    self._store(conn, view, plan)
                view.commit()
        except psycopg_pool.PoolTimeout as exc:
            raise TransientError(f"no database connection: {exc}") from exc
        except psycopg.Error as exc:
            if is_transient(exc):
                raise TransientError(
                    str(exc).strip().splitlines()[0], missing_partition=is_missing_partition(exc)
                ) from exc
            raise
        committed_at = time.time()
        self._after_commit(items, plan, committed_at, time.perf_counter() - started)
        if plan.deliveries:
            self.delays.record(plan.deliveries, committed_at)
        if self.delays.due():
            self.store_delays()
        return FlushStats(
            len(items), plan.stored_points, plan.duplicates, time.perf_counter() - started
        )

    def store_delays(self) -> None:
        """Add the accumulated delay statistics to the database; a failure only delays them."""
        try:
            with self.pool.connection(timeout=self.settings.db.pool_timeout_s) as conn:
                self.delays.store(conn)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            log.warning("could not store delay statistics (kept for the next try): %s", exc)

    def dead_letter_alone(self, item: Pending, error: BaseException) -> None:
        """Store one message the database refused as a storage_rejected dead letter."""
        detail = f"{type(error).__name__}: {str(error).strip()[:400]}"
        letter = _dead_letter(item, Reason.STORAGE_REJECTED, "message", detail)
        try:
            with self.pool.connection(timeout=self.settings.db.pool_timeout_s) as conn:
                with conn.transaction():
                    admission = self._store_dead_letters(conn, [letter])
        except psycopg_pool.PoolTimeout as exc:
            raise TransientError(f"no database connection: {exc}") from exc
        except psycopg.Error as exc:
            if is_transient(exc):
                raise TransientError(str(exc)) from exc
            raise
        self.metrics.rejected.labels(Reason.STORAGE_REJECTED.value, "message").inc()
        self._count_suppressed(admission)
        self.metrics.last_commit.set(time.time())

    def _store_dead_letters(self, conn: psycopg.Connection, letters: list[DeadLetter]) -> Admission:
        """Write the dead letters the per-gateway limit admits (in the caller's transaction)."""
        limits = self.settings.limits
        admission = admit(conn, letters, limits.dead_letters_per_minute)
        if admission.kept:
            copy_dead_letters(conn, admission.kept, limits.dead_letter_prefix_bytes)
        return admission

    def _count_suppressed(self, admission: Admission | None) -> None:
        """After a commit: count what the limit held back; warn at most every 10 s."""
        if admission is None or not admission.suppressed:
            return
        for (_source, reason), count in admission.suppressed.items():
            self.metrics.dead_letters_suppressed.labels(reason).inc(count)
        now = time.monotonic()
        with self._suppressed_lock:
            for ((enterprise, gateway), _reason), count in admission.suppressed.items():
                self._suppressed[f"{enterprise}/{gateway}"] += count
            if now - self._suppressed_logged_mono < SUPPRESSED_LOG_EVERY_S:
                return
            suppressed, self._suppressed = self._suppressed, collections.Counter()
            self._suppressed_logged_mono = now
        worst, worst_count = suppressed.most_common(1)[0]
        log.warning(
            "dead letters over limits.dead_letters_per_minute (%d per gateway): %d not stored "
            "from %d gateway(s), most from %s (%d); see dead_letter_windows and fix or block "
            "that gateway",
            self.settings.limits.dead_letters_per_minute,
            sum(suppressed.values()),
            len(suppressed),
            worst,
            worst_count,
        )

    # --- staging: registry checks, in message order ---------------------------------------

    def _stage(
        self, conn: psycopg.Connection, view: RegistryView, items: Sequence[Pending]
    ) -> _Plan:
        plan = _Plan()
        for item in items:
            decoded = item.decoded
            if isinstance(decoded, TelemetryBatch):
                self._stage_batch(view, plan, item, decoded)
            elif isinstance(decoded, Rejected):
                _reject(plan, item, decoded.reason, decoded.detail)
            elif isinstance(decoded, GatewayStatusMessage):
                self._apply_gateway_status(conn, view, plan, item, decoded)
            elif isinstance(decoded, DeviceStatusMessage):
                self._apply_device_status(conn, view, plan, item, decoded)
            elif isinstance(decoded, MetricsMessage):
                self._apply_metrics(conn, view, plan, item, decoded)
        return plan

    def _admit(
        self, view: RegistryView, plan: _Plan, item: Pending, enterprise: str, gateway: str
    ) -> bool:
        info, why = view.admit_gateway(gateway, enterprise)
        if info is None:
            _reject(plan, item, Reason.UNKNOWN_GATEWAY, why)
            return False
        ident = (enterprise, gateway)
        plan.gateways_seen[ident] = max(plan.gateways_seen.get(ident, 0), item.incoming.received_ms)
        return True

    def _stage_batch(
        self, view: RegistryView, plan: _Plan, item: Pending, batch: TelemetryBatch
    ) -> None:
        topic = batch.topic
        if not self._admit(view, plan, item, topic.enterprise, topic.gateway):
            return
        devices = {s[1] for s in batch.samples}
        keys = view.device_keys(topic.enterprise, devices)
        unknown = devices - keys.keys()
        if unknown:
            batch = _without_unknown_devices(batch, unknown, topic.enterprise)
        if not self.settings.limits.accept_unknown_signals:
            undeclared = {
                name
                for name in {s[2] for s in batch.samples}
                if is_custom(name) and not view.is_declared(name)
            }
            if undeclared:
                batch = _without_undeclared_signals(batch, undeclared)
        signals: dict[str, SignalInfo] = {}
        for name in {s[2] for s in batch.samples}:
            signals[name] = view.signal(name)
        boot_key = view.boot_key(topic.enterprise, batch.gateway, batch.boot)
        plan.batches.append(_StagedBatch(item, batch, boot_key, keys, signals))

    def _apply_gateway_status(
        self,
        conn: psycopg.Connection,
        view: RegistryView,
        plan: _Plan,
        item: Pending,
        message: GatewayStatusMessage,
    ) -> None:
        status, topic = message.status, message.topic
        if not self._admit(view, plan, item, topic.enterprise, topic.gateway):
            return
        row = conn.execute(
            "SELECT boot, online, status_at, last_seen_at, started_at FROM gateways "
            "WHERE enterprise_id = %s AND id = %s FOR UPDATE",
            (topic.enterprise, status.gateway),
        ).fetchone()
        assert row is not None
        boot, online, status_at, last_seen_at, started_at = row
        status_ms = _ms(status_at)
        if status_ms > self._newest_trusted_ms():
            status_ms = 0  # stored before status had a time window: it must not freeze the row
        if status.boot == boot and status.online == online and status.ts_ms <= status_ms:
            return  # the same status again (retained, redelivered, or a second worker)
        if status.boot != boot:
            # An older boot's status (e.g. its Last Will after the new boot's birth) is dropped.
            # Boots are ordered by their start times, both on the gateway's own clock; the stored
            # status time of a Last Will is our receipt, on the ingest's clock.
            if status.started_ms and started_at is not None:
                if status.started_ms < _ms(started_at):
                    return
            elif status.ts_ms < status_ms:
                return
        at_ms = status.ts_ms
        if not status.online and (status.will or status.v == "1.0"):
            # A Last Will carries the time it was set (its gateway's connect), not when the
            # gateway died (1.0 gateways do not mark it; their clean offline is sent at stop, so
            # its arrival is as good): when the broker forwards it live, its arrival is the
            # offline time; a retained copy replayed at our start is placed after the gateway's
            # last known activity.
            if item.incoming.retained:
                at_ms = max(status.ts_ms, _ms(last_seen_at))
            else:
                at_ms = item.incoming.received_ms
        conn.execute(
            """
            UPDATE gateways SET online = %s, boot = %s, status_at = %s, started_at = %s,
                version = %s, config_hash = %s, buffer_dropped_samples = %s
            WHERE enterprise_id = %s AND id = %s
            """,
            (
                status.online,
                status.boot,
                _ts(at_ms),
                _ts(status.started_ms) if status.started_ms else None,
                status.version,
                status.config_hash,
                status.buffer_dropped_samples,
                topic.enterprise,
                status.gateway,
            ),
        )
        view.set_gateway_online(topic.enterprise, status.gateway, status.online)
        if status.online and status.devices and self.settings.registry.auto_register_devices:
            view.register_devices(
                topic.enterprise, status.gateway, dict.fromkeys(status.devices, "")
            )
        if not status.online:
            for key in view.gateway_device_keys(topic.enterprise, status.gateway):
                plan.offline.append(OfflineEvent(key, at_ms))

    def _apply_device_status(
        self,
        conn: psycopg.Connection,
        view: RegistryView,
        plan: _Plan,
        item: Pending,
        message: DeviceStatusMessage,
    ) -> None:
        status, topic = message.status, message.topic
        if not self._admit(view, plan, item, topic.enterprise, topic.gateway):
            return
        keys = view.device_keys(topic.enterprise, {status.device})
        if status.device not in keys and self.settings.registry.auto_register_devices:
            keys = view.register_devices(
                topic.enterprise, status.gateway, {status.device: status.profile}
            )
        key = keys.get(status.device)
        if key is None:
            _reject(
                plan,
                item,
                Reason.UNKNOWN_DEVICE,
                f"device {status.device!r} is not registered in enterprise {topic.enterprise!r}",
            )
            return
        if status.custom_signals:
            view.declare_signals(status.custom_signals)
        row = conn.execute(
            """
            UPDATE devices SET connection = %s, connection_at = %s, connection_error = %s,
                last_good_at = %s,
                profile = CASE WHEN %s <> '' THEN %s ELSE profile END,
                max_silence_s = coalesce(%s::jsonb, max_silence_s)
            WHERE key = %s AND (connection_at IS NULL OR connection_at <= %s OR connection_at > %s)
            RETURNING key
            """,
            (
                status.connection.value,
                _ts(status.ts_ms),
                status.error,
                _ts(status.last_good_ms) if status.last_good_ms else None,
                status.profile,
                status.profile,
                orjson.dumps(status.max_silence_s).decode() if status.max_silence_s else None,
                key,
                _ts(status.ts_ms),
                _ts(self._newest_trusted_ms()),
            ),
        ).fetchone()
        if row is not None and status.connection is not DeviceConnection.CONNECTED:
            plan.offline.append(OfflineEvent(key, status.ts_ms))
        if status.profile:
            conn.execute(
                "INSERT INTO profiles (name) VALUES (%s) ON CONFLICT DO NOTHING", (status.profile,)
            )

    def _apply_metrics(
        self,
        conn: psycopg.Connection,
        view: RegistryView,
        plan: _Plan,
        item: Pending,
        message: MetricsMessage,
    ) -> None:
        metrics, topic = message.metrics, message.topic
        if not self._admit(view, plan, item, topic.enterprise, topic.gateway):
            return
        conn.execute(
            "UPDATE gateways SET metrics = %s::jsonb, metrics_at = %s "
            "WHERE enterprise_id = %s AND id = %s "
            "AND (metrics_at IS NULL OR metrics_at < %s OR metrics_at > %s)",
            (
                orjson.dumps(metrics.figures).decode(),
                _ts(metrics.ts_ms),
                topic.enterprise,
                metrics.gateway,
                _ts(metrics.ts_ms),
                _ts(self._newest_trusted_ms()),
            ),
        )

    def _newest_trusted_ms(self) -> int:
        """A stored status time beyond this came from a wrong clock before status messages had
        a time window (decode rejects them now); it is overridden instead of winning for ever."""
        return int(time.time() * 1000) + int(self.settings.limits.max_future_s * 1000)

    # --- storing: ledger, rows, derived tables, dead letters -----------------------------

    def _store(self, conn: psycopg.Connection, view: RegistryView, plan: _Plan) -> None:
        new = self._claim(conn, plan)
        copy = TelemetryCopy()
        current: dict[tuple[int, int], tuple[int, float | None, str | None, int]] = {}
        counters: list[tuple[int, int, int, float]] = []
        states: list[StateSample] = []
        min_ts = max_ts = None
        for staged in new:
            keys, signals = staged.keys, staged.signals
            lo = hi = None
            for _index, device, signal, ts_ms, value, quality in staged.batch.samples:
                key = keys[device]
                info = signals[signal]
                signal_id = info.id
                number: float | None
                text: str | None
                if isinstance(value, str):
                    number, text = None, value
                    copy.add_text(ts_ms, value, key, signal_id, quality)
                elif value is None:
                    number = text = None
                    copy.add_null(ts_ms, key, signal_id, quality)
                else:
                    number, text = float(value), None
                    copy.add_number(ts_ms, number, key, signal_id, quality)
                ident = (key, signal_id)
                latest = current.get(ident)
                if latest is None or ts_ms >= latest[0]:
                    current[ident] = (ts_ms, number, text, quality)
                kind = info.kind
                if kind != "gauge" and quality < 2:
                    if kind == "counter" and number is not None:
                        counters.append((key, signal_id, ts_ms, number))
                    elif kind == "state" and text is not None:
                        states.append(StateSample(key, ts_ms, text))
                if lo is None or ts_ms < lo:
                    lo = ts_ms
                if hi is None or ts_ms > hi:
                    hi = ts_ms
            if lo is not None and hi is not None:
                plan.deliveries.append((staged.keys.values(), lo, staged.batch.historical))
                min_ts = lo if min_ts is None else min(min_ts, lo)
                max_ts = hi if max_ts is None else max(max_ts, hi)
        state_id = view.signal("machine_state").id
        for event in self._effective_offline(conn, plan.offline, state_id, new):
            signal_id = state_id
            copy.add_text(event.ts_ms, OFFLINE, event.device_key, signal_id, 0)
            states.append(StateSample(event.device_key, event.ts_ms, OFFLINE))
            latest = current.get((event.device_key, signal_id))
            if latest is None or event.ts_ms >= latest[0]:
                current[(event.device_key, signal_id)] = (event.ts_ms, None, OFFLINE, 0)
        if copy.rows:
            with conn.cursor().copy(
                f"COPY telemetry ({TELEMETRY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
            ) as cp:
                cp.write(copy.data())
        plan.stored_points = copy.rows
        if current:
            _upsert_current_values(conn, current)
        if counters:
            for name, count in apply_counters(conn, counters).items():
                self.metrics.counter_events.labels(name).inc(count)
        if states:
            machine_state = view.signal("machine_state").id
            late = apply_states(conn, states, machine_state)
            if late:
                self.metrics.late_samples.labels("state").inc(late)
        if (
            self.storage_path is StoragePath.POSTGRESQL
            and min_ts is not None
            and max_ts is not None
        ):
            record_invalidation(conn, min_ts, max_ts)
        if min_ts is not None and max_ts is not None:
            note_late_data(conn, min_ts, max_ts)
        self._touch_seen(conn, plan, current)
        if plan.dead_letters:
            plan.dead_letter_admission = self._store_dead_letters(conn, plan.dead_letters)

    def _effective_offline(
        self,
        conn: psycopg.Connection,
        events: list[OfflineEvent],
        state_id: int,
        new: list[_StagedBatch],
    ) -> list[OfflineEvent]:
        """One event per device that is not offline already (earliest time wins), each moved
        past any machine_state sample of its device at the same millisecond (stored or in this
        flush): a marker placed at a gateway's last activity can meet a real sample there, and
        two states at one timestamp make the intervals ambiguous. An event whose marker is
        stored already (delivered again) is dropped. A real sample that arrives after its
        marker moves the marker on (``apply_states``)."""
        if not events:
            return []
        found = self._offline_events(conn, events)
        keys = {e.device_key for e in found}
        in_flush: dict[int, set[int]] = {}
        for staged in new:  # one pass, only when some device goes offline
            for _index, device, signal, ts_ms, _value, _quality in staged.batch.samples:
                key = staged.keys[device]
                if key in keys and staged.signals[signal].id == state_id:
                    in_flush.setdefault(key, set()).add(ts_ms)
        placed = []
        for event in found:
            key = event.device_key
            place = free_marker_ms(conn, key, event.ts_ms, state_id, in_flush.get(key, set()))
            if place is not None:
                placed.append(OfflineEvent(key, place))
        return placed

    def _offline_events(
        self, conn: psycopg.Connection, events: list[OfflineEvent]
    ) -> list[OfflineEvent]:
        """One event per device that is not offline already (earliest time wins)."""
        first: dict[int, int] = {}
        for event in events:
            first[event.device_key] = min(first.get(event.device_key, event.ts_ms), event.ts_ms)
        already = {
            r[0]
            for r in conn.execute(
                "SELECT device_key FROM device_states WHERE device_key = ANY(%s) AND state = %s",
                (sorted(first), OFFLINE),
            )
        }
        return [OfflineEvent(k, ms) for k, ms in sorted(first.items()) if k not in already]

    def _claim(self, conn: psycopg.Connection, plan: _Plan) -> list[_StagedBatch]:
        """Insert the ledger rows; return the batches never stored before (first copy only)."""
        first: dict[tuple[int, int], _StagedBatch] = {}
        for staged in plan.batches:
            first.setdefault((staged.boot_key, staged.batch.seq), staged)
        if not first:
            return []
        idents = sorted(first)
        rows = conn.execute(
            """
            INSERT INTO batch_ledger (boot_key, seq, points)
            SELECT * FROM unnest(%s::int[], %s::bigint[], %s::int[])
            ON CONFLICT DO NOTHING RETURNING boot_key, seq
            """,
            (
                [i[0] for i in idents],
                [i[1] for i in idents],
                [len(first[i].batch.samples) for i in idents],
            ),
        ).fetchall()
        claimed = {(r[0], r[1]) for r in rows}
        new = [
            s
            for s in plan.batches
            if (s.boot_key, s.batch.seq) in claimed and first[(s.boot_key, s.batch.seq)] is s
        ]
        plan.duplicates = len(plan.batches) - len(new)
        for staged in new:
            for rejection in staged.batch.rejections:
                plan.rejected[(rejection.reason.value, "sample")] += 1
            plan.dead_letters.extend(_sample_dead_letters(staged.pending, staged.batch.rejections))
        if claimed:
            stats: dict[int, list[int]] = {}
            for staged in new:
                entry = stats.setdefault(staged.boot_key, [0, 0])
                entry[0] = max(entry[0], staged.batch.seq)
                entry[1] += 1
            keys = sorted(stats)
            conn.execute(
                """
                UPDATE gateway_boots g SET last_seen_at = now(),
                    max_seq = greatest(g.max_seq, u.max_seq), batches = g.batches + u.n
                FROM unnest(%s::int[], %s::bigint[], %s::int[]) AS u(key, max_seq, n)
                WHERE g.key = u.key
                """,
                (keys, [stats[k][0] for k in keys], [stats[k][1] for k in keys]),
            )
        return new

    def _touch_seen(
        self,
        conn: psycopg.Connection,
        plan: _Plan,
        current: dict[tuple[int, int], tuple[int, float | None, str | None, int]],
    ) -> None:
        """Advance gateways/devices.last_seen_at, at most every 10 s / 60 s per id."""
        gateways = {
            g: ms
            for g, ms in plan.gateways_seen.items()
            if ms - self._gateway_seen.get(g, 0) >= GATEWAY_SEEN_EVERY_MS
        }
        if gateways:
            idents = sorted(gateways)
            conn.execute(
                """
                UPDATE gateways g SET last_seen_at = greatest(g.last_seen_at, u.at)
                FROM (SELECT e, id, timestamptz 'epoch' + ms * interval '1 millisecond' AS at
                      FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS x(e, id, ms)) u
                WHERE g.enterprise_id = u.e AND g.id = u.id
                """,
                ([i[0] for i in idents], [i[1] for i in idents], [gateways[i] for i in idents]),
            )
        newest: dict[int, int] = {}
        for (key, _signal), (ts_ms, *_rest) in current.items():
            if ts_ms > newest.get(key, 0):
                newest[key] = ts_ms
        devices = {
            k: ms
            for k, ms in newest.items()
            if ms - self._device_seen.get(k, 0) >= DEVICE_SEEN_EVERY_MS
        }
        if devices:
            keys = sorted(devices)
            conn.execute(
                """
                UPDATE devices d SET last_seen_at = greatest(d.last_seen_at, u.at)
                FROM (SELECT key, timestamptz 'epoch' + ms * interval '1 millisecond' AS at
                      FROM unnest(%s::int[], %s::bigint[]) AS x(key, ms)) u
                WHERE d.key = u.key
                """,
                (keys, [devices[k] for k in keys]),
            )
        plan.seen = (gateways, devices)

    def _after_commit(
        self, items: Sequence[Pending], plan: _Plan, committed_at: float, seconds: float
    ) -> None:
        gateways, devices = plan.seen
        self._gateway_seen.update(gateways)
        self._device_seen.update(devices)
        metrics = self.metrics
        metrics.points.inc(plan.stored_points)
        if plan.duplicates:
            metrics.duplicate_batches.inc(plan.duplicates)
            log.info("skipped %d batches already stored (redelivered or replayed)", plan.duplicates)
        for (reason, scope), count in plan.rejected.items():
            metrics.rejected.labels(reason, scope).inc(count)
        self._count_suppressed(plan.dead_letter_admission)
        metrics.flush_seconds.observe(seconds)
        metrics.last_commit.set(committed_at)
        metrics.db_up.set(1)
        now_mono = time.monotonic()
        for item in items:
            metrics.commit_latency_seconds.observe(now_mono - item.incoming.received_mono)
        for listener in self.listeners:
            listener(items, committed_at)


def _without_unknown_devices(
    batch: TelemetryBatch, unknown: set[str], enterprise: str
) -> TelemetryBatch:
    return _without(
        batch,
        lambda sample: (
            f"device {sample[1]!r} is not registered in enterprise {enterprise!r}"
            if sample[1] in unknown
            else None
        ),
        Reason.UNKNOWN_DEVICE,
    )


def _without_undeclared_signals(batch: TelemetryBatch, undeclared: set[str]) -> TelemetryBatch:
    """Custom signals count only once a device status declared them (their kind decides how
    they are stored; a name nobody declared could be any gateway's typo or flood)."""
    return _without(
        batch,
        lambda sample: (
            f"custom signal {sample[2]!r} is not declared in any device status (the gateway "
            "sends the profile's custom_signals there: docs/profiles.md, Custom signals)"
            if sample[2] in undeclared
            else None
        ),
        Reason.UNKNOWN_SIGNAL,
    )


def _without(
    batch: TelemetryBatch, why_not: Callable[[GoodSample], str | None], reason: Reason
) -> TelemetryBatch:
    """``batch`` without the samples ``why_not`` finds a reason against, each rejected with it."""
    kept: list[GoodSample] = []
    for sample in batch.samples:
        detail = why_not(sample)
        if detail is not None:
            batch.rejections.append(SampleRejection(sample[0], reason, detail))
        else:
            kept.append(sample)
    batch.rejections.sort(key=lambda r: r.index)
    batch.samples = kept
    return batch


def _reject(plan: _Plan, item: Pending, reason: Reason, detail: str) -> None:
    plan.dead_letters.append(_dead_letter(item, reason, "message", detail))
    plan.rejected[(reason.value, "message")] += 1


def _dead_letter(
    item: Pending, reason: Reason, scope: str, detail: str, indexes: list[int] | None = None
) -> DeadLetter:
    incoming = item.incoming
    topic = getattr(item.decoded, "topic", None)
    return dead_letter(incoming.topic, topic, incoming.payload, reason, scope, detail, indexes)


def _sample_dead_letters(item: Pending, rejections: list[SampleRejection]) -> list[DeadLetter]:
    """One dead-letter row per reason, listing the rejected samples' indexes."""
    by_reason: dict[Reason, list[SampleRejection]] = {}
    for rejection in rejections:
        by_reason.setdefault(rejection.reason, []).append(rejection)
    rows = []
    for reason, group in by_reason.items():
        details = "; ".join(f"[{r.index}] {r.detail}" for r in group[:5])
        if len(group) > 5:
            details += f"; (+{len(group) - 5} more)"
        rows.append(_dead_letter(item, reason, "sample", details, [r.index for r in group]))
    return rows


STAGE_TABLES: Final = ("current_stage", "counter_stage")


def prepare_connection(conn: psycopg.Connection) -> None:
    """Pool ``configure`` hook: the session's staging tables (telemetry's row layout)."""
    for table in STAGE_TABLES:
        conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {table} (LIKE telemetry INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
    conn.commit()


def _upsert_current_values(
    conn: psycopg.Connection,
    current: dict[tuple[int, int], tuple[int, float | None, str | None, int]],
) -> None:
    """Binary COPY the newest sample per key into a temp table, then one set-based upsert.

    Cheaper than binding arrays: the rows reuse the telemetry COPY encoding, and the upsert
    runs in key order (one lock order for every writer: no deadlocks between workers).
    """
    copy = TelemetryCopy()
    for (key, signal_id), (ts_ms, number, text, quality) in current.items():
        if text is not None:
            copy.add_text(ts_ms, text, key, signal_id, quality)
        elif number is not None:
            copy.add_number(ts_ms, number, key, signal_id, quality)
        else:
            copy.add_null(ts_ms, key, signal_id, quality)
    with conn.cursor().copy(
        f"COPY current_stage ({TELEMETRY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
    ) as cp:
        cp.write(copy.data())
    conn.execute(
        """
        INSERT INTO current_values AS c (device_key, signal_id, ts, value, value_text, quality)
        SELECT device_key, signal_id, ts, value, value_text, quality FROM current_stage
        ORDER BY device_key, signal_id
        ON CONFLICT (device_key, signal_id) DO UPDATE
        SET ts = excluded.ts, value = excluded.value, value_text = excluded.value_text,
            quality = excluded.quality
        WHERE excluded.ts >= c.ts
        """
    )


LATE_AFTER_MS: Final = 24 * 3600 * 1000
"""Samples older than this when stored may belong to a day before yesterday, which the daily KPI
refresh no longer revisits by itself: their range is noted for it (kpi_late_data)."""


def note_late_data(conn: psycopg.Connection, min_ts_ms: int, max_ts_ms: int) -> None:
    if min_ts_ms < time.time() * 1000 - LATE_AFTER_MS:
        conn.execute(
            "INSERT INTO kpi_late_data (lo, hi) VALUES (%s, %s)", (_ts(min_ts_ms), _ts(max_ts_ms))
        )


def _ts(ms: int) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if value is not None else 0


_TRANSIENT_SQLSTATE_CLASSES: Final = ("08", "40", "53", "57", "58")
"""connection, transaction rollback (serialization, deadlock), resources, operator, system"""


def is_transient(exc: psycopg.Error) -> bool:
    """Errors worth retrying unchanged: the connection or server failed, a deadlock or
    serialization failure, a lock time-out, or a missing partition (maintenance creates it).
    Anything else is about the data (including program limits, class 54) and is bisected."""
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
    if state[:2] in _TRANSIENT_SQLSTATE_CLASSES or state == "55P03":
        return True
    return is_missing_partition(exc)


def is_missing_partition(exc: psycopg.Error) -> bool:
    return isinstance(exc, psycopg.errors.CheckViolation) and "no partition" in str(exc)


Ack = Callable[[Incoming], None]


class Lane:
    """A writer thread: batches its gateways' messages, flushes, retries, acknowledges.

    Stopping lets the current flush finish (and acknowledges it); what is still queued stays
    unacknowledged and comes back from the broker.
    """

    def __init__(
        self,
        index: int,
        writer: Writer,
        ack: Ack,
        *,
        on_missing_partition: Callable[[], None] | None = None,
    ) -> None:
        self.index = index
        self.writer = writer
        self.settings = writer.settings.writer
        self.metrics = writer.metrics
        self.ack = ack
        self.on_missing_partition = on_missing_partition
        self._queue: collections.deque[Incoming] = collections.deque()
        self._pending: list[Pending] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ingest-lane-{index}", daemon=True)
        self._last_warning = 0.0
        self._suppressed = 0

    def put(self, incoming: Incoming) -> None:
        with self._cond:
            self._queue.append(incoming)
            self._cond.notify()

    def backlog(self) -> int:
        return len(self._queue) + len(self._pending)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        max_points = self.settings.max_batch_points
        max_delay_s = self.settings.max_delay_ms / 1000
        points = 0
        while not self._stop.is_set():
            with self._cond:
                if not self._queue:
                    if self._pending:
                        wait_s = (
                            self._pending[0].incoming.received_mono + max_delay_s - time.monotonic()
                        )
                    else:
                        wait_s = 1.0
                    if wait_s > 0:
                        self._cond.wait(wait_s)
                drained = list(self._queue)
                self._queue.clear()
            if self._stop.is_set():
                break
            for incoming in drained:
                pending = self.writer.decode(incoming)
                self._pending.append(pending)
                points += pending.points
            if not self._pending:
                continue
            due = self._pending[0].incoming.received_mono + max_delay_s <= time.monotonic()
            if points < max_points and not due:
                continue
            chunk: list[Pending] = []
            taken = 0
            for pending in self._pending:
                if chunk and taken + pending.points > max_points:
                    break
                chunk.append(pending)
                taken += pending.points
            self._flush(chunk)
            if self._stop.is_set():
                break
            del self._pending[: len(chunk)]
            points -= taken

    def _flush(self, items: list[Pending]) -> bool:
        """Store and acknowledge ``items``; False if stopped while the database was down."""
        delay = self.settings.retry_initial_s
        while True:
            try:
                self.writer.write(items)
            except TransientError as exc:
                self._transient(exc)
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, self.settings.retry_max_s)
                continue
            except Exception as exc:  # the task boundary: a refused flush must not stop the lane
                self.metrics.flush_failures.labels("data").inc()
                if len(items) == 1:
                    log.warning(
                        "the database refused message on %s (%s); dead-lettering it",
                        items[0].incoming.topic,
                        exc,
                    )
                    return self._dead_letter(items[0], exc)
                log.warning(
                    "a flush of %d messages was refused (%s); splitting it to find the bad one",
                    len(items),
                    exc,
                )
                half = len(items) // 2
                return self._flush(items[:half]) and self._flush(items[half:])
            for item in items:
                self.ack(item.incoming)
            return True

    def _dead_letter(self, item: Pending, error: BaseException) -> bool:
        delay = self.settings.retry_initial_s
        while True:
            try:
                self.writer.dead_letter_alone(item, error)
            except TransientError as exc:
                self._transient(exc)
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, self.settings.retry_max_s)
                continue
            except Exception:
                log.exception("could not even dead-letter a message; it stays unacknowledged")
                return False
            self.ack(item.incoming)
            return True

    def _transient(self, exc: TransientError) -> None:
        self.metrics.flush_failures.labels("transient").inc()
        self.metrics.db_up.set(0)
        if exc.missing_partition and self.on_missing_partition is not None:
            self.on_missing_partition()
        now = time.monotonic()
        if now - self._last_warning >= 10.0:
            log.warning(
                "database unavailable (%s); holding %d messages unacknowledged and retrying%s",
                exc,
                self.backlog(),
                f" ({self._suppressed} similar warnings suppressed)" if self._suppressed else "",
            )
            self._last_warning = now
            self._suppressed = 0
        else:
            self._suppressed += 1

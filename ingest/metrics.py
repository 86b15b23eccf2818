"""The ingest's Prometheus metrics, in a registry of their own that the API app exposes.

Rates (messages and points per second) are ``rate()`` over the ``_total`` counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)


class IngestMetrics:
    """Every metric the ingest updates; one instance per service, sharing ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "shulian_ingest_messages_total",
            "MQTT messages received, by topic kind",
            ["kind"],
            registry=r,
        )
        self.points = Counter(
            "shulian_ingest_points_total", "Samples committed to the telemetry table", registry=r
        )
        self.duplicate_batches = Counter(
            "shulian_ingest_duplicate_batches_total",
            "Batches skipped because the ledger already held their (gateway, boot, seq)",
            registry=r,
        )
        self.rejected = Counter(
            "shulian_ingest_rejected_total",
            "Dead-lettered messages (scope=message) and samples (scope=sample), by reason",
            ["reason", "scope"],
            registry=r,
        )
        self.dead_letters_suppressed = Counter(
            "shulian_ingest_dead_letters_suppressed_total",
            "Dead letters not stored because their gateway exceeded limits.dead_letters_per_minute",
            ["reason"],
            registry=r,
        )
        self.flush_seconds = Histogram(
            "shulian_ingest_flush_seconds",
            "Duration of one flush transaction (decode excluded)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_latency_seconds = Histogram(
            "shulian_ingest_commit_latency_seconds",
            "From a message's arrival to the commit of its rows",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.flush_failures = Counter(
            "shulian_ingest_flush_failures_total",
            "Flushes that failed: transient (database down; retried) or data (bisected)",
            ["kind"],
            registry=r,
        )
        self.backlog = Gauge(
            "shulian_ingest_backlog_messages",
            "Messages received but not yet committed and acknowledged",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "shulian_ingest_mqtt_connected", "1 while connected to the broker", registry=r
        )
        self.db_up = Gauge(
            "shulian_ingest_db_up", "1 when the last database operation succeeded", registry=r
        )
        self.last_commit = Gauge(
            "shulian_ingest_last_commit_timestamp_seconds",
            "Unix time of the last committed flush",
            registry=r,
        )
        self.counter_events = Counter(
            "shulian_ingest_counter_events_total",
            "Counter discontinuities seen (reset, wrap, rebase)",
            ["event"],
            registry=r,
        )
        self.late_samples = Counter(
            "shulian_ingest_late_samples_total",
            "State or counter samples older than the newest one already applied",
            ["signal_kind"],
            registry=r,
        )


def metrics_registry(metrics: IngestMetrics) -> CollectorRegistry:
    """The collector registry to expose (``prometheus_client.generate_latest(registry)``)."""
    return metrics.registry

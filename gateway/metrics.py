"""Health figures of the gateway: a Prometheus endpoint, and the same figures for GatewayMetrics over MQTT.

The hot path bumps plain integers (``DeviceCounters``, ``PublisherCounters``); a custom collector
reads them at scrape time, so no lock is taken per sample. Names follow
``shulian_gateway_<what>_<unit>``, counters end in ``_total``, labels are device and driver only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.buffer import BufferStats
from gateway.drivers.base import DriverMetrics
from gateway.pipeline import DeviceCounters
from wire.payloads import DEVICE_READ_RATE

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class PublisherCounters:
    batches_published: int = 0
    points_published: int = 0
    batches_refused: int = 0
    batches_unrouted: int = 0
    replayed_batches: int = 0
    connects: int = 0
    inflight: int = 0
    is_connected: bool = False


@dataclass(slots=True)
class DeviceEntry:
    driver: str
    counters: DeviceCounters
    driver_metrics: DriverMetrics
    is_connected: Callable[[], bool]


@dataclass
class GatewayMetricsHub:
    """Everything the gateway measures, readable as Prometheus metrics or as a flat dict."""

    devices: dict[str, DeviceEntry] = field(default_factory=dict)
    publisher: PublisherCounters = field(default_factory=PublisherCounters)
    buffer_stats: Callable[[], BufferStats] = lambda: BufferStats(0, 0, 0, 0, 0, None)
    buffer_max_bytes: int = 0
    """The disk buffer's bound, so the cloud can tell how full it is (0: not known)."""
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        self.poll_latency = Histogram(
            "shulian_gateway_poll_latency_seconds",
            "Duration of one read cycle of one group",
            ["device", "driver"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.publish_latency = Histogram(
            "shulian_gateway_publish_latency_seconds",
            "From sealing a batch to the broker's PUBACK",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "shulian_gateway_event_loop_lag_seconds",
            "How late a 100 ms timer fires on the gateway's event loop (a busy or blocked loop)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
            registry=self.registry,
        )
        self.registry.register(_HubCollector(self))
        self._last_rates: tuple[float, int, int] | None = None
        self._last_device_reads: dict[str, int] = {}

    def add_device(
        self,
        device: str,
        driver: str,
        counters: DeviceCounters,
        driver_metrics: DriverMetrics,
        is_connected: Callable[[], bool],
    ) -> None:
        self.devices[device] = DeviceEntry(driver, counters, driver_metrics, is_connected)

    def remove_device(self, device: str) -> None:
        self.devices.pop(device, None)
        try:
            self.poll_latency.remove(device, self._driver_of(device))
        except KeyError:
            pass

    def _driver_of(self, device: str) -> str:
        entry = self.devices.get(device)
        return entry.driver if entry else ""

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics on ``host:port`` (a daemon thread of prometheus-client)."""
        start_http_server(port, addr=host, registry=self.registry)
        log.info("prometheus endpoint listening", extra={"url": f"http://{host}:{port}/metrics"})

    def figures(self) -> dict[str, float]:
        """Flat totals and per-second rates since the previous call, for GatewayMetrics."""
        read = sum(e.counters.points_read for e in self.devices.values())
        pub = self.publisher
        stats = self.buffer_stats()
        now = time.monotonic()
        out: dict[str, float] = {
            "points_read_total": read,
            "points_reported_total": sum(e.counters.points_reported for e in self.devices.values()),
            "points_published_total": pub.points_published,
            "batches_published_total": pub.batches_published,
            "read_errors_total": sum(e.counters.read_errors for e in self.devices.values()),
            "reconnects_total": sum(e.counters.reconnects for e in self.devices.values()),
            "poll_overruns_total": sum(e.counters.overruns for e in self.devices.values()),
            "buffer_batches": stats.batches,
            "buffer_bytes": stats.bytes,
            "buffer_samples": stats.samples,
            "buffer_max_bytes": self.buffer_max_bytes,
            "buffer_dropped_samples_total": stats.dropped_samples,
            "mqtt_connected": 1.0 if pub.is_connected else 0.0,
            "mqtt_inflight_batches": pub.inflight,
            "devices": len(self.devices),
            "devices_connected": sum(1 for e in self.devices.values() if e.is_connected()),
        }
        if stats.oldest_ms is not None:
            out["buffer_oldest_age_s"] = round(
                max(time.time() * 1000 - stats.oldest_ms, 0) / 1000, 1
            )
        if self._last_rates is not None:
            then, read_then, pub_then = self._last_rates
            span = max(now - then, 1e-3)
            out["points_read_per_s"] = round((read - read_then) / span, 1)
            out["points_published_per_s"] = round((pub.points_published - pub_then) / span, 1)
            out.update(self._device_read_rates(span))
        self._last_rates = (now, read, pub.points_published)
        self._last_device_reads = {d: e.counters.points_read for d, e in self.devices.items()}
        return out

    def _device_read_rates(self, span: float) -> dict[str, float]:
        """Per device, ``points_read_per_s.<device>``: the fleet console shows which machine
        stopped being read even while the gateway as a whole still reads others."""
        rates: dict[str, float] = {}
        for device, entry in self.devices.items():
            before = self._last_device_reads.get(device)
            if before is not None:
                rates[f"{DEVICE_READ_RATE}{device}"] = round(
                    (entry.counters.points_read - before) / span, 1
                )
        return rates


class _HubCollector(Collector):
    def __init__(self, hub: GatewayMetricsHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        labels = ["device", "driver"]
        per_device: list[tuple[str, str, Callable[[DeviceEntry], float]]] = [
            ("points_read", "Raw readings received from devices", lambda e: e.counters.points_read),
            (
                "points_reported",
                "Samples passed on after report-by-exception",
                lambda e: e.counters.points_reported,
            ),
            ("bad_samples", "Samples of bad quality", lambda e: e.counters.bad_samples),
            (
                "read_errors",
                "Failed read cycles and lost sessions",
                lambda e: e.counters.read_errors,
            ),
            ("reconnects", "Reconnects to the device", lambda e: e.counters.reconnects),
            (
                "poll_overruns",
                "Poll cycles skipped because one overran",
                lambda e: e.counters.overruns,
            ),
            ("requests", "Protocol requests sent", lambda e: e.counters.requests),
        ]
        for what, doc, get in per_device:
            family = CounterMetricFamily(f"shulian_gateway_{what}", doc, labels=labels)
            for device, entry in hub.devices.items():
                family.add_metric([device, entry.driver], get(entry))
            yield family
        connected = GaugeMetricFamily(
            "shulian_gateway_device_connected", "1 while the device's session is up", labels=labels
        )
        for device, entry in hub.devices.items():
            connected.add_metric([device, entry.driver], 1.0 if entry.is_connected() else 0.0)
        yield connected

        pub = hub.publisher
        yield CounterMetricFamily(
            "shulian_gateway_points_published",
            "Samples acknowledged by the broker (PUBACK)",
            value=pub.points_published,
        )
        yield CounterMetricFamily(
            "shulian_gateway_batches_published",
            "Batches acknowledged by the broker (PUBACK)",
            value=pub.batches_published,
        )
        yield CounterMetricFamily(
            "shulian_gateway_batches_refused",
            "Batches the broker refused (PUBACK with an error code)",
            value=pub.batches_refused,
        )
        yield CounterMetricFamily(
            "shulian_gateway_batches_unrouted",
            "Batches the broker took with no subscriber to give them to (kept and sent again)",
            value=pub.batches_unrouted,
        )
        yield CounterMetricFamily(
            "shulian_gateway_mqtt_connects", "Successful MQTT connections", value=pub.connects
        )
        yield GaugeMetricFamily(
            "shulian_gateway_mqtt_connected", "1 while connected to the broker",
            value=1.0 if pub.is_connected else 0.0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "shulian_gateway_mqtt_inflight_batches", "Batches awaiting PUBACK", value=pub.inflight
        )
        stats = hub.buffer_stats()
        yield GaugeMetricFamily(
            "shulian_gateway_buffer_batches", "Batches in the disk buffer", value=stats.batches
        )
        yield GaugeMetricFamily(
            "shulian_gateway_buffer_bytes", "Bytes in the disk buffer", value=stats.bytes
        )
        yield CounterMetricFamily(
            "shulian_gateway_buffer_dropped_samples",
            "Samples dropped because the buffer was full or too old (data lost)",
            value=stats.dropped_samples,
        )
        yield CounterMetricFamily(
            "shulian_gateway_buffer_dropped_batches",
            "Batches dropped because the buffer was full or too old (data lost)",
            value=stats.dropped_batches,
        )

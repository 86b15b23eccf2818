"""Turn one group of signals into one OPC UA subscription, and its notifications into readings.

A group's ``interval_ms`` is the publishing interval; each signal becomes a monitored item with
its own sampling interval (the group's by default) and, when ``data_change_deadband`` is set, an
absolute DataChangeFilter the server applies. Readings carry the source timestamp (else the
server's, else now) and a quality from the status code: Good -> good, Uncertain -> uncertain,
Bad -> bad, with the status name as the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.drivers.base import DriverMetrics, RawReading, ReadingSink
from gateway.drivers.opcua.models import OpcUaSignal
from gateway.drivers.opcua.transport import (
    DataSample,
    MonitorItem,
    Resolution,
    SampleBatch,
    UaConnection,
    UaSubscription,
)
from gateway.profiles.models import GroupSpec
from wire.payloads import Quality

__all__ = [
    "GroupSubscription",
    "keepalive_count",
    "lifetime_count",
    "quality_of",
    "queue_size",
    "timestamp_ms",
    "to_reading",
]

_MAX_QUEUE = 100
"""Monitored-item queue bound: enough for every sample of a fast item between two publishes."""


def quality_of(status_code: int, status_name: str) -> tuple[Quality, str | None]:
    """Good -> good; Uncertain -> uncertain; Bad -> bad; the status name is the reason."""
    severity = (status_code >> 30) & 0b11
    if severity == 0:
        return Quality.GOOD, None
    if severity == 1:
        return Quality.UNCERTAIN, status_name
    return Quality.BAD, status_name


def timestamp_ms(sample: DataSample, now_ms: int) -> int:
    """The source timestamp, else the server's, else now; in UTC epoch milliseconds."""
    for stamp in (sample.source_ts, sample.server_ts):
        if stamp is not None and stamp.year > 1601:  # 1601-01-01 is OPC UA's "no timestamp"
            return int(stamp.timestamp() * 1000)
    return now_ms


def to_reading(signal: str, sample: DataSample, now_ms: int) -> RawReading:
    ts = timestamp_ms(sample, now_ms)
    if sample.problem is not None:
        return RawReading(signal, None, ts, Quality.BAD, sample.problem)
    quality, reason = quality_of(sample.status_code, sample.status_name)
    return RawReading(signal, sample.value, ts, quality, reason)


def keepalive_count(interval_ms: float, keepalive_s: float) -> int:
    """Publishing intervals between keep-alives, so an idle subscription still speaks every
    ``keepalive_s`` (and a silent one is noticed)."""
    return max(1, math.ceil(keepalive_s * 1000 / interval_ms))


def lifetime_count(interval_ms: float, keepalive: int, session_timeout_s: float) -> int:
    """Intervals the server keeps the subscription without a publish request; at least the
    session timeout and three keep-alives (the spec's minimum)."""
    return max(3 * keepalive, math.ceil(session_timeout_s * 1000 / interval_ms))


def queue_size(sampling_ms: float, interval_ms: float) -> int:
    """Room for every sample taken between two publishes, so no change is overwritten."""
    if sampling_ms <= 0:
        return 10
    return max(1, min(_MAX_QUEUE, math.ceil(interval_ms / sampling_ms)))


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


class GroupSubscription:
    """The handle ``OpcUaDriver.subscribe`` returns; the scheduler ``cancel()``s it."""

    def __init__(
        self,
        group: GroupSpec,
        signals: Sequence[OpcUaSignal],
        sink: ReadingSink,
        logger: logging.LoggerAdapter[Any],
        metrics: DriverMetrics,
    ) -> None:
        self.group = group
        self._signals = list(signals)
        self._names = {handle: s.name for handle, s in enumerate(self._signals, start=1)}
        self._sink = sink
        self.log = logger
        self._metrics = metrics
        self._connection: UaConnection | None = None
        self._subscription: UaSubscription | None = None

    def monitor_items(
        self, resolved: Mapping[str, Resolution]
    ) -> tuple[list[MonitorItem], list[RawReading]]:
        """One item per signal that resolved; a bad reading (with why) for each that did not."""
        items: list[MonitorItem] = []
        unresolved: list[RawReading] = []
        now = _now_ms()
        interval = float(self.group.interval_ms)
        for handle, signal in enumerate(self._signals, start=1):
            resolution = resolved.get(signal.name)
            if resolution is None or resolution.node is None:
                reason = resolution.problem if resolution else "address not resolved"
                unresolved.append(RawReading(signal.name, None, now, Quality.BAD, reason))
                continue
            sampling = float(
                signal.sampling_interval_ms if signal.sampling_interval_ms is not None else interval
            )
            items.append(
                MonitorItem(
                    handle=handle,
                    node=resolution.node,
                    sampling_interval_ms=sampling,
                    queue_size=queue_size(sampling, interval),
                    deadband=signal.data_change_deadband,
                )
            )
        return items, unresolved

    async def start(
        self,
        connection: UaConnection,
        resolved: Mapping[str, Resolution],
        *,
        keepalive_s: float,
        session_timeout_s: float,
    ) -> None:
        """Create the subscription; signals the server refuses are delivered as bad readings."""
        items, bad = self.monitor_items(resolved)
        interval = float(self.group.interval_ms)
        keepalive = keepalive_count(interval, keepalive_s)
        self._connection = connection
        if items:
            self._subscription, refused = await connection.subscribe(
                interval_ms=interval,
                keepalive_count=keepalive,
                lifetime_count=lifetime_count(interval, keepalive, session_timeout_s),
                items=items,
                on_samples=self.deliver,
                on_status=self.on_status,
            )
            now = _now_ms()
            bad += [RawReading(self._names[h], None, now, Quality.BAD, name) for h, name in refused]
            self._metrics.extra["monitored_items"] = (
                self._metrics.extra.get("monitored_items", 0) + len(items) - len(refused)
            )
        if bad:
            self.log.warning(
                "group %s: %d signal(s) cannot be monitored: %s",
                self.group.name,
                len(bad),
                "; ".join(f"{r.signal}: {r.reason}" for r in bad[:5]),
            )
            self._sink(bad)

    def deliver(self, batch: SampleBatch) -> None:
        """Called from the publish loop with one publish response's values."""
        now = _now_ms()
        names = self._names
        readings = [to_reading(names[h], s, now) for h, s in batch if h in names]
        if readings:
            self._metrics.extra["notifications"] = self._metrics.extra.get(
                "notifications", 0
            ) + len(readings)
            self._sink(readings)

    def on_status(self, code: int, name: str) -> None:
        """The server ended or suspended the subscription: the session is not to be trusted."""
        connection = self._connection
        if connection is None or connection.is_lost:
            return  # asyncua reports BadShutdown to every subscription after a loss we know of
        self.log.warning("group %s: subscription status changed to %s", self.group.name, name)
        connection.subscription_ended(self.group.name, name)

    def silence_problem(self, now_mono: float | None = None, grace_s: float = 0.0) -> str | None:
        """Why this subscription looks dead (no data and no keep-alive for too long), or None."""
        sub = self._subscription
        if sub is None or sub.is_deleted:
            return None
        silent_s = (time.monotonic() if now_mono is None else now_mono) - sub.last_publish_mono
        if silent_s > 2 * sub.max_silence_s + grace_s:
            return (
                f"the subscription of group {self.group.name} has been silent for {silent_s:.1f} s "
                f"(keep-alive expected every {sub.max_silence_s:g} s)"
            )
        return None

    def detach(self) -> None:
        """Stop delivering without talking to the server (its session is being closed)."""
        sub, self._subscription = self._subscription, None
        if sub is not None:
            sub.detach()

    async def cancel(self) -> None:
        """Stop delivering and delete the subscription on the server; bounded, idempotent."""
        sub, self._subscription = self._subscription, None
        if sub is not None:
            await sub.delete()

"""Decode and check received MQTT messages: what to store, and what to reject with which reason.

Pure functions (no I/O), so hostile input is tested exhaustively without a broker. A telemetry
message is checked sample by sample: one bad sample never costs the good ones. The fast path
validates the whole batch in pydantic-core (Rust, straight from the bytes); only a message that
fails it is re-parsed leniently and validated one sample at a time to find what is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from pydantic import BaseModel, ValidationError

from ingest.errors import Reason
from ingest.settings import LimitsSettings
from wire.payloads import (
    Batch,
    DeviceStatus,
    GatewayMetrics,
    GatewayStatus,
    MachineState,
    Sample,
)
from wire.signals import is_custom, lookup_signal
from wire.topics import Topic, TopicError, TopicKind, parse_topic

QUALITY_CODES: Final = {"good": 0, "uncertain": 1, "bad": 2}
_MAX_FLOAT_INT: Final = 2**1023  # beyond this an int cannot become a float
_MAX_DETAIL: Final = 500
MACHINE_STATES: Final = frozenset(s.value for s in MachineState)


@dataclass(slots=True)
class Incoming:
    """One MQTT message as received, with what the consumer needs to acknowledge it later."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    """The broker connection it arrived on; only messages of the current one are acknowledged."""
    received_mono: float
    received_ms: int
    retained: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """A whole message rejected; ``topic`` is set when the topic itself parsed."""

    reason: Reason
    detail: str
    topic: Topic | None = None


@dataclass(frozen=True, slots=True)
class SampleRejection:
    index: int
    reason: Reason
    detail: str


Value = bool | int | float | str | None
GoodSample = tuple[int, str, str, int, Value, int]
"""A sample that passed decoding: index in the message, device, signal, ts_ms, value, quality."""


@dataclass(slots=True)
class TelemetryBatch:
    topic: Topic
    gateway: str
    boot: str
    seq: int
    historical: bool
    samples: list[GoodSample]
    rejections: list[SampleRejection] = field(default_factory=list)
    total_samples: int = 0


@dataclass(frozen=True, slots=True)
class GatewayStatusMessage:
    topic: Topic
    status: GatewayStatus


@dataclass(frozen=True, slots=True)
class DeviceStatusMessage:
    topic: Topic
    status: DeviceStatus


@dataclass(frozen=True, slots=True)
class MetricsMessage:
    topic: Topic
    metrics: GatewayMetrics


Decoded = TelemetryBatch | GatewayStatusMessage | DeviceStatusMessage | MetricsMessage | Rejected


def decode(message: Incoming, limits: LimitsSettings, now_ms: int) -> Decoded:
    """Decode any message of ours; never raises for bad input."""
    try:
        topic = parse_topic(message.topic)
    except TopicError as exc:
        return Rejected(Reason.UNKNOWN_TOPIC, str(exc))
    data = message.payload
    if len(data) > limits.max_message_bytes:
        return Rejected(
            Reason.OVERSIZED,
            f"message of {len(data)} bytes exceeds limits.max_message_bytes "
            f"({limits.max_message_bytes})",
            topic,
        )
    if topic.kind is TopicKind.TELEMETRY:
        return decode_telemetry(data, topic, limits, now_ms)
    if topic.kind is TopicKind.GATEWAY_STATUS:
        return _decode_status(data, topic, limits, now_ms)
    if topic.kind is TopicKind.DEVICE_STATUS:
        return _decode_device_status(data, topic, limits, now_ms)
    return _decode_metrics(data, topic, limits, now_ms)


def decode_telemetry(data: bytes, topic: Topic, limits: LimitsSettings, now_ms: int) -> Decoded:
    """Check a telemetry message against the wire model, its topic and the time window."""
    rejections: list[SampleRejection] = []
    try:
        batch = Batch.model_validate_json(data)
        samples: list[tuple[int, Sample]] = list(enumerate(batch.samples))
    except ValidationError:
        slow = _decode_batch_by_sample(data, topic)
        if isinstance(slow, Rejected):
            return slow
        batch, samples, rejections = slow
    if batch.gateway != topic.gateway:
        return Rejected(
            Reason.IDENTITY_MISMATCH,
            f"payload gateway {batch.gateway!r} differs from the topic's {topic.gateway!r}",
            topic,
        )
    if "\x00" in batch.boot:
        return Rejected(Reason.INVALID_PAYLOAD, "boot contains a NUL character", topic)
    total = len(samples) + len(rejections)
    good, more = _check_samples(samples, limits, now_ms)
    rejections.extend(more)
    rejections.sort(key=lambda r: r.index)
    return TelemetryBatch(
        topic, batch.gateway, batch.boot, batch.seq, batch.historical, good, rejections, total
    )


def _check_samples(
    samples: list[tuple[int, Sample]], limits: LimitsSettings, now_ms: int
) -> tuple[list[GoodSample], list[SampleRejection]]:
    """Time window, vocabulary, storable values and duplicates, sample by sample."""
    newest_ms = now_ms + int(limits.max_future_s * 1000)
    oldest_ms = now_ms - int(limits.max_age_s * 1000)
    accept_unknown = limits.accept_unknown_signals
    known_signals: dict[str, bool] = {}
    seen: set[tuple[str, str, int]] = set()
    good: list[GoodSample] = []
    rejections: list[SampleRejection] = []
    for index, sample in samples:
        ts_ms = sample.ts_ms
        if ts_ms > newest_ms:
            rejections.append(
                SampleRejection(
                    index,
                    Reason.TOO_NEW,
                    f"ts_ms {ts_ms} is {(ts_ms - now_ms) / 1000:.0f} s ahead (limit "
                    f"{limits.max_future_s:g} s); check the gateway's clock",
                )
            )
            continue
        if ts_ms < oldest_ms:
            rejections.append(
                SampleRejection(
                    index,
                    Reason.TOO_OLD,
                    f"ts_ms {ts_ms} is {(now_ms - ts_ms) / 1000:.0f} s old (limit "
                    f"{limits.max_age_s:g} s)",
                )
            )
            continue
        signal = sample.signal
        known = known_signals.get(signal)
        if known is None:
            known = known_signals[signal] = (
                accept_unknown or is_custom(signal) or lookup_signal(signal) is not None
            )
        if not known:
            rejections.append(
                SampleRejection(
                    index,
                    Reason.UNKNOWN_SIGNAL,
                    f"{signal!r} is not in wire.signals nor in a vendor namespace",
                )
            )
            continue
        value = sample.value
        value_type = type(value)
        # floats, bools and None are always storable: skip the call for the common case
        if value_type is str or value_type is int or signal == "machine_state":
            problem = _unstorable(value, signal)
            if problem:
                rejections.append(SampleRejection(index, Reason.INVALID_SAMPLE, problem))
                continue
        key = (sample.device, signal, ts_ms)
        if key in seen:
            rejections.append(
                SampleRejection(
                    index,
                    Reason.DUPLICATE_POINT,
                    f"{sample.device}/{signal} at ts_ms {ts_ms} already appears in this message",
                )
            )
            continue
        seen.add(key)
        good.append((index, sample.device, signal, ts_ms, value, QUALITY_CODES[sample.quality]))
    return good, rejections


def _unstorable(value: object, signal: str) -> str:
    """Why a value the wire model accepted cannot be stored ('' when it can)."""
    if signal == "machine_state" and value is not None and value not in MACHINE_STATES:
        return f"machine_state {value!r} is not one of {', '.join(sorted(MACHINE_STATES))}"
    if type(value) is int and not -_MAX_FLOAT_INT < value < _MAX_FLOAT_INT:
        return "integer value too large for double precision"
    if type(value) is str and "\x00" in value:
        return "text value contains a NUL character"
    return ""


def _decode_batch_by_sample(
    data: bytes, topic: Topic
) -> tuple[Batch, list[tuple[int, Sample]], list[SampleRejection]] | Rejected:
    """The slow path: find which part of a batch is wrong, keeping every good sample."""
    obj = _lenient_json(data)
    if isinstance(obj, Rejected):
        return Rejected(obj.reason, obj.detail, topic)
    if not isinstance(obj, dict):
        return Rejected(Reason.INVALID_PAYLOAD, "payload is not a JSON object", topic)
    raw_samples = obj.get("samples")
    if not isinstance(raw_samples, list):
        return Rejected(Reason.INVALID_PAYLOAD, "samples: not a list", topic)
    try:
        envelope = Batch.model_validate({**obj, "samples": []})
    except ValidationError as exc:
        return Rejected(Reason.INVALID_PAYLOAD, _describe(exc, "Batch"), topic)
    samples: list[tuple[int, Sample]] = []
    rejections: list[SampleRejection] = []
    for index, raw in enumerate(raw_samples):
        try:
            samples.append((index, Sample.model_validate(raw)))
        except ValidationError as exc:
            reason = Reason.NON_FINITE if _is_non_finite(raw) else Reason.INVALID_SAMPLE
            rejections.append(SampleRejection(index, reason, _describe(exc, f"samples[{index}]")))
    return envelope, samples, rejections


def _lenient_json(data: bytes) -> Any:
    """Parse JSON; unlike orjson, accept NaN/Infinity tokens so their samples can be rejected
    one by one instead of losing the whole message."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Rejected(Reason.MALFORMED_JSON, f"not UTF-8 at byte {exc.start}")
    except (json.JSONDecodeError, RecursionError) as exc:
        return Rejected(Reason.MALFORMED_JSON, f"not valid JSON: {str(exc)[:_MAX_DETAIL]}")


def _is_non_finite(raw: object) -> bool:
    return (
        isinstance(raw, dict)
        and isinstance(raw.get("value"), float)
        and not math.isfinite(raw["value"])
    )


def _describe(exc: ValidationError, what: str) -> str:
    parts = []
    for error in exc.errors()[:3]:
        loc = ".".join(str(p) for p in error["loc"])
        parts.append(f"{what}.{loc}: {error['msg']}" if loc else f"{what}: {error['msg']}")
    more = exc.error_count() - len(parts)
    text = "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
    return text[:_MAX_DETAIL]


def _validate(model: type[BaseModel], data: bytes, topic: Topic) -> BaseModel | Rejected:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        obj = _lenient_json(data)
        if isinstance(obj, Rejected):
            return Rejected(obj.reason, obj.detail, topic)
        return Rejected(Reason.INVALID_PAYLOAD, _describe(exc, model.__name__), topic)


def _has_nul(model: BaseModel) -> bool:
    for value in model.__dict__.values():
        if isinstance(value, str) and "\x00" in value:
            return True
        if isinstance(value, list) and any(isinstance(v, str) and "\x00" in v for v in value):
            return True
    return False


def _out_of_window(
    ts_ms: int, what: str, topic: Topic, limits: LimitsSettings, now_ms: int, *, check_age: bool
) -> Rejected | None:
    """Status and metrics messages get telemetry's time window (limits.max_future_s/max_age_s).

    A far-future status would win every later comparison (statuses apply newest-first), freezing
    its gateway's or device's status for good. The age limit is not applied to gateway and device
    status (``check_age=False``): a retained birth, a Last Will and a device status carry the time
    they were made, legitimately older than the replay horizon for a gateway up for weeks, and an
    old status never overrides a newer one.
    """
    if ts_ms > now_ms + int(limits.max_future_s * 1000):
        return Rejected(
            Reason.TOO_NEW,
            f"{what} ts_ms {ts_ms} is {(ts_ms - now_ms) / 1000:.0f} s ahead (limit "
            f"{limits.max_future_s:g} s); check the gateway's clock",
            topic,
        )
    if check_age and ts_ms < now_ms - int(limits.max_age_s * 1000):
        return Rejected(
            Reason.TOO_OLD,
            f"{what} ts_ms {ts_ms} is {(now_ms - ts_ms) / 1000:.0f} s old (limit "
            f"{limits.max_age_s:g} s)",
            topic,
        )
    return None


def _decode_status(data: bytes, topic: Topic, limits: LimitsSettings, now_ms: int) -> Decoded:
    status = _validate(GatewayStatus, data, topic)
    if isinstance(status, Rejected):
        return status
    assert isinstance(status, GatewayStatus)
    if status.gateway != topic.gateway or status.enterprise != topic.enterprise:
        return Rejected(
            Reason.IDENTITY_MISMATCH,
            f"payload says {status.enterprise}/{status.gateway}, topic says "
            f"{topic.enterprise}/{topic.gateway}",
            topic,
        )
    if _has_nul(status):
        return Rejected(Reason.INVALID_PAYLOAD, "a text field contains a NUL character", topic)
    late = _out_of_window(status.ts_ms, "status", topic, limits, now_ms, check_age=False)
    return late or GatewayStatusMessage(topic, status)


def _decode_device_status(
    data: bytes, topic: Topic, limits: LimitsSettings, now_ms: int
) -> Decoded:
    status = _validate(DeviceStatus, data, topic)
    if isinstance(status, Rejected):
        return status
    assert isinstance(status, DeviceStatus)
    if status.gateway != topic.gateway or status.device != topic.device:
        return Rejected(
            Reason.IDENTITY_MISMATCH,
            f"payload says {status.gateway}/{status.device}, topic says "
            f"{topic.gateway}/{topic.device}",
            topic,
        )
    if _has_nul(status):
        return Rejected(Reason.INVALID_PAYLOAD, "a text field contains a NUL character", topic)
    late = _out_of_window(status.ts_ms, "device status", topic, limits, now_ms, check_age=False)
    return late or DeviceStatusMessage(topic, status)


def _decode_metrics(data: bytes, topic: Topic, limits: LimitsSettings, now_ms: int) -> Decoded:
    metrics = _validate(GatewayMetrics, data, topic)
    if isinstance(metrics, Rejected):
        return metrics
    assert isinstance(metrics, GatewayMetrics)
    if metrics.gateway != topic.gateway:
        return Rejected(
            Reason.IDENTITY_MISMATCH,
            f"payload gateway {metrics.gateway!r} differs from the topic's {topic.gateway!r}",
            topic,
        )
    figures = metrics.figures
    if not all(math.isfinite(v) for v in figures.values()) or any("\x00" in k for k in figures):
        return Rejected(
            Reason.INVALID_PAYLOAD, "figures must be finite numbers under names without NUL", topic
        )
    late = _out_of_window(metrics.ts_ms, "metrics", topic, limits, now_ms, check_age=True)
    return late or MetricsMessage(topic, metrics)

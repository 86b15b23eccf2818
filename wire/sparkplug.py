"""Sparkplug B (Eclipse Sparkplug 3.0) on the wire: topic namespace, payload encoding, datatypes.

Both the gateway (an edge node publishing Sparkplug) and the ingest (a host application reading
third-party edge nodes) use this module; the protobuf encoding itself is the generated
``wire.sparkplug_b_pb2`` (from ``wire/sparkplug_b.proto``), never written by hand here.

Topics::

    spBv1.0/{group}/NBIRTH|NDATA|NDEATH|NCMD/{node}
    spBv1.0/{group}/DBIRTH|DDATA|DDEATH|DCMD/{node}/{device}
    spBv1.0/STATE/{host_id}                      (a host application's online state, JSON)

What shulian puts in a payload: each metric is one of our signals, named by its signal name
(``spindle_speed``, ``voltage.l1``); births carry its datatype, its alias and its canonical unit as
the property ``engUnit`` (the property name Ignition and Neuron show); a sample that is not good
carries the property ``Quality`` with the OPC UA-style code Ignition uses (192 good, 64 uncertain,
0 bad) and, when known, ``QualityReason``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Final

from google.protobuf.message import DecodeError

from wire import sparkplug_b_pb2
from wire.signals import SignalKind, lookup_signal

NAMESPACE: Final = "spBv1.0"
BDSEQ: Final = "bdSeq"
REBIRTH: Final = "Node Control/Rebirth"
ENG_UNIT: Final = "engUnit"
QUALITY: Final = "Quality"
QUALITY_REASON: Final = "QualityReason"
QUALITY_CODES: Final = {"good": 192, "uncertain": 64, "bad": 0}
SEQ_MODULO: Final = 256
_TOPIC_ID: Final = re.compile(r"^[^/+#]{1,255}$")
pb: Any = sparkplug_b_pb2  # protoc's module is untyped
PbMetric = Any
"""``pb.Payload.Metric`` (untyped generated class)."""


class SparkplugError(ValueError):
    """A Sparkplug topic or payload that cannot be read; ``reason`` is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class MessageType(StrEnum):
    NBIRTH = "NBIRTH"
    NDATA = "NDATA"
    NDEATH = "NDEATH"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDATA = "DDATA"
    DDEATH = "DDEATH"
    DCMD = "DCMD"
    STATE = "STATE"


DEVICE_TYPES: Final = frozenset(
    {MessageType.DBIRTH, MessageType.DDATA, MessageType.DDEATH, MessageType.DCMD}
)


class DataType(IntEnum):
    """The scalar Sparkplug datatypes shulian reads and writes (the .proto's DataType values)."""

    INT8 = pb.Int8
    INT16 = pb.Int16
    INT32 = pb.Int32
    INT64 = pb.Int64
    UINT8 = pb.UInt8
    UINT16 = pb.UInt16
    UINT32 = pb.UInt32
    UINT64 = pb.UInt64
    FLOAT = pb.Float
    DOUBLE = pb.Double
    BOOLEAN = pb.Boolean
    STRING = pb.String
    DATETIME = pb.DateTime
    TEXT = pb.Text


_SIGNED_BITS: Final = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}
_INT32_FIELD: Final = frozenset(
    {
        DataType.INT8,
        DataType.INT16,
        DataType.INT32,
        DataType.UINT8,
        DataType.UINT16,
        DataType.UINT32,
    }
)

Value = bool | int | float | str | None


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed Sparkplug topic; ``node`` is the host id for STATE."""

    type: MessageType
    group: str
    node: str
    device: str | None = None

    def __str__(self) -> str:
        if self.type is MessageType.STATE:
            return f"{NAMESPACE}/STATE/{self.node}"
        base = f"{NAMESPACE}/{self.group}/{self.type.value}/{self.node}"
        return f"{base}/{self.device}" if self.device is not None else base


def check_id(value: str, what: str) -> str:
    """A Sparkplug id: any UTF-8 text without '/', '+' or '#' (the spec's rule)."""
    if not _TOPIC_ID.match(value):
        raise SparkplugError("bad_topic", f"{what} {value!r} cannot be a Sparkplug topic level")
    return value


def node_topic(group: str, type_: MessageType, node: str) -> str:
    return str(Topic(type_, check_id(group, "group"), check_id(node, "edge node")))


def device_topic(group: str, type_: MessageType, node: str, device: str) -> str:
    return str(
        Topic(
            type_, check_id(group, "group"), check_id(node, "edge node"), check_id(device, "device")
        )
    )


def state_topic(host_id: str) -> str:
    return str(Topic(MessageType.STATE, "", check_id(host_id, "host id")))


def parse_topic(topic: str) -> Topic:
    """Parse a ``spBv1.0/...`` topic; raise SparkplugError saying why it is not one."""
    parts = topic.split("/")
    if parts[0] != NAMESPACE:
        raise SparkplugError("bad_topic", f"topic {topic!r} is not under {NAMESPACE}/")
    if len(parts) == 3 and parts[1] == "STATE":
        return Topic(MessageType.STATE, "", check_id(parts[2], "host id"))
    if len(parts) not in (4, 5):
        raise SparkplugError("bad_topic", f"topic {topic!r} has {len(parts)} levels, not 4 or 5")
    try:
        type_ = MessageType(parts[2])
    except ValueError:
        raise SparkplugError(
            "bad_topic", f"topic {topic!r}: unknown message type {parts[2]!r}"
        ) from None
    is_device = type_ in DEVICE_TYPES
    if is_device != (len(parts) == 5) or type_ is MessageType.STATE:
        raise SparkplugError(
            "bad_topic", f"topic {topic!r}: {type_.value} needs {'5' if is_device else '4'} levels"
        )
    device = check_id(parts[4], "device") if is_device else None
    return Topic(type_, check_id(parts[1], "group"), check_id(parts[3], "edge node"), device)


def datatype_for_signal(signal: str) -> DataType:
    """The Sparkplug datatype a shulian signal is published as.

    States and text are strings, ``alarm_active`` is a boolean; every other signal is a number on
    our wire (JSON), published as Double so a birth's type holds whatever value comes later.
    """
    spec = lookup_signal(signal)
    if spec is None:
        return DataType.DOUBLE
    if spec.kind in (SignalKind.STATE, SignalKind.TEXT):
        return DataType.STRING
    if spec.name == "alarm_active":
        return DataType.BOOLEAN
    return DataType.DOUBLE


def unit_of_signal(signal: str) -> str:
    spec = lookup_signal(signal)
    return spec.unit if spec is not None else ""


@dataclass(slots=True)
class MetricOut:
    """One metric to encode. ``name`` goes out in births (and NCMD/NDEATH), ``alias`` always
    when set; ``value`` None is sent as ``is_null``."""

    datatype: DataType
    value: Value
    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    is_historical: bool = False
    unit: str = ""
    quality: str | None = None
    reason: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def encode_payload(timestamp: int, metrics: list[MetricOut], seq: int | None = None) -> bytes:
    """A Sparkplug B payload (NDEATH carries no ``seq``: pass None)."""
    payload = pb.Payload()
    payload.timestamp = timestamp
    if seq is not None:
        payload.seq = seq
    for out in metrics:
        _fill_metric(payload.metrics.add(), out)
    data: bytes = payload.SerializeToString()
    return data


def _fill_metric(metric: PbMetric, out: MetricOut) -> None:
    if out.name is not None:
        metric.name = out.name
    if out.alias is not None:
        metric.alias = out.alias
    if out.timestamp is not None:
        metric.timestamp = out.timestamp
    metric.datatype = int(out.datatype)
    if out.is_historical:
        metric.is_historical = True
    props: dict[str, str | int] = {}
    if out.unit:
        props[ENG_UNIT] = out.unit
    if out.quality is not None and out.quality != "good":
        props[QUALITY] = QUALITY_CODES.get(out.quality, 0)
        if out.reason:
            props[QUALITY_REASON] = out.reason
    props.update(out.extra)
    for key, prop in props.items():
        metric.properties.keys.append(key)
        value = metric.properties.values.add()
        if isinstance(prop, int):
            value.type = pb.Int32
            value.int_value = prop
        else:
            value.type = pb.String
            value.string_value = prop
    if out.value is None:
        metric.is_null = True
        return
    _set_value(metric, out.datatype, out.value)


def _set_value(metric: PbMetric, datatype: DataType, value: bool | int | float | str) -> None:
    if datatype in (DataType.STRING, DataType.TEXT):
        metric.string_value = str(value)
    elif datatype is DataType.BOOLEAN:
        metric.boolean_value = bool(value) if not isinstance(value, str) else value == "true"
    elif datatype in (DataType.DOUBLE, DataType.FLOAT):
        number = float(value) if not isinstance(value, str) else float("nan")
        if datatype is DataType.DOUBLE:
            metric.double_value = number
        else:
            metric.float_value = number
    else:
        number_int = int(value) if not isinstance(value, str) else 0
        bits = _SIGNED_BITS.get(datatype)
        if bits is not None and number_int < 0:
            # Tahu's convention (and pysparkplug's): two's complement in the type's own width.
            # Reading masks to that width, so Java-style 32-bit sign extension reads the same.
            number_int += 1 << bits
        if datatype in _INT32_FIELD:
            metric.int_value = number_int
        else:
            metric.long_value = number_int


def decode_payload(data: bytes) -> Any:
    """Parse a Sparkplug B payload; raise SparkplugError when it is not one."""
    payload = pb.Payload()
    try:
        payload.ParseFromString(data)
    except (DecodeError, RuntimeError) as exc:
        raise SparkplugError("undecodable", f"not a Sparkplug B payload: {exc}") from None
    return payload


def metric_value(metric: PbMetric, datatype: int) -> Value:
    """The Python value of a metric of ``datatype`` (from the metric or its birth).

    Raises:
        SparkplugError: the datatype is one shulian does not store (arrays, datasets,
            templates, bytes), or the value field does not match it.
    """
    if metric.is_null:
        return None
    try:
        kind = DataType(datatype)
    except ValueError:
        raise SparkplugError(
            "unsupported_datatype", f"datatype {datatype} is not a scalar shulian stores"
        ) from None
    which = metric.WhichOneof("value")
    if which is None:
        return None
    raw = getattr(metric, which)
    if kind in (DataType.STRING, DataType.TEXT):
        if which != "string_value":
            raise SparkplugError("type_mismatch", f"{kind.name} metric carries {which}")
        return str(raw)
    if kind is DataType.BOOLEAN:
        if which != "boolean_value":
            raise SparkplugError("type_mismatch", f"BOOLEAN metric carries {which}")
        return bool(raw)
    if kind in (DataType.DOUBLE, DataType.FLOAT):
        if which not in ("double_value", "float_value"):
            raise SparkplugError("type_mismatch", f"{kind.name} metric carries {which}")
        return float(raw)
    if which not in ("int_value", "long_value"):
        raise SparkplugError("type_mismatch", f"{kind.name} metric carries {which}")
    number = int(raw)
    bits = _SIGNED_BITS.get(kind)
    if bits is not None:
        number &= (1 << bits) - 1
        if number >= 1 << (bits - 1):
            number -= 1 << bits
    return number


def properties(metric: PbMetric) -> dict[str, str | int | float | bool]:
    """A metric's scalar properties by key (``engUnit``, ``Quality``, ...)."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in zip(metric.properties.keys, metric.properties.values, strict=False):
        which = value.WhichOneof("value")
        if which in (
            "int_value",
            "long_value",
            "float_value",
            "double_value",
            "boolean_value",
            "string_value",
        ):
            out[key] = getattr(value, which)
    return out


def quality_of(code: int) -> str:
    """Our quality name for an OPC UA-style quality code (Ignition: 192 good, 64 uncertain)."""
    if code >= 192:
        return "good"
    return "uncertain" if code >= 64 else "bad"


def next_seq(seq: int) -> int:
    return (seq + 1) % SEQ_MODULO

"""The MQTT wire contract shared by the gateway and the ingest: topics, payloads, codec, vocabulary.

Nothing here imports the rest of the project, so both sides (and third parties) can depend on it alone.
"""

from wire.codec import WireError, decode_batch, decode_status, encode
from wire.payloads import (
    WIRE_VERSION,
    Batch,
    CustomSignal,
    DeviceConnection,
    DeviceStatus,
    GatewayMetrics,
    GatewayStatus,
    MachineState,
    Meaning,
    Quality,
    Sample,
)
from wire.signals import SIGNALS, SignalKind, SignalSpec, base_name, is_custom, lookup_signal
from wire.topics import Topic, TopicError, TopicKind, parse_topic

__all__ = [
    "SIGNALS",
    "WIRE_VERSION",
    "Batch",
    "CustomSignal",
    "DeviceConnection",
    "DeviceStatus",
    "GatewayMetrics",
    "GatewayStatus",
    "MachineState",
    "Meaning",
    "Quality",
    "Sample",
    "SignalKind",
    "SignalSpec",
    "Topic",
    "TopicError",
    "TopicKind",
    "WireError",
    "base_name",
    "decode_batch",
    "decode_status",
    "encode",
    "is_custom",
    "lookup_signal",
    "parse_topic",
]

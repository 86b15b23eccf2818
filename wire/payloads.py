"""Payload models of wire version 1: what a gateway publishes and the ingest accepts.

Every model is frozen and carries ``v``, the wire version, as "MAJOR.MINOR". Minor versions only
add optional fields, so a reader accepts any ``1.x``; a new major version gets a new topic namespace.

Example telemetry batch (topic ``shulian/v1/ent-001/gw-01/telemetry``)::

    {"v": "1.0", "gateway": "gw-01", "boot": "3f0c8a1e-...", "seq": 42, "ts_ms": 1764324000123,
     "historical": false,
     "samples": [
       {"device": "grinder-01", "signal": "spindle_speed", "ts_ms": 1764324000100,
        "value": 24000.0, "quality": "good"},
       {"device": "grinder-01", "signal": "machine_state", "ts_ms": 1764324000100,
        "value": "running", "quality": "good"}]}

``(gateway, boot, seq)`` identifies a batch for ever: ``boot`` is new at each gateway process start
and ``seq`` counts up from 1 within it, so the ingest can drop redelivered batches.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

WIRE_VERSION: Final = "1.2"

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
SignalName = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)?$", max_length=80)
]
Version = Annotated[str, StringConstraints(pattern=r"^1\.\d+$")]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Text = Annotated[str, StringConstraints(max_length=1024)]
Value = bool | int | FiniteFloat | Text | None
"""NaN and Infinity are not numbers on the wire (a bad reading is null with quality bad); text is
limited to 1024 characters. Built-in constraints, not a Python validator: this runs per sample."""


class Quality(StrEnum):
    """OPC-UA-like quality of one sample."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class MachineState(StrEnum):
    """Normalized machine states; ``offline`` is derived by the ingest, never sent."""

    RUNNING = "running"
    IDLE = "idle"
    SETUP = "setup"
    FAULT = "fault"
    OFF = "off"


class DeviceConnection(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    ERROR = "error"


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    v: Version = WIRE_VERSION


class Sample(BaseModel):
    """One value of one signal of one device at one time."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    device: Id
    signal: SignalName
    ts_ms: int = Field(ge=0)
    value: Value
    quality: Quality = Quality.GOOD
    reason: Text | None = None
    """Why the quality is not good (1.1): an OPC UA status name (``BadWaitingForInitialData``),
    a Modbus exception or a conversion problem; absent on good samples."""


class Batch(_Payload):
    """A gateway's telemetry message: samples of any of its devices."""

    gateway: Id
    boot: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    seq: int = Field(ge=1)
    ts_ms: int = Field(ge=0)
    historical: bool = False
    """True when the batch was published from the backlog after an outage, not live."""
    samples: list[Sample]


class GatewayStatus(_Payload):
    """Retained birth/death of a gateway; the offline form is also its MQTT Last Will."""

    gateway: Id
    enterprise: Id
    online: bool
    boot: str
    ts_ms: int = Field(ge=0)
    version: str = ""
    config_hash: str = ""
    started_ms: int = 0
    devices: list[Id] = Field(default_factory=list)
    buffer_dropped_samples: int = 0
    """Samples the gateway's disk buffer had to drop since it was created (data lost)."""
    will: bool = False
    """True on the MQTT Last Will (1.1). Its ``ts_ms`` is then when the Will was set (the
    gateway's connect), not when the gateway went offline, which no gateway can know: the broker
    publishes the Will at the loss, and a reader takes that delivery as the offline time."""


class DeviceStatus(_Payload):
    """Retained per-device connection status."""

    gateway: Id
    device: Id
    connection: DeviceConnection
    ts_ms: int = Field(ge=0)
    profile: str = ""
    last_good_ms: int | None = None
    error: str | None = None
    max_silence_s: dict[SignalName, Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = (
        None
    )
    """Per signal, the longest the gateway leaves it unreported while the device is connected
    (1.2): its report-by-exception heartbeat plus its poll or publishing interval, in seconds.
    The ingest measures completeness against it (docs/kpis.md); absent from older gateways."""


class GatewayMetrics(_Payload):
    """Periodic health figures of a gateway (also on its Prometheus endpoint)."""

    gateway: Id
    ts_ms: int = Field(ge=0)
    figures: dict[str, float]


Payload = Batch | GatewayStatus | DeviceStatus | GatewayMetrics
Kind = Literal["batch", "gateway_status", "device_status", "metrics"]

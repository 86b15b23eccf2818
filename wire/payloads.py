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

import hashlib
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from wire.signals import SIGNALS, SignalKind, custom_name_problem

WIRE_VERSION: Final = "1.2"

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
SignalName = Annotated[
    str,
    StringConstraints(
        pattern=r"^([a-z][a-z0-9_]*:)?[a-z][a-z0-9_]*(\.[a-z0-9_]+)?$", max_length=80
    ),
]
"""A canonical name (``voltage.l1``) or, since 1.2, a custom one in a vendor namespace
(``acme:fan_speed``, ``acme:fan_speed.left``), declared in the device's status."""
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


class Meaning(BaseModel):
    """What a custom signal means, in English and Chinese (shown in the reader's language)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    en: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    zh: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class CustomSignal(BaseModel):
    """A profile's own signal (1.2): what the canonical vocabulary says of a canonical name."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")]
    """``namespace:name``, without a qualifier; samples may qualify it (``acme:fan_speed.l``)."""
    kind: SignalKind
    unit: Annotated[str, StringConstraints(max_length=64)] = ""
    """Canonical unit of the signal (pint syntax); empty for none."""
    meaning: Meaning
    counts_as: SignalName | None = None
    """The canonical counter it counts as in KPIs; None: it never counts."""

    @field_validator("name")
    @classmethod
    def _not_canonical(cls, name: str) -> str:
        problem = custom_name_problem(name)  # a canonical local name would read as the canonical
        if problem is not None:
            raise ValueError(problem)
        return name

    @model_validator(mode="after")
    def _counts_as_a_counter(self) -> CustomSignal:
        """Only a counter maps onto a canonical counter: KPIs sum counter increments."""
        if self.counts_as is None:
            return self
        spec = SIGNALS.get(self.counts_as)
        if spec is None or spec.kind is not SignalKind.COUNTER:
            raise ValueError(f"counts_as {self.counts_as!r} is not a canonical counter")
        if self.kind is not SignalKind.COUNTER:
            raise ValueError(f"a {self.kind.value} cannot count as {self.counts_as!r}")
        return self


class DeviceStatus(_Payload):
    """Retained per-device connection status."""

    gateway: Id
    device: Id
    connection: DeviceConnection
    ts_ms: int = Field(ge=0)
    profile: str = ""
    last_good_ms: int | None = None
    error: str | None = None
    custom_signals: list[CustomSignal] = Field(default_factory=list)
    """The custom signals of the device's profile (1.2), so the ingest can store and show them."""
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


DEVICE_READ_RATE = "points_read_per_s."
"""GatewayMetrics figures named with this prefix and a device id are that device's raw readings
per second since the previous metrics message (gateways from 0.x on; absent from older ones)."""


class ConfigFile(BaseModel):
    """One file of a remote configuration: a profile or the site file, with its hash."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}\.ya?ml$")]
    """A plain file name (no folders), so a bundle cannot write outside the gateway's folder."""
    kind: Literal["profile", "site"]
    version: int = Field(ge=1)
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    content: str


class ConfigBundle(_Payload):
    """The configuration the cloud assigned to one gateway (retained on its ``config`` topic).

    ``revision`` grows with every assignment (a rollback is a new revision of older files);
    ``sha256`` is ``bundle_hash(files)``, which the gateway recomputes before using anything.
    """

    gateway: Id
    enterprise: Id
    revision: int = Field(ge=1)
    ts_ms: int = Field(ge=0)
    files: list[ConfigFile]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ConfigReport(_Payload):
    """A gateway's answer about one delivered revision: applied, or refused with every message."""

    gateway: Id
    revision: int = Field(ge=0)
    status: Literal["applied", "refused"]
    sha256: str = ""
    messages: list[Annotated[str, StringConstraints(max_length=2000)]] = Field(default_factory=list)
    restarted: list[Id] = Field(default_factory=list)
    """Devices restarted to apply it (those whose configuration changed)."""
    ts_ms: int = Field(ge=0)


def file_hash(content: str) -> str:
    """sha256 of a file's text as UTF-8, as stored with each uploaded version."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def bundle_hash(files: list[ConfigFile]) -> str:
    """sha256 over the files' names and contents in name order; both ends compute it the same way."""
    digest = hashlib.sha256()
    for file in sorted(files, key=lambda f: f.name):
        digest.update(file.name.encode("utf-8") + b"\0" + file_hash(file.content).encode() + b"\n")
    return digest.hexdigest()


Payload = Batch | GatewayStatus | DeviceStatus | GatewayMetrics
Kind = Literal["batch", "gateway_status", "device_status", "metrics"]

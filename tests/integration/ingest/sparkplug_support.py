"""A third-party Sparkplug B edge node for tests: pysparkplug's payload classes over plain paho.

Nothing of ours encodes here: births, data and deaths are pysparkplug objects, so what the ingest
reads was made by an independent implementation. The node answers NCMD ``Node Control/Rebirth``
as the spec says (a new NBIRTH with seq 0 and the same bdSeq, then every DBIRTH).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pysparkplug as sp
from ingest_support import ingest_settings
from paho.mqtt.enums import CallbackAPIVersion

from ingest.service import IngestService
from monitoring.db.migrate import ALL_CHAINS

GROUP, NODE = "plant-7", "neuron-1"

MAPPING = """\
# Which Sparkplug edge node is which enterprise and gateway, and what its metrics are.
edge_nodes:
  - group: plant-7
    node: neuron-1
    enterprise: ent-001
    gateway: spb-neuron-1
    devices:
      - sparkplug: plc-1
        device: press-01
        metrics:
          Press/Force: {signal: press_force, scale: 0.001}   # N -> kN
          Press/Strokes: stroke_count
          State: machine_state
"""

METRICS = {
    "Press/Force": (1, sp.DataType.FLOAT),
    "Press/Strokes": (2, sp.DataType.INT64),
    "State": (3, sp.DataType.STRING),
    "Secret/Unmapped": (4, sp.DataType.DOUBLE),
}
"""metric name -> (alias, datatype), as the edge node announces them in its DBIRTH."""


def write_mapping(folder: Path, text: str = MAPPING) -> Path:
    path = folder / "sparkplug-mapping.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def sparkplug_ingest(
    pg_url: str, mqtt_url: str, mapping: Path, client_id: str = ""
) -> IngestService:
    """The ingest in process with ``mapping``, subscribed (Sparkplug topics too) when it returns;
    quick rebirth requests so tests need not wait for them."""
    settings = ingest_settings(
        pg_url,
        mqtt_url,
        sparkplug={"mapping_file": mapping, "rebirth_interval_s": 0.5},
        **({"mqtt": {"client_id": client_id}} if client_id else {}),
    )
    # The monitoring's chain too: the tests read what arrived through the monitoring's API.
    service = IngestService(settings, chains=ALL_CHAINS)
    service.start(wait_for_db_s=10)
    assert service.consumer is not None and service.consumer.subscribed.wait(10)
    return service


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class EdgeNode:
    url: str
    group: str = GROUP
    node: str = NODE
    devices: list[str] = field(default_factory=lambda: ["plc-1"])
    bdseq: int = 0
    seq: int = 0
    qos: int = 1
    """Data QoS: the spec says 0; QoS 1 is what the exactly-once guarantee covers."""
    commands: list[str] = field(default_factory=list)
    """Metric names of every NCMD received."""
    client: Any = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    """Held from taking a seq to handing the message to paho, so seq order is wire order."""

    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"spBv1.0/{self.group}/{kind}/{self.node}"
        return f"{base}/{device}" if device else base

    def _bdseq_metric(self) -> sp.Metric:
        return sp.Metric(
            timestamp=now_ms(), name="bdSeq", datatype=sp.DataType.INT64, value=self.bdseq
        )

    def connect(self) -> EdgeNode:
        host, port = self.url.removeprefix("mqtt://").split(":")
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edge-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        client.max_inflight_messages_set(1000)
        death = sp.NDeath(timestamp=now_ms(), bd_seq_metric=self._bdseq_metric())
        client.will_set(self.topic("NDEATH"), death.encode(), qos=1)
        connected = threading.Event()
        client.on_connect = lambda c, u, f, rc, p: (
            c.subscribe(self.topic("NCMD"), qos=1),
            connected.set(),
        )
        client.on_message = self._on_message
        client.connect(host, int(port))
        client.loop_start()
        assert connected.wait(10), "edge node could not connect"
        self.client = client
        return self

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        command = sp.NCmd.decode(message.payload)
        names = [m.name for m in command.metrics]
        self.commands.extend(str(n) for n in names)
        if "Node Control/Rebirth" in names:
            # Not on paho's thread: birth() waits for PUBACKs that this very thread reads.
            threading.Thread(target=self.birth, daemon=True).start()

    def _next(self) -> int:
        with self.lock:
            seq = self.seq
            self.seq = (self.seq + 1) % 256
            return seq

    def _send(self, topic: str, payload: Any, qos: int = 1) -> Any:
        info = self.client.publish(topic, payload.encode(include_dtypes=True), qos=qos)
        if qos:
            info.wait_for_publish(10)
        return info

    def birth(self, strokes: int = 0) -> None:
        with self.lock:
            self._birth(strokes)

    def _birth(self, strokes: int) -> None:
        self.seq = 0
        nbirth = sp.NBirth(
            timestamp=now_ms(),
            seq=self._next(),
            metrics=(
                self._bdseq_metric(),
                sp.Metric(
                    timestamp=now_ms(),
                    name="Node Control/Rebirth",
                    datatype=sp.DataType.BOOLEAN,
                    value=False,
                ),
            ),
        )
        self._send(self.topic("NBIRTH"), nbirth)
        for device in self.devices:
            ts = now_ms()
            values: dict[str, Any] = {
                "Press/Force": 1000.0,
                "Press/Strokes": strokes,
                "State": "idle",
                "Secret/Unmapped": None,
            }
            metrics = tuple(
                sp.Metric(
                    timestamp=ts,
                    name=name,
                    alias=alias,
                    datatype=datatype,
                    value=values[name],
                    is_null=values[name] is None,
                )
                for name, (alias, datatype) in METRICS.items()
            )
            self._send(
                self.topic("DBIRTH", device),
                sp.DBirth(timestamp=ts, seq=self._next(), metrics=metrics),
            )

    def data(
        self,
        device: str,
        values: dict[str, Any],
        *,
        ts_ms: int | None = None,
        historical: bool = False,
        skip_seq: int = 0,
    ) -> Any:
        """DDATA by alias only (no names, no datatypes), as the spec allows after a birth."""
        ts = ts_ms if ts_ms is not None else now_ms()
        metrics = tuple(
            sp.Metric(
                timestamp=ts,
                name=None,
                alias=METRICS[name][0],
                datatype=METRICS[name][1],
                value=value,
                is_historical=historical,
            )
            for name, value in values.items()
        )
        with self.lock:
            self.seq = (self.seq + skip_seq) % 256
            payload = sp.DData(timestamp=ts, seq=self._next(), metrics=metrics)
            return self.client.publish(
                self.topic("DDATA", device), payload.encode(include_dtypes=False), qos=self.qos
            )

    def device_death(self, device: str) -> None:
        self._send(self.topic("DDEATH", device), sp.DDeath(timestamp=now_ms(), seq=self._next()))

    def node_death(self) -> None:
        death = sp.NDeath(timestamp=now_ms(), bd_seq_metric=self._bdseq_metric())
        self.client.publish(self.topic("NDEATH"), death.encode(), qos=1).wait_for_publish(10)

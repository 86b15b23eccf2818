"""The gateway as a Sparkplug B edge node: the same disk buffer, QoS and replay as our contract.

``SparkplugPublisher`` is the ``Publisher`` (window, live and backlog streams, delete on PUBACK)
with Sparkplug's session rules in place of the shulian topics:

- **Session**: clean start (the spec's rule: a new session begins with a new birth, so nothing
  of an old session may be resent by the client library; each session gets a fresh paho client),
  the Last Will is ``NDEATH`` carrying ``bdSeq``, which counts connects (0-255, kept in
  ``<data_dir>/sparkplug-bdseq`` so a restart does not reuse the previous session's number).
- **Births**: on connect (and on ``Node Control/Rebirth`` from NCMD) ``NBIRTH`` (``seq`` 0,
  ``bdSeq``, ``Node Control/Rebirth``) then one ``DBIRTH`` per device with every signal of its
  profile: name, alias, datatype, unit (``engUnit``). A signal or device that appears in data
  without having been born (a backlog row from an older configuration) gets a ``DBIRTH`` first.
- **Data**: a buffered batch becomes one ``DDATA`` per device in it, metrics by alias with
  their own timestamps; a batch replayed from the backlog (or older than
  ``buffer.historical_after_s``) has ``is_historical`` on every metric. The batch's row is deleted
  when the broker acknowledged all of its messages (QoS 1, as for our contract: the spec's QoS 0
  for data would lose what a broker outage interrupts). ``seq`` counts every message after
  ``NBIRTH`` modulo 256.
- **Primary host**: with ``sparkplug.primary_host`` the node subscribes to that host's STATE and
  births only while it is online; when it goes offline the node sends NDEATH and disconnects
  (data waits in the buffer), then reconnects and waits for the host again.
- **Device status**: a device that disconnects gets ``DDEATH``; it is born again when it is back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.buffer import AsyncBuffer, StoredBatch
from gateway.metrics import GatewayMetricsHub
from gateway.publisher import Publisher, _Flight
from gateway.settings import BufferSettings, MqttSettings, SparkplugSettings
from wire import sparkplug as spb
from wire.payloads import DeviceConnection, DeviceStatus, GatewayStatus

log = logging.getLogger(__name__)

BDSEQ_FILE = "sparkplug-bdseq"
SignalsOf = Callable[[str], list[str]]
"""A configured device's signal names (its profile's), or [] for a device not configured."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Parts:
    """The messages one buffered batch became; its row is settled when all are acknowledged."""

    lead_mid: int
    remaining: set[int]
    failure: str | None = None
    unrouted: bool = False


@dataclass(slots=True)
class _DeviceBirth:
    aliases: dict[str, int] = field(default_factory=dict)
    """signal -> alias, as announced in the device's last DBIRTH."""


class SparkplugPublisher(Publisher):
    """One Sparkplug B edge node session over the gateway's disk buffer."""

    clean_start = True

    def __init__(
        self,
        mqtt: MqttSettings,
        buffer_settings: BufferSettings,
        *,
        sparkplug: SparkplugSettings,
        enterprise: str,
        gateway: str,
        client_id: str,
        buffer: AsyncBuffer,
        metrics: GatewayMetricsHub,
        status: Callable[[bool], GatewayStatus],
        signals_of: SignalsOf,
        data_dir: Path,
    ) -> None:
        super().__init__(
            mqtt,
            buffer_settings,
            enterprise=enterprise,
            gateway=gateway,
            client_id=client_id,
            buffer=buffer,
            metrics=metrics,
            status=status,
        )
        self.group = sparkplug.group or enterprise
        self.node = sparkplug.node or gateway
        self.primary_host = sparkplug.primary_host
        self.signals_of = signals_of
        self.bdseq_path = Path(data_dir) / BDSEQ_FILE
        self.bdseq = -1
        """The bdSeq of the Will registered for the current session."""
        self._bdseq_sent = False
        self.telemetry_topic = spb.node_topic(self.group, spb.MessageType.NDATA, self.node)
        self.ndeath_topic = spb.node_topic(self.group, spb.MessageType.NDEATH, self.node)
        self.ncmd_topic = spb.node_topic(self.group, spb.MessageType.NCMD, self.node)
        self.state_topic = spb.state_topic(self.primary_host) if self.primary_host else None
        self.seq = 0
        self.is_born = False
        self.host_online = not self.primary_host
        self.births: dict[str, _DeviceBirth] = {}
        self.next_alias = 1
        self.aliases: dict[tuple[str, str], int] = {}
        """(device, signal) -> alias for this process: stable across births and rebirths."""
        self.parts: dict[int, _Parts] = {}
        """Row id -> the messages it was sent as."""
        self.part_of: dict[int, int] = {}
        """mid -> row id, for every data message in flight."""
        self.rebirths = 0

    # ------------------------------------------------------------------ session

    def _make_client(self) -> paho.Client:
        client = super()._make_client()
        client.on_message = self._cb_message
        return client

    def _connect_properties(self) -> Properties | None:
        if self.protocol != "5":
            return None
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0  # the spec's clean session: nothing outlives it
        return props

    def _set_will(self, client: paho.Client) -> None:
        """Runs in the connect thread: the next bdSeq, stored before the broker can see it.

        The spec counts CONNECT packets: an attempt whose TCP connect failed sent none, so its
        number is used again."""
        if self.bdseq < 0 or self._bdseq_sent:
            self.bdseq = self._advance_bdseq()
            self._bdseq_sent = False
        client.will_set(self.ndeath_topic, self._ndeath(), qos=1, retain=False)

    def _connect_blocking(self, client: paho.Client) -> None:
        super()._connect_blocking(client)  # raises when no CONNECT could be sent
        self._bdseq_sent = True

    def _advance_bdseq(self) -> int:
        try:
            last = int(self.bdseq_path.read_text(encoding="ascii").strip() or "-1")
        except (OSError, ValueError):
            last = -1
        bdseq = (last + 1) % spb.SEQ_MODULO
        self.bdseq_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.bdseq_path.with_suffix(".tmp")
        tmp.write_text(f"{bdseq}\n", encoding="ascii")
        os.replace(tmp, self.bdseq_path)
        return bdseq

    def _ndeath(self) -> bytes:
        metric = spb.MetricOut(spb.DataType.INT64, self.bdseq, name=spb.BDSEQ)
        return spb.encode_payload(now_ms(), [metric])

    def _offline_message(self) -> tuple[str, bytes, bool]:
        return self.ndeath_topic, self._ndeath(), False

    def _on_lost(self) -> None:
        super()._on_lost()
        self.is_born = False
        self.host_online = not self.primary_host
        self._forget_flights()
        # paho would resend the old session's messages (old seq numbers) before our next NBIRTH:
        # the next session starts on a fresh client, and the buffer resends what was unsettled.
        if not self._stopping:
            self._client = self._make_client()

    def _forget_flights(self) -> None:
        for flight in self.inflight.values():
            self.unsettled.discard(flight.row_id)
            self._rewind(flight.row_id)
        self.inflight.clear()
        self.replay_inflight = 0
        self.parts.clear()
        self.part_of.clear()
        self._drop_backlog_page()
        self.is_backlog_dirty = True

    # ------------------------------------------------------------------- births

    def _publish_retained_status(self) -> None:
        """On CONNACK: listen for commands (and the primary host), then birth if allowed."""
        client = self._client
        assert client is not None
        client.subscribe(self.ncmd_topic, qos=1)
        if self.state_topic is not None:
            client.subscribe(self.state_topic, qos=1)
        if self.host_online:
            self._birth()

    def _birth(self) -> None:
        self.seq = 0
        self.births.clear()
        metrics = [
            spb.MetricOut(spb.DataType.INT64, self.bdseq, name=spb.BDSEQ),
            spb.MetricOut(spb.DataType.BOOLEAN, False, name=spb.REBIRTH),
        ]
        self._publish_control(
            spb.node_topic(self.group, spb.MessageType.NBIRTH, self.node),
            spb.encode_payload(now_ms(), metrics, seq=0),
        )
        self.is_born = True
        for device in sorted(set(self.device_status) | {d for d, _ in self.aliases}):
            status = self.device_status.get(device)
            if status is None or status.connection is DeviceConnection.CONNECTED:
                self._device_birth(device, set())
        log.info(
            "Sparkplug edge node born",
            extra={"group": self.group, "node": self.node, "bdseq": self.bdseq},
        )

    def _device_birth(self, device: str, extra: set[str]) -> _DeviceBirth:
        known = {s for d, s in self.aliases if d == device}
        signals = sorted(set(self.signals_of(device)) | known | extra)
        birth = _DeviceBirth({s: self._alias(device, s) for s in signals})
        metrics = [
            spb.MetricOut(
                spb.datatype_for_signal(s),
                None,
                name=s,
                alias=alias,
                unit=spb.unit_of_signal(s),
            )
            for s, alias in birth.aliases.items()
        ]
        self._publish_control(
            spb.device_topic(self.group, spb.MessageType.DBIRTH, self.node, device),
            spb.encode_payload(now_ms(), metrics, seq=self._next_seq()),
        )
        self.births[device] = birth
        return birth

    def _alias(self, device: str, signal: str) -> int:
        alias = self.aliases.get((device, signal))
        if alias is None:
            alias = self.aliases[(device, signal)] = self.next_alias
            self.next_alias += 1
        return alias

    def _next_seq(self) -> int:
        self.seq = spb.next_seq(self.seq)
        return self.seq

    def _publish_control(self, topic: str, payload: bytes) -> None:
        assert self._client is not None
        info = self._client.publish(topic, payload, qos=1)
        self._status_mids.add(info.mid)

    # ------------------------------------------------------------- status hooks

    def publish_gateway_status(self) -> None:
        """Sparkplug has no node status besides births and deaths: nothing to send."""

    def publish_device_status(self, status: DeviceStatus) -> None:
        self.device_status[status.device] = status
        if not (self.is_connected and self.is_born):
            return
        device = status.device
        if status.connection is DeviceConnection.CONNECTED:
            if device not in self.births:
                self._device_birth(device, set())
        elif device in self.births:
            del self.births[device]
            self._publish_control(
                spb.device_topic(self.group, spb.MessageType.DDEATH, self.node, device),
                spb.encode_payload(now_ms(), [], seq=self._next_seq()),
            )

    def publish_metrics(self, figures: dict[str, float]) -> None:
        """Gateway health stays on our contract and Prometheus; not sent as Sparkplug NDATA."""

    # --------------------------------------------------------------- commands

    def _cb_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        self._post(self._on_command, message.topic, bytes(message.payload))

    def _on_command(self, topic: str, payload: bytes) -> None:
        if topic == self.ncmd_topic:
            self._on_ncmd(payload)
        elif topic == self.state_topic:
            self._on_host_state(payload)

    def _on_ncmd(self, payload: bytes) -> None:
        try:
            message = spb.decode_payload(payload)
        except spb.SparkplugError as exc:
            log.warning("ignoring an NCMD that is not Sparkplug B: %s", exc)
            return
        for metric in message.metrics:
            if metric.name == spb.REBIRTH and metric.boolean_value:
                if self.is_connected and self.host_online:
                    self.rebirths += 1
                    log.info("rebirth requested by NCMD", extra={"node": self.node})
                    self._birth()
                    self._pump()
                return

    def _on_host_state(self, payload: bytes) -> None:
        online = _host_online(payload)
        if online is None:
            log.warning("ignoring a STATE message that is neither 3.0 JSON nor ONLINE/OFFLINE")
            return
        was, self.host_online = self.host_online, online
        if online and not was and self.is_connected:
            log.info("primary host %s is online: birth", self.primary_host)
            self._birth()
            self._pump()
        elif not online and self.is_born:
            log.warning("primary host %s went offline: NDEATH and reconnect", self.primary_host)
            topic, body, _ = self._offline_message()
            self._publish_control(topic, body)
            self.is_born = False
            assert self._client is not None
            self._client.disconnect()

    # ------------------------------------------------------------------ sending

    def _pump(self) -> None:
        if self.is_born:
            super()._pump()

    def _send(self, batch: StoredBatch, *, is_replay: bool) -> None:
        client = self._client
        assert client is not None
        historical = is_replay or now_ms() - batch.created_ms > self.historical_after_ms
        by_device: dict[str, list[dict[str, Any]]] = {}
        for sample in orjson.loads(batch.payload):
            by_device.setdefault(sample["device"], []).append(sample)
        mids: list[int] = []
        for device, samples in by_device.items():
            birth = self.births.get(device)
            unborn = {s["signal"] for s in samples} - (birth.aliases.keys() if birth else set())
            if birth is None or unborn:
                birth = self._device_birth(device, unborn)
            payload = spb.encode_payload(
                batch.created_ms,
                [_metric(s, birth.aliases[s["signal"]], historical) for s in samples],
                seq=self._next_seq(),
            )
            topic = spb.device_topic(self.group, spb.MessageType.DDATA, self.node, device)
            info = client.publish(topic, payload, qos=1)
            if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                log.warning("paho refused a publish", extra={"rc": paho.error_string(info.rc)})
                for mid in mids:  # the row goes back to the backlog; acks of its parts are moot
                    self.part_of.pop(mid, None)
                self._rewind(batch.id)
                self._drop_backlog_page()
                return
            mids.append(info.mid)
        lead = mids[-1]
        self.parts[batch.id] = _Parts(lead, set(mids))
        for mid in mids:
            self.part_of[mid] = batch.id
        self.inflight[lead] = _Flight(batch.id, batch.samples, batch.created_ms, is_replay)
        self.unsettled.add(batch.id)
        if is_replay:
            self.replay_inflight += 1
            self.counters.replayed_batches += 1

    def _on_ack(self, mid: int, is_failure: bool, reason: str, is_unrouted: bool = False) -> None:
        row = self.part_of.pop(mid, None)
        if row is None:
            super()._on_ack(mid, is_failure, reason, is_unrouted)
            return
        parts = self.parts.get(row)
        if parts is None:
            return
        parts.remaining.discard(mid)
        if is_failure and parts.failure is None:
            parts.failure = reason
        parts.unrouted = parts.unrouted or is_unrouted
        if parts.remaining:
            return
        del self.parts[row]
        if parts.failure is not None:
            super()._on_ack(parts.lead_mid, True, parts.failure)
        else:
            super()._on_ack(parts.lead_mid, False, reason, parts.unrouted)


def _metric(sample: dict[str, Any], alias: int, historical: bool) -> spb.MetricOut:
    signal = sample["signal"]
    return spb.MetricOut(
        spb.datatype_for_signal(signal),
        sample["value"],
        alias=alias,
        timestamp=sample["ts_ms"],
        is_historical=historical,
        quality=sample.get("quality", "good"),
        reason=sample.get("reason"),
    )


def _host_online(payload: bytes) -> bool | None:
    """A primary host's STATE: Sparkplug 3.0 JSON ``{"online": true, ...}`` or 2.2's text."""
    text = payload.strip()
    if text in (b"ONLINE", b"OFFLINE"):
        return text == b"ONLINE"
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    online = body.get("online") if isinstance(body, dict) else None
    return online if isinstance(online, bool) else None

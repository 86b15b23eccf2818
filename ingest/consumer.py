"""The MQTT side of the ingest: a persistent paho session with manual acknowledgements.

Messages are acknowledged only when the writer has committed them (``ack``), never on receipt.
The session is persistent (clean start off, session expiry), so whatever was not acknowledged
when the process died or the connection dropped is redelivered by the broker.

The number of un-acknowledged messages in flight is capped by the broker: MQTT 5 Receive Maximum
(``mqtt.receive_maximum``, sent in CONNECT) and Mosquitto's ``max_inflight_messages``. It must
exceed what one flush holds, or the broker stops sending while a batch waits to fill.

Subscriptions: telemetry and metrics are shared (``$share/<group>/...``) so workers split the
load; gateway and device status are subscribed plainly by every worker, because brokers do not
deliver retained messages to shared subscriptions and every worker's registry cache needs them.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.decode import Incoming
from ingest.metrics import IngestMetrics
from ingest.settings import MqttSettings
from wire.topics import TopicKind, subscription

log = logging.getLogger(__name__)

Route = Callable[[Incoming], None]


def lane_of(topic: str, lanes: int) -> int:
    """A gateway's messages always go to the same lane, keeping them ordered; a gateway is its
    enterprise and gateway topic levels (ids are unique per enterprise, so both count)."""
    parts = topic.split("/", 4)
    gateway = "/".join(parts[2:4])
    return zlib.crc32(gateway.encode("utf-8", "replace")) % lanes


class Consumer:
    """Owns the paho client: connect, subscribe, hand messages to ``route``, acknowledge later."""

    def __init__(self, settings: MqttSettings, route: Route, metrics: IngestMetrics) -> None:
        self.settings = settings
        self.route = route
        self.metrics = metrics
        self.generation = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        """Set once the broker acknowledged our subscriptions on the current connection."""
        self._stopping = False
        self._is_v5 = settings.protocol == "5"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=None if self._is_v5 else False,
            protocol=mqtt.MQTTv5 if self._is_v5 else mqtt.MQTTv311,
            manual_ack=True,
            reconnect_on_failure=True,
        )
        if settings.username:
            self._client.username_pw_set(settings.username, settings.password)
        self._client.reconnect_delay_set(1, max(1, int(settings.reconnect_max_s)))
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    def start(self) -> None:
        properties = None
        if self._is_v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.settings.session_expiry_s
            properties.ReceiveMaximum = self.settings.receive_maximum
        self._client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False if self._is_v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client.loop_start()
        log.info(
            "connecting to mqtt://%s:%d as %s (MQTT %s, receive maximum %d)",
            self.settings.host,
            self.settings.port,
            self.settings.client_id,
            self.settings.protocol,
            self.settings.receive_maximum,
        )

    def stop(self) -> None:
        """Disconnect cleanly; acknowledgements queued before this call are sent first."""
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()
        self.metrics.mqtt_connected.set(0)

    def ack(self, incoming: Incoming) -> None:
        """Acknowledge a committed message, if it came over the current connection.

        After a reconnect the broker redelivers what was un-acknowledged, possibly reusing
        packet ids: acknowledging an old copy could release a different, uncommitted message.
        The redelivered copy is acknowledged instead (the ledger makes storing it a no-op).
        """
        if incoming.qos > 0 and incoming.generation == self.generation:
            self._client.ack(incoming.mid, incoming.qos)

    def subscriptions(self) -> list[tuple[str, int]]:
        group = self.settings.share_group or None
        topics = [
            (subscription(TopicKind.TELEMETRY, group), 1),
            (subscription(TopicKind.GATEWAY_STATUS), 1),
            (subscription(TopicKind.DEVICE_STATUS), 1),
        ]
        if self.settings.subscribe_metrics:
            topics.append((subscription(TopicKind.METRICS, group), 0))
        return topics

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        self.generation += 1
        topics = self.subscriptions()
        if self._is_v5:
            client.subscribe([(t, SubscribeOptions(qos=q)) for t, q in topics])
        else:
            client.subscribe(topics)
        self.connected.set()
        self.metrics.mqtt_connected.set(1)
        log.info(
            "connected to the broker (session present: %s); subscribed to %s",
            getattr(flags, "session_present", None),
            ", ".join(t for t, _ in topics),
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.connected.clear()
        self.subscribed.clear()
        self.metrics.mqtt_connected.set(0)
        if not self._stopping:
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        refused = [r for r in reasons if getattr(r, "is_failure", False)]
        if refused:
            log.error(
                "the broker refused %d of our subscriptions (%s): check its ACL and that it "
                "supports shared subscriptions, or set mqtt.share_group to ''",
                len(refused),
                ", ".join(str(r) for r in refused),
            )
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # One broad catch: an exception here would stop paho's network thread.
        try:
            try:
                topic = message.topic
            except UnicodeDecodeError:
                topic = bytes(message._topic).decode("utf-8", "replace")
            incoming = Incoming(
                topic=topic,
                payload=bytes(message.payload),
                mid=message.mid,
                qos=message.qos,
                generation=self.generation,
                received_mono=time.monotonic(),
                received_ms=int(time.time() * 1000),
                retained=bool(message.retain),
            )
            self.route(incoming)
        except Exception:
            log.exception("could not queue a message on %r; it stays unacknowledged", message.topic)

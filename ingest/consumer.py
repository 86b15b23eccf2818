"""The MQTT side of the ingest: a persistent paho session with manual acknowledgements.

Messages are acknowledged only when the writer has committed them (``ack``), never on receipt.
The session is persistent (clean start off, session expiry), so whatever was not acknowledged
when the process died or the connection dropped is redelivered by the broker.

The number of un-acknowledged messages in flight is capped by the broker: MQTT 5 Receive Maximum
(``mqtt.receive_maximum``, sent in CONNECT) and Mosquitto's ``max_inflight_messages``. It must
exceed what one flush holds, or the broker stops sending while a batch waits to fill.

Broker: ``mqtts://`` URLs connect over TLS, verifying the broker's certificate against
``mqtt.ca_file`` (or the system's trust store) and its host name. Every failure to connect or log
in is logged once when it starts or changes, naming the broker and what to fix; repeats are only
counted (the worker keeps retrying, so it recovers by itself once the cause is fixed).

Subscriptions: telemetry and metrics are shared (``$share/<group>/...``) so workers split the
load; gateway and device status are subscribed plainly by every worker, because brokers do not
deliver retained messages to shared subscriptions and every worker's registry cache needs them.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.decode import Incoming
from ingest.errors import ConfigError
from ingest.metrics import IngestMetrics
from ingest.settings import MqttSettings
from wire.topics import TopicKind, subscription

log = logging.getLogger(__name__)

Route = Callable[[Incoming], None]


def lane_of(topic: str, lanes: int) -> int:
    """A gateway's messages always go to the same lane, keeping them ordered; a gateway is its
    enterprise and gateway topic levels (ids are unique per enterprise, so both count)."""
    parts = topic.split("/", 4)
    if parts[0] == "spBv1.0":  # spBv1.0/{group}/{type}/{node}[/{device}]: one lane per node
        gateway = "/".join(parts[1:4:2])
    else:
        gateway = "/".join(parts[2:4])
    return zlib.crc32(gateway.encode("utf-8", "replace")) % lanes


class Consumer:
    """Owns the paho client: connect, subscribe, hand messages to ``route``, acknowledge later."""

    def __init__(
        self,
        settings: MqttSettings,
        route: Route,
        metrics: IngestMetrics,
        extra_topics: list[tuple[str, int]] | None = None,
        host_state_topic: str | None = None,
    ) -> None:
        self.settings = settings
        self.extra_topics = extra_topics or []
        """Plain (not shared) subscriptions besides ours: Sparkplug B when mapped."""
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
        self._username, password = settings.login()
        if self._username is not None or password is not None:
            self._client.username_pw_set(self._username, password)
        self.host_state_topic = host_state_topic
        """Sparkplug primary host STATE: online on connect, offline as the Will (retained)."""
        self._state_ms = 0
        if host_state_topic is not None:
            self._state_ms = int(time.time() * 1000)
            self._client.will_set(
                host_state_topic, _host_state(False, self._state_ms), qos=1, retain=True
            )
        self._handshake_failure: BaseException | None = None
        """What the TLS handshake of the current connection attempt raised, if it failed."""
        self._problem: str | None = None
        self._repeats = 0
        self.failed_attempts = 0
        """Connection attempts the broker refused or that failed, since start (all of them)."""
        if settings.is_tls:
            self._client.tls_set_context(self._tls_context())
        self._client.reconnect_delay_set(1, max(1, int(settings.reconnect_max_s)))
        self._client.on_pre_connect = self._on_pre_connect
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    def _tls_context(self) -> ssl.SSLContext:
        """Verify the broker's certificate (``ca_file`` or the system's CAs) and host name.

        Raises:
            ConfigError: a CA, certificate or key file cannot be read or is not PEM.
        """
        settings = self.settings
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH,
                cafile=str(settings.ca_file) if settings.ca_file else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                [f"mqtt.ca_file: cannot load {settings.ca_file} as a PEM CA certificate: {exc}"]
            ) from None
        if settings.cert_file is not None:
            try:
                context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    [
                        f"mqtt.cert_file/mqtt.key_file: cannot load {settings.cert_file} with "
                        f"{settings.key_file} as a PEM certificate and its key: {exc}"
                    ]
                ) from None
        context.sslsocket_class = _handshake_recorder(self._record_handshake_failure)
        return context

    def _record_handshake_failure(self, exc: BaseException) -> None:
        self._handshake_failure = exc

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
            "connecting to %s as %s, client id %s (MQTT %s, receive maximum %d%s)",
            self.settings.address,
            self._username or "anonymous",
            self.settings.client_id,
            self.settings.protocol,
            self.settings.receive_maximum,
            f", TLS verified by {self.settings.ca_file or 'the system CAs'}"
            if self.settings.is_tls
            else "",
        )

    def stop(self) -> None:
        """Disconnect cleanly; acknowledgements queued before this call are sent first."""
        self._stopping = True
        if self.host_state_topic is not None and self.connected.is_set():
            info = self._client.publish(
                self.host_state_topic, _host_state(False, self._state_ms), qos=1, retain=True
            )
            info.wait_for_publish(2)
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
            (subscription(TopicKind.CONFIG_REPORT, group), 1),
        ]
        if self.settings.subscribe_metrics:
            topics.append((subscription(TopicKind.METRICS, group), 0))
        return topics + self.extra_topics

    def publish(self, topic: str, payload: bytes) -> None:
        """Send a command (a Sparkplug rebirth request); paho queues it while disconnected."""
        self._client.publish(topic, payload, qos=0)

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """Publish a gateway's configuration: retained, QoS 1 (paho resends it after a reconnect)."""
        self._client.publish(topic, payload, qos=1, retain=True)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            who = f"the login {self._username!r}" if self._username else "an anonymous login"
            self._report(
                f"broker {self.settings.address} refused {who}: {reason}. Check mqtt.username "
                "and mqtt.password (or mqtt.password_file, or the URL's) against the broker's "
                "password file and ACL (`shulian gateway credentials add-reader`), then reload "
                "the broker; retrying",
                logging.ERROR,
            )
            return
        if self._problem is not None:
            log.info(
                "connected to %s after %d more failed attempts",
                self.settings.address,
                self._repeats,
            )
            self._problem, self._repeats = None, 0
        self.generation += 1
        topics = self.subscriptions()
        if self._is_v5:
            client.subscribe([(t, SubscribeOptions(qos=q)) for t, q in topics])
        else:
            client.subscribe(topics)
        if self.host_state_topic is not None:
            # Sparkplug 3.0: the birth's timestamp is the one the registered Will carries.
            client.publish(
                self.host_state_topic, _host_state(True, self._state_ms), qos=1, retain=True
            )
        self.connected.set()
        self.metrics.mqtt_connected.set(1)
        log.info(
            "connected to the broker (session present: %s); subscribed to %s",
            getattr(flags, "session_present", None),
            ", ".join(t for t, _ in topics),
        )

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        self._handshake_failure = None

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if self._stopping:
            return
        failure, self._handshake_failure = self._handshake_failure, None
        if failure is not None:
            self._report(describe_tls_failure(self.settings, failure), logging.ERROR)
        else:
            self._report(
                f"cannot connect to the broker at {self.settings.address} (no connection: is it "
                "running, and are the host and port right?); retrying",
                logging.WARNING,
            )

    def _report(self, problem: str, level: int) -> None:
        """Log a connection problem once when it starts or changes; count the repeats."""
        self.failed_attempts += 1
        if problem == self._problem:
            self._repeats += 1
            return
        if self._problem is not None and self._repeats:
            log.info("the previous problem repeated %d more times", self._repeats)
        self._problem, self._repeats = problem, 0
        log.log(level, "%s", problem)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        self.metrics.mqtt_connected.set(0)
        if was_connected and not self._stopping:  # a refused login was reported already
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


def _host_state(online: bool, ts_ms: int) -> bytes:
    """A Sparkplug 3.0 host application STATE payload."""
    return orjson.dumps({"online": online, "timestamp": ts_ms})


def _handshake_recorder(record: Callable[[BaseException], None]) -> type[ssl.SSLSocket]:
    """An SSLSocket class that hands a failed handshake's exception to ``record``.

    paho reports a failed connection attempt without its cause (``on_connect_fail``); the
    handshake's own exception says whether the CA or the host name was wrong.
    """

    class _RecordingSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            try:
                super().do_handshake(block)
            except OSError as exc:  # ssl.SSLError and its SSLCertVerificationError included
                record(exc)
                raise

    return _RecordingSocket


def describe_tls_failure(settings: MqttSettings, exc: BaseException) -> str:
    """Why the broker's TLS handshake failed, naming the broker, the CA and the fix."""
    address = settings.address
    trusted = (
        f"the CA in {settings.ca_file} (mqtt.ca_file)"
        if settings.ca_file
        else "the system's trust store (mqtt.ca_file is not set)"
    )
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        if "mismatch" in reason.lower():
            return (
                f"refusing the broker at {address}: its TLS certificate is not valid for the "
                f"host name {settings.host!r} ({reason}); verified against {trusted}. Connect "
                "with a host name listed in the certificate's subjectAltName, or reissue the "
                f"broker's certificate with {settings.host!r} in it; retrying"
            )
        return (
            f"refusing the broker at {address}: its TLS certificate is not trusted by {trusted} "
            f"({reason}). Set mqtt.ca_file (SHULIAN_INGEST_MQTT__CA_FILE) to the CA certificate "
            "that signed the broker's certificate (the broker's `cafile`); retrying"
        )
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return (
        f"TLS handshake with the broker at {address} failed ({reason}). Check that this port is "
        "the broker's TLS listener (mqtts:// needs one, 8883 by convention; mqtt:// is "
        f"plaintext) and that {trusted} is the right CA; retrying"
    )

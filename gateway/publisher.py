"""The gateway's MQTT session (the only module importing paho): publish from the disk buffer, delete on PUBACK.

Session: MQTT 5 (3.1.1 by setting, or found automatically when a broker such as amqtt drops MQTT 5
CONNECTs without an answer) with a persistent session (clean start off,
session expiry), QoS 1, at most ``max_inflight`` unacknowledged batches, reconnect with
exponential backoff and jitter. The Last Will is the retained ``GatewayStatus(online=False)``; on
every connect the retained online status and each device's status are published again.

Delivery: a batch is in the disk buffer before it is offered here, and its row is deleted only
when the broker's PUBACK for it arrives (``mid`` -> row id). paho keeps unacknowledged messages
across reconnects and resends them itself, so nothing in flight is re-read from disk.

Replay policy: two streams share the in-flight window.

- **live**: batches offered by the spool while connected, sent first, in order;
- **backlog**: everything else in the buffer (what piled up during an outage, or was left by a
  previous run), read from disk in id order and sent interleaved one-for-one with live batches,
  using at most ``replay_share`` of the window, so replay never starves live data and live
  data never starves replay.

A batch is deleted only on a PUBACK that says it was routed: an MQTT 5 broker that answers
"No matching subscribers" (0x10) took the batch but gave it to nobody, so it stays in the buffer
and is sent again after a pause (1 s, doubling to 30 s, ended early by the next routed batch).
Mosquitto loses shared subscriptions (the ingest's ``$share/ingest/...``) when it restarts, until
each subscriber reconnects and subscribes again: batches sent in that window would otherwise be
deleted here and never stored.

A batch sent from the backlog, or more than ``historical_after_s`` after it was sealed, goes out
with ``historical: true``: live batches are sent in order among themselves, and a batch that
waited in the buffer through an outage is a replay however young it is. If the live queue grows past two windows (a slow link), its oldest entries
are left to the backlog stream; nothing is lost, they are only sent later.

Network loop: paho runs as an external-loop client on the gateway's own event loop
(``loop.add_reader``/``add_writer`` on its socket, ``loop_misc`` each second), not in paho's
network thread, whose ``select()`` refuses descriptors of 1024 and above: a gateway holding a
thousand device connections must still reach its broker. Only the blocking TCP connect, TLS
handshake and CONNECT run in a worker thread. paho's callbacks are handed on with ``call_soon``
(never handled inside paho's call stack), and all state below is touched only on the loop. When a
session ends, the log says why in the socket's or the broker's words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.buffer import AsyncBuffer, StoredBatch
from gateway.logs import RateLimitedLog
from gateway.metrics import GatewayMetricsHub
from gateway.settings import BufferSettings, MqttSettings
from wire import topics
from wire.codec import encode
from wire.payloads import WIRE_VERSION, DeviceStatus, GatewayStatus

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
CONNACK_TIMEOUT_S = 5.0
PAGE = 64
NO_MATCHING_SUBSCRIBERS = 0x10
"""MQTT 5 PUBACK reason: accepted, but no subscription matched (nobody received it)."""
UNROUTED_PAUSE_S = (1.0, 30.0)
"""First and longest pause before batches that reached no subscriber are sent again."""


@dataclass(slots=True)
class _Flight:
    row_id: int
    samples: int
    created_ms: int
    is_replay: bool


@dataclass
class BrokerState:
    """The broker link as the status page shows it."""

    connected: bool = False
    since_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    last_error: str | None = None
    last_error_ms: int | None = None

    def change(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected, self.since_ms = connected, time.time_ns() // 1_000_000

    def failed(self, error: str) -> None:
        self.last_error, self.last_error_ms = error, time.time_ns() // 1_000_000


class Publisher:
    """Owns the paho client, the in-flight window and the replay cursor."""

    def __init__(
        self,
        mqtt: MqttSettings,
        buffer_settings: BufferSettings,
        *,
        enterprise: str,
        gateway: str,
        client_id: str,
        buffer: AsyncBuffer,
        metrics: GatewayMetricsHub,
        status: Callable[[bool], GatewayStatus],
    ) -> None:
        self.mqtt = mqtt
        self.historical_after_ms = int(buffer_settings.historical_after_s * 1000)
        self.enterprise = enterprise
        self.gateway = gateway
        self.client_id = client_id
        self.buffer = buffer
        self.metrics = metrics
        self.counters = metrics.publisher
        self.status = status
        self.telemetry_topic = topics.telemetry(enterprise, gateway)
        self.status_topic = topics.gateway_status(enterprise, gateway)
        self.metrics_topic = topics.metrics(enterprise, gateway)
        self.replay_cap = max(1, int(mqtt.max_inflight * mqtt.replay_share))
        self.protocol = "3.1.1" if mqtt.protocol == "3.1.1" else "5"
        self.has_connected = False
        self._got_connack = False
        self.live_cap = 2 * mqtt.max_inflight

        self.is_connected = False
        self.broker = BrokerState()
        self.live: deque[StoredBatch] = deque()
        self.live_from: int | None = None
        """Rows with ids >= live_from reach the publisher through ``offer_live``; the rest are backlog."""
        self.backlog: deque[StoredBatch] = deque()
        self.cursor = 0
        """Highest row id the backlog stream has read."""
        self.rewinds = 0
        """How often the cursor was moved back (a page read meanwhile is stale)."""
        self.is_backlog_dirty = True
        self.is_loading = False
        self.inflight: dict[int, _Flight] = {}
        self.replay_inflight = 0
        self.unsettled: set[int] = set()
        """Row ids in flight or acknowledged but not yet deleted: the backlog must skip them."""
        self.acked: list[int] = []
        self.device_status: dict[str, DeviceStatus] = {}
        self._status_mids: set[int] = set()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._session_over = asyncio.Event()
        self._connack_seen = asyncio.Event()
        self._drained = asyncio.Event()
        self._delete_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._refusals = RateLimitedLog(60.0)
        self.refusals_in_a_row = 0
        self.unrouted_in_a_row = 0
        self.replay_paused_until = 0.0
        self._fd: int | None = None
        """The broker socket's descriptor while the event loop watches it."""
        self._cause: str | None = None
        """The socket error or broker reason that ended the current session, once known."""
        self._end = "closed"
        """How the session ended: ``closed`` by the broker, ``timeout`` (no CONNACK), ``error``."""
        self._offline_mid: int | None = None
        self._offline_acked = asyncio.Event()
        self.config_topic = topics.config(enterprise, gateway)
        self.on_config: Callable[[bytes], None] | None = None
        """Remote configuration (docs/remote-config.md): set to subscribe to the gateway's own
        config topic on every connect; called on the loop with each bundle received."""
        self._config_report: bytes | None = None
        """A report not yet handed to paho (sent at the next connect)."""

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = self._make_client()
        self._tasks = [
            asyncio.create_task(self._supervise(), name="mqtt-session"),
            asyncio.create_task(self._delete_acked(), name="mqtt-acks"),
        ]

    async def stop(self, drain_s: float = 5.0) -> None:
        """Publish the offline status, wait a little for in-flight acks, disconnect."""
        self._stopping = True
        client = self._client
        if client is not None and self.is_connected:
            if self.inflight:
                self._drained.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), drain_s)
            topic, payload, retain = self._offline_message()
            info = client.publish(topic, payload, qos=1, retain=retain)
            self._offline_mid = info.mid
            self._status_mids.add(info.mid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._offline_acked.wait(), 2.0)
            client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._session_over.wait(), 2.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush_acked()
        if client is not None:
            self._detach(client)

    def _make_client(self) -> paho.Client:
        mqtt = self.mqtt
        is_v5 = self.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5 if is_v5 else paho.MQTTv311,
            clean_session=None if is_v5 else False,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(mqtt.max_inflight + 64)  # status messages ride along
        client.max_queued_messages_set(0)
        if mqtt.username is not None:
            client.username_pw_set(mqtt.username, mqtt.resolve_password())
        if mqtt.is_tls:
            client.tls_set(
                ca_certs=str(mqtt.ca_file) if mqtt.ca_file else None,
                certfile=str(mqtt.cert_file) if mqtt.cert_file else None,
                keyfile=str(mqtt.key_file) if mqtt.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            client.tls_insecure_set(mqtt.tls_insecure)
        client.will_set(self.status_topic, self._will(), qos=1, retain=True)
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        client.on_connect_fail = self._cb_connect_fail
        client.on_log = self._cb_log
        client.on_message = self._cb_message
        return client

    def _connect_properties(self) -> Properties | None:
        if self.protocol != "5":
            return None
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho is untyped here
        props.SessionExpiryInterval = self.mqtt.session_expiry_s
        return props

    async def _supervise(self) -> None:
        """Connect, serve the socket from the event loop until the session ends, back off, repeat."""
        client = self._client
        assert client is not None
        delay = self.mqtt.reconnect_min_s
        where = f"{self.mqtt.url} as {self.client_id}"
        silent_sessions = 0
        while not self._stopping:
            client = self._client  # a subclass may start each session with a fresh client
            assert client is not None
            self._session_over.clear()
            self._cause = None
            self._end = "closed"
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(self._connect_blocking, client), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                problem = _describe(exc, self.mqtt)
                self._log_refusal(f"connect: {problem}", f"cannot connect to {where}: {problem}")
            except Exception as exc:  # the task boundary: never stop reconnecting over a bug
                self._log_refusal("connect-bug", f"connecting to {where} failed: {exc!r}")
                log.debug("connect failure", exc_info=True)
            else:
                self._got_connack = False
                self._connack_seen.clear()
                self._attach(client)
                ticker = asyncio.create_task(self._keep_alive(client), name="mqtt-keepalive")
                try:
                    await self._await_connack(client, where)
                    await self._session_over.wait()
                finally:
                    ticker.cancel()
                    self._detach(client)
                if self.counters.is_connected or self.is_connected:
                    if not self._stopping:
                        log.warning(
                            "disconnected from broker: %s",
                            self._session_cause(),
                            extra={"url": self.mqtt.url},
                        )
                    self._on_lost()
                if not self._got_connack and not self._stopping:
                    self._log_refusal(
                        f"session: {self._end}",
                        f"connection to {where} ended before the broker answered the CONNECT: "
                        f"{self._session_cause()}",
                    )
                # Only a broker that hears an MQTT 5 CONNECT and stays silent or hangs up counts
                # against MQTT 5; a local socket error says nothing about the broker's protocol.
                broker_said_no = not self._got_connack and self._end in ("timeout", "closed")
                silent_sessions = silent_sessions + 1 if broker_said_no else 0
                if self._should_fall_back(silent_sessions):
                    client = self._client = self._make_client()
                    delay = self.mqtt.reconnect_min_s
                    continue
                if self._last_session_was_long():
                    delay = self.mqtt.reconnect_min_s
            if self._stopping:
                return
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.mqtt.reconnect_max_s)

    def _session_cause(self) -> str:
        """Why the last session ended, in the words of the socket or the broker."""
        if self._cause:
            return self._cause
        if self._end == "timeout":
            return f"no CONNACK within {CONNACK_TIMEOUT_S:.0f} s"
        return "the broker closed the connection"

    async def _await_connack(self, client: paho.Client, where: str) -> None:
        """End a session the broker never answers (a CONNECT it does not understand)."""
        waiter = asyncio.ensure_future(self._connack_seen.wait())
        over = asyncio.ensure_future(self._session_over.wait())
        done, pending = await asyncio.wait(
            {waiter, over}, timeout=CONNACK_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        if not done:
            self._end = "timeout"
            client.disconnect()
            self._session_over.set()

    def _should_fall_back(self, silent_sessions: int) -> bool:
        """MQTT 5 CONNECTs that a broker drops without any CONNACK: it speaks 3.1.1 only (amqtt)."""
        if self.mqtt.protocol != "auto" or self.protocol != "5" or self.has_connected:
            return False
        if silent_sessions < 1:
            return False
        log.warning(
            "broker does not answer MQTT 5 (%s); using MQTT 3.1.1 (set mqtt.protocol to skip "
            "this probe)",
            self._session_cause(),
            extra={"url": self.mqtt.url},
        )
        self.protocol = "3.1.1"
        return True

    def _connect_blocking(self, client: paho.Client) -> None:
        """TCP connect, TLS handshake and CONNECT, in a worker thread (they block).

        The socket callbacks are off here (``_detach``): paho writes the CONNECT itself, and
        nothing touches the event loop from this thread.
        """
        self._connected_at = 0.0
        # A fresh Last Will each time: its config hash and ts_ms are those of this connect (the
        # broker sends it as registered; ``will: true`` tells a reader to take the offline time
        # from its arrival).
        self._set_will(client)
        if self.protocol == "5":
            client.connect(
                self.mqtt.host,
                self.mqtt.port,
                keepalive=self.mqtt.keepalive_s,
                clean_start=self.clean_start,
                properties=self._connect_properties(),
            )
        else:
            client.connect(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s)

    # ------------------------------------------------ the socket on the event loop
    #
    # paho's own network thread waits with select(), which refuses descriptors of 1024 and above:
    # a gateway with a thousand device connections lost its broker. The event loop (epoll, or
    # uvloop) watches any descriptor, so paho runs as an external-loop client: the loop calls
    # loop_read when the socket is readable, loop_write while paho has bytes to send, and
    # loop_misc once a second for keepalive pings.

    def _attach(self, client: paho.Client) -> None:
        """Watch the connected socket from the event loop (called on the loop)."""
        loop = self._loop
        sock = client.socket()
        assert loop is not None
        if sock is None:  # paho closed it already (the CONNECT could not be written)
            self._session_over.set()
            return
        self._fd = sock.fileno()
        loop.add_reader(self._fd, self._on_readable)
        client.on_socket_close = self._cb_socket_close
        client.on_socket_register_write = self._cb_register_write
        client.on_socket_unregister_write = self._cb_unregister_write
        if client.want_write():
            loop.add_writer(self._fd, self._on_writable)

    def _detach(self, client: paho.Client) -> None:
        """Stop watching the socket, and keep paho from calling the loop from a connect thread."""
        client.on_socket_close = None
        client.on_socket_register_write = None
        client.on_socket_unregister_write = None
        self._unwatch()

    def _unwatch(self) -> None:
        fd, self._fd = self._fd, None
        loop = self._loop
        if fd is not None and loop is not None and not loop.is_closed():
            loop.remove_reader(fd)
            loop.remove_writer(fd)

    def _on_readable(self) -> None:
        client = self._client
        if client is None:
            return
        client.loop_read()
        # TLS: bytes already decrypted into the SSL object do not make the socket readable again.
        for _ in range(64):
            sock = client.socket()
            if not isinstance(sock, ssl.SSLSocket) or not sock.pending():
                break
            client.loop_read()

    def _on_writable(self) -> None:
        if self._client is not None:
            self._client.loop_write()

    async def _keep_alive(self, client: paho.Client) -> None:
        while True:
            await asyncio.sleep(1.0)
            client.loop_misc()

    def _cb_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        # Synchronous: the descriptor is closed right after this returns and may be reused.
        self._unwatch()
        self._session_over.set()

    def _cb_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.add_writer(self._fd, self._on_writable)

    def _cb_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_writer(self._fd)

    def _cb_log(self, client: Any, userdata: Any, level: int, message: str) -> None:
        """Keep paho's socket error (``failed to receive on socket: ...``) as the session's cause."""
        if level == paho.MQTT_LOG_ERR and "socket" in message:
            self._cause = message
            self._end = "error"

    def _last_session_was_long(self) -> bool:
        started = getattr(self, "_connected_at", 0.0)
        return bool(started) and time.monotonic() - started > 30

    def _log_refusal(self, key: str, message: str, level: int = logging.ERROR) -> None:
        self.broker.failed(message)
        suppressed = self._refusals.allow(key)
        if suppressed is not None:
            log.log(level, message, extra={"suppressed": suppressed} if suppressed else None)

    # ------------------------------------------------------- paho thread -> loop

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _cb_connect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._post(self._on_connack, reason.is_failure, str(reason), flags.session_present)

    def _cb_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if flags.is_disconnect_packet_from_server:
            self._cause = f"the broker sent DISCONNECT ({reason})"
            self._end = "error"
        elif self._cause is None and str(reason) in ("Keep alive timeout", "Protocol error"):
            self._cause = (
                f"{reason} (no answer to PINGREQ)" if "alive" in str(reason) else str(reason)
            )
            self._end = "error"
        self._post(self._on_disconnect, self._session_cause())

    def _cb_message(self, client: Any, userdata: Any, message: Any) -> None:
        if self.on_config is not None and message.topic == self.config_topic:
            self._post(self.on_config, bytes(message.payload))

    def _cb_connect_fail(self, client: Any, userdata: Any) -> None:
        self._post(self._on_disconnect, "connection failed")

    def _cb_publish(
        self, client: Any, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        is_unrouted = reason.value == NO_MATCHING_SUBSCRIBERS
        self._post(self._on_ack, mid, reason.is_failure, str(reason), is_unrouted)

    # ------------------------------------------------------------ loop handlers

    def _on_connack(self, is_failure: bool, reason: str, session_present: bool) -> None:
        self._got_connack = True
        self._connack_seen.set()
        if is_failure:
            hint = ""
            if "password" in reason.lower() or "authori" in reason.lower():
                hint = (
                    " Check mqtt.username and mqtt.password_file, and the broker's password file."
                )
            self._log_refusal(
                "connack", f"broker {self.mqtt.url} refused the connection: {reason}.{hint}"
            )
            self._session_over.set()
            return
        self._connected_at = time.monotonic()
        self.has_connected = True
        self.is_connected = True
        self.broker.change(True)
        self.counters.is_connected = True
        self.counters.connects += 1
        log.info(
            "connected to broker",
            extra={"url": self.mqtt.url, "session_present": session_present},
        )
        self._publish_retained_status()
        if self.on_config is not None and self._client is not None:
            # Retained: the broker sends the assigned bundle now, also after time offline.
            self._client.subscribe(self.config_topic, qos=1)
            self._send_config_report()
        self.is_backlog_dirty = True
        self._pump()

    def _on_disconnect(self, reason: str) -> None:
        """The session is over; ``_supervise`` logs why (``reason``, kept for debugging)."""
        log.debug("paho reports the session over", extra={"reason": reason})
        self._session_over.set()

    def _on_lost(self) -> None:
        self.is_connected = False
        self.broker.change(False)
        if not self._stopping:
            self.broker.failed(f"disconnected: {self._session_cause()}")
        self.counters.is_connected = False
        # Live entries not yet sent are on disk: the backlog stream will take them.
        self.live.clear()
        self.live_from = None
        self.is_backlog_dirty = True

    def _on_ack(self, mid: int, is_failure: bool, reason: str, is_unrouted: bool = False) -> None:
        if mid in self._status_mids:
            self._status_mids.discard(mid)
            if mid == self._offline_mid:
                self._offline_acked.set()
            return
        flight = self.inflight.pop(mid, None)
        if flight is None:
            return
        if flight.is_replay:
            self.replay_inflight -= 1
        if is_failure:
            self._on_refused(flight, reason)
        elif is_unrouted:
            self._on_unrouted(flight)
        else:
            self.acked.append(flight.row_id)
            self._delete_wake.set()
            self.refusals_in_a_row = 0
            if self.unrouted_in_a_row:  # a subscriber is back: resume replay at once
                self.unrouted_in_a_row = 0
                self.replay_paused_until = 0.0
            self.counters.batches_published += 1
            self.counters.points_published += flight.samples
            self.metrics.publish_latency.observe(max(0.0, time.time() - flight.created_ms / 1000))
        self.counters.inflight = len(self.inflight)
        if not self.inflight:
            self._drained.set()
        self._pump()

    def _on_refused(self, flight: _Flight, reason: str) -> None:
        """The broker refused a batch (MQTT 5 PUBACK error): keep it, retry from the backlog."""
        self.counters.batches_refused += 1
        self._log_refusal(
            "puback",
            f"broker refused a batch on {self.telemetry_topic}: {reason}. The batch stays in the "
            "buffer; check the broker's ACL for this gateway's user.",
        )
        self.refusals_in_a_row += 1
        self._send_again_later(flight, min(60.0, 5.0 * 2 ** (self.refusals_in_a_row - 1)))

    def _on_unrouted(self, flight: _Flight) -> None:
        """Nobody was subscribed to telemetry: keep the batch until a consumer is back."""
        self.counters.batches_unrouted += 1
        self._log_refusal(
            "unrouted",
            f"broker {self.mqtt.url} has no subscriber for {self.telemetry_topic} (is the ingest "
            "connected?); the batches stay in the buffer and are sent again",
            level=logging.WARNING,
        )
        if time.monotonic() < self.replay_paused_until:
            self._send_again_later(flight, 0.0)  # one pause per episode, not per batch
            return
        first, longest = UNROUTED_PAUSE_S
        self.unrouted_in_a_row += 1
        self._send_again_later(flight, min(longest, first * 2 ** (self.unrouted_in_a_row - 1)))

    def _rewind(self, row_id: int) -> None:
        """Make the backlog stream read ``row_id`` again."""
        self.cursor = min(self.cursor, row_id - 1)
        self.rewinds += 1

    def _drop_backlog_page(self) -> None:
        """Forget the rows read but not sent yet; the backlog stream reads them again."""
        if self.backlog:
            self._rewind(self.backlog[0].id)
            self.backlog.clear()

    def _send_again_later(self, flight: _Flight, pause_s: float) -> None:
        """Hand everything not yet sent to the backlog stream (the row may be a live one), and
        pause replay rather than retrying at network speed."""
        self.unsettled.discard(flight.row_id)
        self._rewind(flight.row_id)
        self._drop_backlog_page()
        self.live.clear()
        self.live_from = None
        self.is_backlog_dirty = True
        if pause_s > 0:
            self.replay_paused_until = time.monotonic() + pause_s
            if self._loop is not None:
                self._loop.call_later(pause_s, self._pump)

    # ------------------------------------------------------------------ sending

    def offer_live(self, batches: list[StoredBatch]) -> None:
        """Batches just committed to the buffer; sent first while connected."""
        if not batches:
            return
        if not self.is_connected:
            self.is_backlog_dirty = True
            return
        if self.live_from is None:
            self.live_from = batches[0].id
            # A backlog page read just before may hold these very rows: the live stream has them.
            if self.backlog and self.backlog[-1].id >= self.live_from:
                self.backlog = deque(b for b in self.backlog if b.id < self.live_from)
        self.live.extend(batches)
        while len(self.live) > self.live_cap:
            self.live.popleft()
            self.live_from = self.live[0].id
            self.is_backlog_dirty = True
        self._pump()

    def _pump(self) -> None:
        if not self.is_connected or self._client is None:
            return
        window = self.mqtt.max_inflight
        may_replay = time.monotonic() >= self.replay_paused_until
        while len(self.inflight) < window:
            sent = False
            if self.live:
                batch = self.live.popleft()
                if batch.id not in self.unsettled:  # not already sent by the backlog stream
                    self._send(batch, is_replay=False)
                sent = True
            if (
                may_replay
                and self.backlog
                and len(self.inflight) < window
                and self.replay_inflight < self.replay_cap
            ):
                self._send(self.backlog.popleft(), is_replay=True)
                sent = True
            if not sent:
                break
        self.counters.inflight = len(self.inflight)
        if (
            may_replay
            and len(self.backlog) < PAGE // 2
            and self.is_backlog_dirty
            and not self.is_loading
        ):
            self.is_loading = True
            asyncio.get_running_loop().create_task(self._load_backlog())

    async def _load_backlog(self) -> None:
        try:
            self.is_backlog_dirty = False
            before, rewinds = self.live_from, self.rewinds
            rows = await self.buffer.read_after(self.cursor, before, PAGE)
            if self.live_from != before:
                self.is_backlog_dirty = True  # the live/backlog boundary moved meanwhile
            if self.rewinds != rewinds:
                # Rows were handed back (cursor moved below this page) while it was read:
                # advancing the cursor past them now would leave them unsent until a restart.
                self.is_backlog_dirty = True
            elif rows:
                self.cursor = max(self.cursor, rows[-1].id)
                self.backlog.extend(r for r in rows if r.id not in self.unsettled)
                if len(rows) == PAGE:
                    self.is_backlog_dirty = True
        except Exception:
            log.exception("reading the backlog failed; retrying")
            self.is_backlog_dirty = True
            await asyncio.sleep(1.0)
        finally:
            self.is_loading = False
        self._pump()

    def _send(self, batch: StoredBatch, *, is_replay: bool) -> None:
        client = self._client
        assert client is not None
        age_ms = time.time_ns() // 1_000_000 - batch.created_ms
        historical = is_replay or age_ms > self.historical_after_ms
        info = client.publish(self.telemetry_topic, self.encode_batch(batch, historical), qos=1)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            # paho did not queue it (its queue is full or the mid is taken): leave it to the backlog.
            log.warning("paho refused a publish", extra={"rc": paho.error_string(info.rc)})
            self._rewind(batch.id)
            self._drop_backlog_page()
            self.is_backlog_dirty = True
            return
        self.inflight[info.mid] = _Flight(batch.id, batch.samples, batch.created_ms, is_replay)
        self.unsettled.add(batch.id)
        if is_replay:
            self.replay_inflight += 1
            self.counters.replayed_batches += 1

    def encode_batch(self, batch: StoredBatch, historical: bool) -> bytes:
        """The wire ``Batch`` JSON, spliced around the stored samples array (no re-encoding)."""
        head = orjson.dumps(
            {
                "v": WIRE_VERSION,
                "gateway": self.gateway,
                "boot": batch.boot,
                "seq": batch.seq,
                "ts_ms": batch.created_ms,
                "historical": historical,
            }
        )
        return head[:-1] + b',"samples":' + batch.payload + b"}"

    async def _delete_acked(self) -> None:
        while True:
            await self._delete_wake.wait()
            self._delete_wake.clear()
            await asyncio.sleep(0.05)  # gather acks into one transaction
            await self._flush_acked()

    async def _flush_acked(self) -> None:
        if not self.acked:
            return
        ids, self.acked = self.acked, []
        try:
            await self.buffer.delete(ids)
        except Exception:
            log.exception("deleting acknowledged batches failed; they will be sent again")
        finally:
            self.unsettled.difference_update(ids)

    # ------------------------------------------------------------------- status

    clean_start = False
    """Our contract keeps a persistent session (paho resends unacknowledged batches itself)."""

    def _set_will(self, client: paho.Client) -> None:
        client.will_set(self.status_topic, self._will(), qos=1, retain=True)

    def _offline_message(self) -> tuple[str, bytes, bool]:
        """What a clean stop publishes last: topic, payload, retained."""
        return self.status_topic, encode(self.status(False)), True

    def _will(self) -> bytes:
        """The Last Will: the offline status marked ``will``, since its ``ts_ms`` is the time it
        was set (now, at connect), not the unknown time the gateway will go offline."""
        return encode(self.status(False).model_copy(update={"will": True}))

    def _publish_retained_status(self) -> None:
        self.publish_gateway_status()
        for status in self.device_status.values():
            self._publish_status(
                topics.device_status(self.enterprise, self.gateway, status.device), status
            )

    def publish_config_report(self, payload: bytes) -> None:
        """Send a ConfigReport now, or at the next connect (only the newest one is kept)."""
        self._config_report = payload
        self._send_config_report()

    def _send_config_report(self) -> None:
        if self.is_connected and self._client is not None and self._config_report is not None:
            self._client.publish(
                topics.config_report(self.enterprise, self.gateway), self._config_report, qos=1
            )
            self._config_report = None

    def publish_gateway_status(self) -> None:
        if self.is_connected:
            self._publish_status(self.status_topic, self.status(True))

    def publish_device_status(self, status: DeviceStatus) -> None:
        """Remember ``status`` and publish it (retained) now or at the next connect."""
        self.device_status[status.device] = status
        if self.is_connected:
            self._publish_status(
                topics.device_status(self.enterprise, self.gateway, status.device), status
            )

    def forget_device(self, device: str) -> None:
        self.device_status.pop(device, None)

    def _publish_status(self, topic: str, payload: Any) -> None:
        assert self._client is not None
        info = self._client.publish(topic, encode(payload), qos=1, retain=True)
        self._status_mids.add(info.mid)

    def publish_metrics(self, figures: dict[str, float]) -> None:
        from wire.payloads import GatewayMetrics

        if self.is_connected and self._client is not None:
            payload = GatewayMetrics(
                gateway=self.gateway, ts_ms=time.time_ns() // 1_000_000, figures=figures
            )
            self._client.publish(self.metrics_topic, encode(payload), qos=0)


def _describe(exc: BaseException, mqtt: MqttSettings) -> str:
    """Why a connection attempt failed, and what to do about it."""
    trusted = (
        f"the CA in {mqtt.ca_file} (mqtt.ca_file)"
        if mqtt.ca_file
        else "the system's trust store (mqtt.ca_file is not set)"
    )
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        if "mismatch" in reason.lower():
            return (
                f"TLS: refusing the broker: its certificate is not valid for the host name "
                f"{mqtt.host!r} ({reason}); verified against {trusted}. Use a host name listed "
                "in the certificate's subjectAltName in mqtt.url, or have the broker's "
                f"certificate reissued with {mqtt.host!r} in it"
            )
        return (
            f"TLS: refusing the broker: its certificate is not trusted by {trusted} ({reason}). "
            "Set mqtt.ca_file to the CA certificate that signed the broker's certificate (the "
            "broker's `cafile`, from whoever runs the broker)"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS: {exc.reason or exc}. Check that the port in mqtt.url is the broker's TLS "
            "listener (mqtts://, 8883 by convention) and that mqtt.ca_file is the broker's CA"
        )
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running, and is the port right?)"
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
    return str(exc) or type(exc).__name__

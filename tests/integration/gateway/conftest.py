"""Fixtures for the gateway core's integration tests: an MQTT collector and a gateway factory."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

FAKES = Path(__file__).resolve().parents[2] / "unit" / "gateway"
if str(FAKES) not in sys.path:
    sys.path.insert(0, str(FAKES))


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class Collector:
    """A subscriber on its own paho thread that keeps every message it receives."""

    url: str
    topic: str
    username: str | None = None
    password: str | None = None
    session: str | None = None
    """A client id for a persistent session: messages published while it is away still arrive."""
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: Any = None

    def start(self) -> Collector:
        host, port = self.url.removeprefix("mqtt://").split(":")
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.session or f"collector-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        client.reconnect_delay_set(0.1, 1)
        if self.username:
            client.username_pw_set(self.username, self.password)
        subscribed = threading.Event()

        def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
            c.subscribe(self.topic, qos=1)

        def on_subscribe(c: Any, u: Any, mid: Any, rcs: Any, p: Any) -> None:
            subscribed.set()

        def on_message(c: Any, u: Any, msg: Any) -> None:
            with self.lock:
                self.messages.append(Received(msg.topic, msg.payload, msg.retain))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if self.session else 0
        client.connect(host, int(port), clean_start=self.session is None, properties=props)
        client.loop_start()
        assert subscribed.wait(10), f"collector could not subscribe to {self.topic}"
        self.client = client
        return self

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.messages)

    def batches(self) -> list[Any]:
        """Every telemetry message received, decoded as wire Batches."""
        from wire.codec import decode_batch

        return [decode_batch(m.payload) for m in self.snapshot() if m.topic.endswith("/telemetry")]

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


@pytest.fixture()
def collect() -> Iterator[Any]:
    made: list[Collector] = []

    def _make(url: str, topic: str, **kw: Any) -> Collector:
        collector = Collector(url, topic, **kw).start()
        made.append(collector)
        return collector

    yield _make
    for collector in made:
        collector.stop()

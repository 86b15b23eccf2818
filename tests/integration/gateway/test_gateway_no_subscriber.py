"""A batch the broker routes to nobody is not delivered: it stays buffered until someone subscribes.

Regression: Mosquitto 2.0 forgets shared subscriptions (the ingest's ``$share/ingest/...``) when it
restarts, until the subscriber reconnects and subscribes again. Meanwhile it acknowledges the
gateway's replay with PUBACK "No matching subscribers" (MQTT 5 reason 0x10) and drops it; the
gateway used to take that PUBACK as delivery and delete the batches from its buffer.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from gateway_fakes import eventually, fake_app, fake_settings, make_device, make_profile
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shulian.devservices import Mosquitto

TELEMETRY = "shulian/v1/ent-a/gw-1/telemetry"


async def test_batches_no_one_subscribed_to_stay_buffered_until_a_subscriber_comes(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    devices = [make_device("n1", profile=make_profile(interval_ms=50))]
    app = fake_app(fake_settings(mosquitto.url, tmp_path / "gw"), devices)
    await app.start()
    try:
        await eventually(
            lambda: app.metrics.publisher.batches_unrouted >= 5, what="PUBACKs 'no subscribers'"
        )
        assert app.metrics.publisher.batches_published == 0, "no batch counts as delivered"
        stats = await app.buffer.stats()
        assert stats.batches >= 5, "batches nobody received are kept"
        sub = collect(mosquitto.url, TELEMETRY)
        sealed = app.batcher.seq
        await eventually(
            lambda: {b.seq for b in sub.batches()} >= set(range(1, sealed + 1)),
            timeout_s=20,
            what="every batch once someone subscribed",
        )
    finally:
        await app.stop()


def _shared_subscriber(url: str, client_id: str, received: set[int]) -> paho.Client:
    """A persistent-session subscriber on a shared subscription, as the ingest is."""
    host, port = url.removeprefix("mqtt://").split(":")
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    subscribed = threading.Event()
    client.on_connect = lambda c, *a: c.subscribe(f"$share/ingest/{TELEMETRY}", qos=1)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = lambda c, u, m: received.add(orjson.loads(m.payload)["seq"])
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect(host, int(port), clean_start=False, properties=props)
    client.loop_start()
    assert subscribed.wait(10), "shared subscription"
    return client


async def test_a_broker_restart_losing_the_shared_subscription_loses_no_batch(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    received: set[int] = set()
    client_id = f"ingest-{uuid.uuid4().hex[:6]}"
    subscriber = await asyncio.to_thread(_shared_subscriber, mosquitto.url, client_id, received)
    devices = [make_device("n2", profile=make_profile(interval_ms=50))]
    app = fake_app(fake_settings(mosquitto.url, tmp_path / "gw"), devices)
    await app.start()
    try:
        await eventually(lambda: app.metrics.publisher.batches_published >= 3, what="flow")
        subscriber.loop_stop()
        await asyncio.to_thread(mosquitto.stop)
        await asyncio.to_thread(mosquitto.start)
        # The gateway is back before the subscriber: its batches reach no one for a while.
        await eventually(
            lambda: app.metrics.publisher.batches_unrouted > 0, timeout_s=15, what="unrouted"
        )
        subscriber = await asyncio.to_thread(_shared_subscriber, mosquitto.url, client_id, received)
        await app.scheduler.stop_all()
        app.batcher.flush()
        await app.spool.drain()
        sealed = app.batcher.seq
        deadline = time.monotonic() + 20
        while (await app.buffer.stats()).batches or app.publisher.inflight:
            assert time.monotonic() < deadline, "the buffer drains once the subscriber is back"
            await asyncio.sleep(0.05)
        await eventually(
            lambda: received == set(range(1, sealed + 1)), what="every batch at the subscriber"
        )
    finally:
        await app.stop()
        subscriber.disconnect()
        subscriber.loop_stop()

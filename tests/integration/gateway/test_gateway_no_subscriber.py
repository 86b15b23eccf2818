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


def _state(p: Any) -> str:
    return (
        f"inflight={len(p.inflight)} replay_inflight={p.replay_inflight} backlog="
        f"{[b.id for b in p.backlog][:3]}+{len(p.backlog)} live={len(p.live)} cursor={p.cursor} "
        f"live_from={p.live_from} paused_for={p.replay_paused_until - time.monotonic():.1f} "
        f"loading={p.is_loading} dirty={p.is_backlog_dirty} unsettled={sorted(p.unsettled)[:5]}"
    )


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
    """A backlog big enough that batches come back unrouted while a backlog page is being read
    or waits to be sent. Both used to leave rows behind the replay cursor, unsent until the
    gateway restarted: a stale page moved the cursor past rows handed back meanwhile, and a
    page dropped on a refusal was not read again."""
    received: set[int] = set()
    client_id = f"ingest-{uuid.uuid4().hex[:6]}"
    subscriber = await asyncio.to_thread(_shared_subscriber, mosquitto.url, client_id, received)
    devices = [make_device(f"n{i}", profile=make_profile(interval_ms=20)) for i in range(8)]
    settings = fake_settings(
        mosquitto.url, tmp_path / "gw", buffer={"batch_max_samples": 50, "batch_max_delay_ms": 200}
    )
    app = fake_app(settings, devices)
    await app.start()
    try:
        await eventually(lambda: app.metrics.publisher.batches_published >= 3, what="flow")
        subscriber.loop_stop()
        await asyncio.to_thread(mosquitto.stop)
        await eventually(lambda: app.batcher.seq >= 100, what="a backlog")
        await asyncio.to_thread(mosquitto.start)
        # The gateway is back before the subscriber: its replay reaches no one for a while.
        await eventually(
            lambda: app.metrics.publisher.batches_unrouted > 150, timeout_s=20, what="unrouted"
        )
        subscriber = await asyncio.to_thread(_shared_subscriber, mosquitto.url, client_id, received)
        await app.scheduler.stop_all()
        app.batcher.flush()
        await app.spool.drain()
        sealed = app.batcher.seq
        deadline = time.monotonic() + 20
        while (await app.buffer.stats()).batches or app.publisher.inflight:
            assert time.monotonic() < deadline, (
                f"the buffer drains once the subscriber is back: {await app.buffer.stats()} "
                f"{_state(app.publisher)} left: {[b.id for b in await app.buffer.read_after(0)]}"
            )
            await asyncio.sleep(0.05)
        await eventually(
            lambda: received == set(range(1, sealed + 1)), what="every batch at the subscriber"
        )
    finally:
        await app.stop()
        subscriber.disconnect()
        subscriber.loop_stop()

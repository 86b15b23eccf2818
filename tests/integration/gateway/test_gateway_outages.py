"""Broker outages through a real Mosquitto: nothing lost, replay in order, delete only after PUBACK."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

from gateway_fakes import eventually, fake_app, fake_settings, make_device, make_profile, world

from shulian.devservices import Mosquitto
from wire.codec import decode_status


def part_counts(batches: list[Any]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for batch in batches:
        for sample in batch.samples:
            if sample.signal == "part_count":
                out[sample.device].append(sample.value)
    return out


async def test_broker_outage_loses_nothing_and_replays_in_order(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/telemetry", session="outage-sub")
    devices = [make_device(f"m{i}", profile=make_profile(interval_ms=50)) for i in range(3)]
    settings = fake_settings(mosquitto.url, tmp_path / "gw", buffer={"historical_after_s": 0.3})
    app = fake_app(settings, devices)
    await app.start()
    try:
        await eventually(lambda: app.metrics.publisher.batches_published >= 3, what="live flow")
        await asyncio.to_thread(mosquitto.stop)
        await eventually(lambda: not app.publisher.is_connected, what="disconnect seen")
        # While the broker is away every batch stays on disk: nothing is deleted without PUBACK.
        acked_before = app.metrics.publisher.batches_published
        await eventually(
            lambda: app.batcher.seq >= acked_before + 15, what="batches piling up", timeout_s=10
        )
        stats = await app.buffer.stats()
        assert stats.batches >= app.batcher.seq - acked_before - app.publisher.mqtt.max_inflight
        assert stats.batches >= 10
        assert app.metrics.publisher.batches_published == acked_before
        await asyncio.to_thread(mosquitto.start)
        await eventually(lambda: app.publisher.is_connected, what="reconnect", timeout_s=15)
        await eventually(
            lambda: app.metrics.publisher.replayed_batches > 0, what="replay started", timeout_s=10
        )
        await app.scheduler.stop_all()
        app.batcher.flush()
        await app.spool.drain()
        last_seq = app.batcher.seq

        async def drained() -> bool:
            return (await app.buffer.stats()).batches == 0 and not app.publisher.inflight

        async def check_drained() -> None:
            for _ in range(400):
                if await drained():
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"buffer not drained: {await app.buffer.stats()}")

        await check_drained()
    finally:
        await app.stop()

    try:
        await eventually(
            lambda: {b.seq for b in sub.batches()} >= set(range(1, last_seq + 1)),
            what="every batch at the subscriber",
            timeout_s=15,
        )
    except AssertionError:
        got = [(b.seq, b.historical) for b in sub.batches()]
        missing = sorted(set(range(1, last_seq + 1)) - {g[0] for g in got})
        raise AssertionError(f"missing {missing}; got {got}") from None
    batches = sub.batches()
    seqs = {b.seq for b in batches}
    assert seqs == set(range(1, last_seq + 1)), "no batch lost, none invented"
    historical = [b.seq for b in batches if b.historical]
    live = [b.seq for b in batches if not b.historical]
    assert historical, "the backlog went out marked historical"
    assert _first_arrivals(historical) == sorted(set(historical)), "backlog replayed in order"
    assert _first_arrivals(live) == sorted(set(live)), "live batches in order"
    for device, counts in part_counts(_dedupe(batches)).items():
        ordered = sorted(counts)
        assert ordered == list(range(ordered[0], ordered[-1] + 1)), f"{device}: a sample is missing"


def _first_arrivals(seqs: list[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for seq in seqs:
        if seq not in seen:
            seen.add(seq)
            out.append(seq)
    return out


def _dedupe(batches: list[Any]) -> list[Any]:
    by_key = {(b.boot, b.seq): b for b in batches}
    return list(by_key.values())


async def test_replay_does_not_starve_live_data(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    """With a big backlog on disk, live batches still go out within about a second."""
    devices = [make_device(f"r{i}", profile=make_profile(interval_ms=20)) for i in range(4)]
    settings = fake_settings(
        mosquitto.url,
        tmp_path / "gw",
        mqtt={"max_inflight": 4, "replay_share": 0.5},
        buffer={"historical_after_s": 1.0, "batch_max_samples": 20},
    )
    await asyncio.to_thread(mosquitto.stop)
    app = fake_app(settings, devices)
    await app.start()
    try:
        await eventually(lambda: app.batcher.seq >= 100, what="a backlog", timeout_s=20)
        await asyncio.to_thread(mosquitto.start)
        sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/telemetry")
        await eventually(
            lambda: any(not b.historical for b in sub.batches()),
            what="a live batch during replay",
            timeout_s=5,
        )
        backlog_left = (await app.buffer.stats()).batches
        assert backlog_left > 20, "live data went out while the backlog was still being replayed"
        await eventually(
            lambda: any(b.historical for b in sub.batches()), what="replay progressing"
        )
    finally:
        await app.stop()


async def test_disk_cap_drops_oldest_counts_and_keeps_running(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    import random

    await asyncio.to_thread(mosquitto.stop)
    devices = [make_device(f"c{i}", profile=make_profile(interval_ms=20)) for i in range(6)]
    settings = fake_settings(mosquitto.url, tmp_path / "gw", buffer={"max_bytes": 65536})
    app = fake_app(settings, devices)
    rng = random.Random(1)
    for device in devices:
        world(device.id).generate = lambda name, n: n if name != "spindle_speed" else rng.random()
    await app.start()
    try:

        async def dropped() -> int:
            return (await app.buffer.stats()).dropped_samples

        for _ in range(400):
            if await dropped() > 0:
                break
            await asyncio.sleep(0.05)
        stats = await app.buffer.stats()
        assert stats.dropped_samples > 0 and stats.dropped_batches > 0
        assert stats.bytes <= 65536
        reads = app.metrics.figures()["points_read_total"]
        await eventually(
            lambda: app.metrics.figures()["points_read_total"] > reads + 100, what="still reading"
        )
        await asyncio.to_thread(mosquitto.start)
        status_sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/status")
        await eventually(
            lambda: any(
                decode_status(m.payload).buffer_dropped_samples > 0 for m in status_sub.snapshot()
            ),
            what="GatewayStatus reporting the loss",
            timeout_s=15,
        )
        scrape = app.metrics.figures()
        assert scrape["buffer_dropped_samples_total"] > 0
    finally:
        await app.stop()

"""Device supervision through a real broker: isolation, offline within three intervals, recovery."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gateway_fakes import eventually, fake_app, fake_settings, make_device, make_profile, world

from shulian.devservices import Mosquitto
from wire.codec import decode_device_status
from wire.payloads import DeviceConnection

INTERVAL_MS = 200


def statuses(sub: Any, device: str) -> list[Any]:
    return [
        decode_device_status(m.payload)
        for m in sub.snapshot()
        if m.topic.endswith(f"devices/{device}/status")
    ]


def samples_between(sub: Any, device: str, start_ms: int, end_ms: int) -> int:
    return sum(
        1
        for b in sub.batches()
        for s in b.samples
        if s.device == device and start_ms <= s.ts_ms < end_ms
    )


async def test_silent_device_goes_offline_within_three_intervals_others_unaffected(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/#")
    devices = [
        make_device(name, profile=make_profile(interval_ms=INTERVAL_MS))
        for name in ("good-1", "good-2", "mute")
    ]
    app = fake_app(fake_settings(mosquitto.url, tmp_path / "gw"), devices)
    await app.start()
    try:
        await eventually(
            lambda: (
                statuses(sub, "mute")
                and statuses(sub, "mute")[-1].connection is DeviceConnection.CONNECTED
            ),
            what="mute connected",
        )
        await eventually(lambda: world("mute").reads >= 3, what="a few good reads")
        before_ms = time.time_ns() // 1_000_000
        last_good = app.scheduler.runners["mute"].last_good_mono
        world("mute").is_hanging = True  # stops answering; the read never returns
        await eventually(
            lambda: statuses(sub, "mute")[-1].connection is DeviceConnection.DISCONNECTED,
            what="mute reported offline",
            timeout_s=5,
        )
        offline = statuses(sub, "mute")[-1]
        silent_s = time.monotonic() - last_good
        assert silent_s < 3 * INTERVAL_MS / 1000 + 0.15, f"offline only after {silent_s:.2f} s"
        assert "no good read" in (offline.error or "")
        assert offline.last_good_ms is not None and offline.last_good_ms >= before_ms - 1000
        # The other devices kept their pace during the failure.
        window_start = time.time_ns() // 1_000_000
        await eventually(
            lambda: time.time_ns() // 1_000_000 > window_start + 1500, what="a window of time"
        )
        window_end = time.time_ns() // 1_000_000
        await eventually(
            lambda: samples_between(sub, "good-1", window_start, window_end) > 0,
            what="samples of the good device",
        )
        await eventually(
            lambda: samples_between(sub, "good-1", window_end - 200, window_end) > 0,
            what="latest good samples published",
        )
        per_cycle = 3  # every signal of the fake changes every read
        expected = per_cycle * (window_end - window_start) / INTERVAL_MS
        for good in ("good-1", "good-2"):
            got = samples_between(sub, good, window_start, window_end)
            assert got >= 0.8 * expected, f"{good}: {got} samples, expected about {expected:.0f}"
            assert statuses(sub, good)[-1].connection is DeviceConnection.CONNECTED
        # It recovers by itself when it answers again.
        world("mute").is_hanging = False
        await eventually(
            lambda: statuses(sub, "mute")[-1].connection is DeviceConnection.CONNECTED,
            what="mute back online",
            timeout_s=20,
        )
    finally:
        await app.stop()


async def test_unreachable_device_reconnects_with_backoff_and_reports_error(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/devices/#")
    device = make_device("flaky", profile=make_profile(interval_ms=50))
    app = fake_app(fake_settings(mosquitto.url, tmp_path / "gw"), [device])
    await app.start()
    try:
        await eventually(lambda: world("flaky").reads >= 2, what="reads")
        world("flaky").is_unreachable = True
        await eventually(
            lambda: (
                statuses(sub, "flaky")
                and statuses(sub, "flaky")[-1].connection is DeviceConnection.DISCONNECTED
            ),
            what="disconnected status",
        )
        assert "flaky" in (statuses(sub, "flaky")[-1].error or "")
        await eventually(lambda: app.scheduler.runners["flaky"].counters.reconnects >= 3)
        world("flaky").is_unreachable = False
        await eventually(
            lambda: statuses(sub, "flaky")[-1].connection is DeviceConnection.CONNECTED,
            what="reconnected",
        )
        assert world("flaky").closes >= world("flaky").connects - 1, "every failed session closed"
    finally:
        await app.stop()

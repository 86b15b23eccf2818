"""A gateway holding more than 1,100 descriptors still reaches its broker (issue 12, item 6).

paho's own network thread waits with ``select()``, which refuses descriptors of 1024 and above:
with a thousand device sockets open, the broker socket got such a number and the gateway never
published. The subscriber here is ``mosquitto_sub`` in its own process, so the test's counting
does not depend on the descriptor numbers of this process.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import shutil
import socket
import struct
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_fakes import eventually, fake_app, fake_settings, make_device, make_profile, world

from shulian.devservices import Mosquitto
from wire.codec import decode_batch

HELD = 1_150
TOPIC = "shulian/v1/ent-a/gw-1/telemetry"


@pytest.fixture
def held_descriptors() -> Iterator[list[socket.socket]]:
    """More than 1,100 open sockets in this process, as device connections would be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = HELD + 512
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    gc.collect()  # a dead object closing its descriptor later would free a low number
    held = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(HELD)]
    try:
        yield held
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def fill_low_descriptors(held: list[socket.socket]) -> None:
    """Hold every descriptor below HELD that was freed since the fixture ran (starting the
    subscriber, or a collected object of an earlier test, closed one: CI once probed fd 12), so
    the broker socket gets a number above 1024."""
    gc.collect()
    while True:
        probe = socket.socket()
        if probe.fileno() > HELD - 50:
            probe.close()
            return
        held.append(probe)


def start_subscriber(mosquitto: Mosquitto, out: Path) -> subprocess.Popen[bytes]:
    """``mosquitto_sub`` with a persistent MQTT 5 session; it reconnects by itself."""
    binary = shutil.which("mosquitto_sub")
    if binary is None:
        pytest.skip("needs mosquitto_sub (apt-get install mosquitto-clients)")
    args = [binary, "-h", mosquitto.host, "-p", str(mosquitto.port), "-V", "mqttv5"]
    args += ["-i", "fds-counter", "-c", "-x", "3600", "-q", "1", "-t", TOPIC]
    return subprocess.Popen(args, stdout=out.open("wb"), stderr=subprocess.STDOUT)


def received(out: Path) -> Counter[tuple[str, int]]:
    counts: Counter[tuple[str, int]] = Counter()
    for line in out.read_bytes().splitlines():
        if line.startswith(b"{"):
            batch = decode_batch(line)
            counts[(batch.boot, batch.seq)] += 1
    return counts


async def test_gateway_with_1100_descriptors_publishes_and_survives_a_broker_restart(
    mosquitto: Mosquitto,
    tmp_path: Path,
    held_descriptors: list[socket.socket],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "sub.out"
    sub = start_subscriber(mosquitto, out)
    try:
        fill_low_descriptors(held_descriptors)
        devices = [make_device(f"fd{i}", profile=make_profile(interval_ms=50)) for i in range(3)]
        settings = fake_settings(mosquitto.url, tmp_path / "gw")
        app = fake_app(settings, devices)
        await asyncio.sleep(0.5)  # mosquitto_sub subscribes
        await app.start()
        try:
            await eventually(
                lambda: app.metrics.publisher.batches_published >= 5,
                what="batches acknowledged with 1,150 descriptors held",
                timeout_s=15,
            )
            # Quiesce before the restart so no batch is in flight: QoS 1 may duplicate one
            # whose PUBACK the stopped broker never sent, and this test counts exact deliveries.
            for device in devices:
                world(device.id).is_unreachable = True
            await eventually(
                lambda: not app.publisher.inflight and not app.publisher.live, what="quiet"
            )
            await asyncio.sleep(0.3)
            await eventually(lambda: not app.publisher.inflight, what="still quiet")
            before = app.metrics.publisher.batches_published
            await asyncio.to_thread(mosquitto.stop)
            await eventually(lambda: not app.publisher.is_connected, what="disconnect seen")
            for device in devices:
                world(device.id).is_unreachable = False  # batches pile up on disk meanwhile
            await asyncio.sleep(0.5)
            await asyncio.to_thread(mosquitto.start)
            await eventually(lambda: app.publisher.is_connected, what="reconnect", timeout_s=20)
            await eventually(
                lambda: app.metrics.publisher.batches_published >= before + 10,
                what="publishing again after the broker restart",
                timeout_s=20,
            )
            await app.scheduler.stop_all()
            app.batcher.flush()
            await app.spool.drain()

            async def drained() -> None:
                for _ in range(400):
                    if (await app.buffer.stats()).batches == 0 and not app.publisher.inflight:
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(f"buffer not drained: {await app.buffer.stats()}")

            await drained()
            last_seq = app.batcher.seq
            boot = app.boot
        finally:
            await app.stop()
        expected = {(boot, seq) for seq in range(1, last_seq + 1)}
        await eventually(
            lambda: set(received(out)) >= expected, what="every batch at the subscriber"
        )
        counts = received(out)
        assert set(counts) == expected, "no batch lost, none invented"
        twice = sorted(key for key, n in counts.items() if n != 1)
        assert not twice, f"batches delivered more than once: {twice}"
        assert last_seq >= before + 10
        blamed = [
            r.getMessage() for r in caplog.records if "does not answer MQTT 5" in r.getMessage()
        ]
        assert not blamed, "the broker speaks MQTT 5; nothing may blame it"
        lost = [
            r.getMessage() for r in caplog.records if "disconnected from broker" in r.getMessage()
        ]
        assert lost and all(": " in m for m in lost), f"the restart is logged with a cause: {lost}"
    finally:
        sub.terminate()
        sub.wait(5)


async def test_a_connection_reset_is_logged_as_such_and_does_not_drop_mqtt_5(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker endpoint that resets the connection after the CONNECT: the log says so in the
    socket's words, and the gateway keeps MQTT 5 (only a broker that hears MQTT 5 and stays
    silent or hangs up makes ``protocol: auto`` fall back to 3.1.1)."""
    resets = 0

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal resets
        await reader.read(1024)  # the CONNECT
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        resets += 1
        writer.transport.abort()  # closing with linger 0 sends RST

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = fake_settings(f"mqtt://127.0.0.1:{port}", tmp_path / "gw")
    app = fake_app(settings, [])
    caplog.set_level("WARNING", logger="gateway.publisher")
    await app.start()
    try:
        await eventually(lambda: resets >= 3, what="three connection attempts", timeout_s=15)
    finally:
        await app.stop()
        server.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.publisher"]
    assert any(
        "ended before the broker answered the CONNECT" in m and "reset by peer" in m
        for m in messages
    ), messages
    assert not any("does not answer MQTT 5" in m for m in messages), messages
    assert app.publisher.protocol == "5"

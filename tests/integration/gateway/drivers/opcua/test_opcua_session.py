"""Self-healing: a lost session is reported by watch() within about two keep-alives, close() never
hangs, and a fresh connect + subscribe delivers data again (the scheduler's loop, run here)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from opcua_server_fixture import (
    GrinderServer,
    grinder,
    grinder_profile,
    make_driver,
    wait_until_async,
)

from gateway.drivers.base import RawReading
from gateway.errors import DeviceTimeoutError, DeviceUnreachableError, DriverError
from gateway.profiles.models import GroupSpec
from shulian.devservices import free_port

__all__ = ["grinder"]  # the fixture, used by name

FAST = GroupSpec(name="fast", interval_ms=100)
KEEPALIVE_S = 0.5


class FreezableProxy:
    """A TCP relay that can go silent without closing its sockets, as a cut cable does."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.is_frozen = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if not self.is_frozen:
                    writer.write(data)
                    await writer.drain()


def values(readings: list[RawReading], signal: str) -> list[object]:
    return [r.raw for r in readings if r.signal == signal]


async def test_server_restart_is_detected_and_a_new_session_delivers_again_five_times(
    grinder: GrinderServer,
) -> None:
    driver = make_driver(grinder.endpoint, grinder_profile())
    readings: list[RawReading] = []
    detection_s: list[float] = []
    for cycle in range(5):
        await driver.connect()
        handle = await driver.subscribe(FAST, readings.extend)
        speed = 1000.0 + cycle
        await grinder.write("SpindleSpeed", speed)
        await wait_until_async(
            lambda s=speed: s in values(readings, "spindle_speed"),
            timeout_s=5,
            what=f"data after restart {cycle}",
        )
        watch = asyncio.create_task(driver.watch())
        await asyncio.sleep(0)  # let watch() start waiting before the server goes
        assert not watch.done(), "a healthy session must keep watch() waiting"
        started = time.monotonic()
        await grinder.stop()
        with pytest.raises(DriverError) as lost:
            await asyncio.wait_for(watch, timeout=2 * KEEPALIVE_S + 3)
        detection_s.append(time.monotonic() - started)
        assert "grinder-01 (opc.tcp://127.0.0.1:" in str(lost.value)
        assert "session lost: " in str(lost.value)  # the server's BadShutdown, or the socket
        closing = time.monotonic()
        await handle.cancel()  # as the scheduler does: cancel the handles, then close
        await driver.close()
        assert time.monotonic() - closing < 1, (
            "cancel() and close() must not wait on a dead session"
        )
        await grinder.start()
    print("detection_s", [round(d, 2) for d in detection_s])
    assert max(detection_s) < 2 * KEEPALIVE_S + 2, detection_s
    await driver.connect()
    assert (await driver.read(FAST)).readings[0].raw == 1004.0
    await driver.close()


async def test_silent_network_is_detected_by_the_keepalive_probe_and_close_is_bounded(
    grinder: GrinderServer,
) -> None:
    proxy = FreezableProxy(grinder.port)
    await proxy.start()
    try:
        driver = make_driver(f"opc.tcp://127.0.0.1:{proxy.port}", grinder_profile())
        readings: list[RawReading] = []
        await driver.connect()
        subscription = await driver.subscribe(FAST, readings.extend)
        await wait_until_async(lambda: values(readings, "spindle_speed"), what="initial value")
        watch = asyncio.create_task(driver.watch())
        await asyncio.sleep(0)
        started = time.monotonic()
        proxy.is_frozen = True  # nothing is closed: only the keep-alive can tell
        with pytest.raises(DeviceTimeoutError, match=r"no answer within 0\.5 s"):
            await asyncio.wait_for(watch, timeout=10)
        detected_s = time.monotonic() - started
        closing = time.monotonic()
        await subscription.cancel()  # what the scheduler does next: neither may wait on the wire
        await driver.close()
        closed_s = time.monotonic() - closing
    finally:
        await proxy.stop()
    print("silent network: detected", round(detected_s, 2), "closed", round(closed_s, 2))
    assert detected_s < 2 * KEEPALIVE_S + 1.5, f"took {detected_s:.2f} s"
    assert closed_s < 0.5, f"cancel() and close() took {closed_s:.2f} s on a silent network"


async def test_refused_connection_names_device_and_endpoint() -> None:
    port = free_port()
    driver = make_driver(f"opc.tcp://127.0.0.1:{port}", grinder_profile())
    with pytest.raises(DeviceUnreachableError) as refused:
        await driver.connect()
    message = str(refused.value)
    assert f"grinder-01 (opc.tcp://127.0.0.1:{port}): connection refused" in message
    assert "Check the endpoint's host and port" in message
    await driver.close()  # idempotent after a failed connect


async def test_connect_to_a_silent_server_times_out_within_its_bound() -> None:
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    driver = make_driver(f"opc.tcp://127.0.0.1:{port}", grinder_profile())
    started = time.monotonic()
    try:
        with pytest.raises(
            DeviceTimeoutError, match=r"no answer within 1 s while opening a session"
        ):
            await driver.connect()
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()
    assert time.monotonic() - started < 6  # 4 x timeout_s at most


async def test_a_dropped_connection_wakes_watch_at_once(grinder: GrinderServer) -> None:
    proxy = FreezableProxy(grinder.port)
    await proxy.start()
    driver = make_driver(f"opc.tcp://127.0.0.1:{proxy.port}", grinder_profile())
    readings: list[RawReading] = []
    try:
        await driver.connect()
        await driver.subscribe(FAST, readings.extend)
        await wait_until_async(lambda: values(readings, "spindle_speed"), what="initial value")
        watch = asyncio.create_task(driver.watch())
        await asyncio.sleep(0)
        assert not watch.done()
        started = time.monotonic()
        await proxy.stop()  # both sockets closed, as when a PLC is switched off (kill -9)
        with pytest.raises(
            DeviceUnreachableError, match="session lost: the connection to the server was lost"
        ):
            await asyncio.wait_for(watch, timeout=5)
        assert time.monotonic() - started < KEEPALIVE_S
    finally:
        await driver.close()

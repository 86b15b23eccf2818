"""The gateway's own Modbus TCP link: transaction ids, late replies, and broken streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from modbus_live import make_device, make_driver

from gateway.drivers.modbus.driver import ModbusDriver
from gateway.errors import DeviceTimeoutError, ProtocolError
from gateway.profiles.models import GroupSpec

DEFAULT = GroupSpec(name="default")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


@pytest.fixture()
async def serve() -> AsyncIterator[Callable[[Handler], Coroutine[Any, Any, int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()


@pytest.fixture()
async def drivers() -> AsyncIterator[list[ModbusDriver]]:
    opened: list[ModbusDriver] = []
    yield opened
    for driver in opened:
        await driver.close()


def reply(request: bytes, value: int) -> bytes:
    """A one-register reply to ``request`` (same transaction id and unit)."""
    return (
        request[:2] + b"\x00\x00\x00\x05" + bytes([request[6], request[7], 2]) + value.to_bytes(2)
    )


async def test_a_late_reply_to_a_timed_out_request_is_not_taken_for_the_next_one(
    serve: Callable[[Handler], Coroutine[Any, Any, int]], drivers: list[ModbusDriver]
) -> None:
    async def slow_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The first request is answered (with 1) only after the second arrives; the second
        # is answered with 2. A link that ignores transaction ids would read 1 the second time.
        first = await reader.readexactly(12)
        second = await reader.readexactly(12)
        writer.write(reply(first, 1) + reply(second, 2))
        await writer.drain()
        while request := await reader.read(12):
            writer.write(reply(request, 3))

    port = await serve(slow_first)
    device = make_device(
        [{"name": "tool_number", "address": 0}],
        f"tcp://127.0.0.1:{port}",
        modbus={"timeout_s": 0.2, "retries": 1},
    )
    driver = make_driver(device)
    drivers.append(driver)
    await driver.connect()

    result = await driver.read(DEFAULT)

    assert [r.raw for r in result.readings] == [2]
    assert (await driver.read(DEFAULT)).readings[0].raw == 3


async def test_a_reply_from_another_unit_is_a_protocol_error(
    serve: Callable[[Handler], Coroutine[Any, Any, int]], drivers: list[ModbusDriver]
) -> None:
    async def wrong_unit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await reader.read(12):
            writer.write(reply(request[:6] + b"\x09" + request[7:], 5))

    port = await serve(wrong_unit)
    driver = make_driver(
        make_device([{"name": "tool_number", "address": 0}], f"tcp://127.0.0.1:{port}", unit_id=4)
    )
    drivers.append(driver)
    await driver.connect()

    with pytest.raises(ProtocolError, match="comes from unit 9, not 4"):
        await driver.read(DEFAULT)


async def test_a_stream_that_is_not_modbus_tcp_fails_the_read_and_drops_the_connection(
    serve: Callable[[Handler], Coroutine[Any, Any, int]], drivers: list[ModbusDriver]
) -> None:
    async def rtu_device(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(12):
            writer.write(bytes.fromhex("01 03 02 00 2a 39 9b 00"))  # RTU framing, not MBAP

    port = await serve(rtu_device)
    driver = make_driver(
        make_device(
            [{"name": "tool_number", "address": 0}],
            f"tcp://127.0.0.1:{port}",
            modbus={"timeout_s": 0.5, "retries": 0},
        )
    )
    drivers.append(driver)
    await driver.connect()

    with pytest.raises(ProtocolError) as caught:
        await driver.read(DEFAULT)

    assert "not a Modbus TCP reply" in str(caught.value)
    assert "Check the endpoint's scheme (tcp:// or rtu+tcp://)" in str(caught.value)
    assert driver._transport is not None and not driver._transport.is_connected


async def test_a_reply_split_across_packets_is_put_back_together(
    serve: Callable[[Handler], Coroutine[Any, Any, int]], drivers: list[ModbusDriver]
) -> None:
    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await reader.read(12):
            for byte in reply(request, 4242):
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0)

    port = await serve(dribble)
    driver = make_driver(
        make_device([{"name": "tool_number", "address": 0}], f"tcp://127.0.0.1:{port}")
    )
    drivers.append(driver)
    await driver.connect()

    assert (await driver.read(DEFAULT)).readings[0].raw == 4242


async def test_an_unanswered_request_times_out_and_is_forgotten(
    serve: Callable[[Handler], Coroutine[Any, Any, int]], drivers: list[ModbusDriver]
) -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(12):
            pass

    port = await serve(never)
    driver = make_driver(
        make_device(
            [{"name": "tool_number", "address": 0}],
            f"tcp://127.0.0.1:{port}",
            modbus={"timeout_s": 0.1, "retries": 0},
        )
    )
    drivers.append(driver)
    await driver.connect()

    with pytest.raises(DeviceTimeoutError, match=r"no reply in 0\.1 s after 1 try"):
        await driver.read(DEFAULT)

    link = driver._transport._link if driver._transport else None
    assert link is not None and not link._waiting, "a timed-out request is not waited for"


def test_the_link_runs_on_uvloop_as_the_gateway_does() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def read_once() -> list[object]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while request := await reader.read(12):
                writer.write(reply(request, 7))

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        driver = make_driver(
            make_device([{"name": "tool_number", "address": 0}], f"tcp://127.0.0.1:{port}")
        )
        try:
            await driver.connect()
            return [r.raw for r in (await driver.read(DEFAULT)).readings]
        finally:
            await driver.close()
            server.close()

    assert uvloop.run(read_once()) == [7]

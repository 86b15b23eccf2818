"""The Modbus driver against a real pymodbus server: values, sharing, failures and isolation."""

from __future__ import annotations

import asyncio
import math
import shutil
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from modbus_live import (
    ServerFactory,
    UnitMap,
    connected,
    make_device,
    make_driver,
    wait_until_async,
    wire_registers,
)
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType as SimType

from gateway.drivers.modbus.driver import ModbusDriver
from gateway.drivers.modbus.transport import transport_pool
from gateway.errors import DeviceTimeoutError, DeviceUnreachableError
from gateway.profiles.models import GroupSpec
from shulian.devservices import free_port
from wire.payloads import Quality

DEFAULT = GroupSpec(name="default")

NUMERIC = [  # (type, struct format, value)
    ("int16", ">h", -12345),
    ("uint16", ">H", 54321),
    ("int32", ">i", -123456789),
    ("uint32", ">I", 3_000_000_000),
    ("int64", ">q", -1_234_567_890_123),
    ("uint64", ">Q", 2**63 + 12345),
    ("float32", ">f", 123.456),
    ("float64", ">d", -9876.54321),
]
ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]


def values_of(readings: Any) -> dict[str, Any]:
    return {r.signal: r.raw for r in readings}


async def test_driver_reads_every_type_and_word_order_from_a_real_server(
    modbus_server: ServerFactory, drivers: list[ModbusDriver]
) -> None:
    unit = UnitMap()
    signals: list[dict[str, Any]] = []
    expected: dict[str, Any] = {}
    address = 0
    for order in ORDERS:
        for type_, fmt, value in NUMERIC:
            name = f"axis_temperature.{type_}_{order.lower()}"
            registers = wire_registers(fmt, value, order)
            unit.put("holding", address, registers)
            signals.append({"name": name, "address": address, "type": type_, "word_order": order})
            expected[name] = struct.unpack(fmt, struct.pack(fmt, value))[0]
            address += len(registers)
    unit.holding[address] = 0b0000_0000_0010_0100  # a status word: bits 2 and 5 set
    signals += [
        {"name": "alarm_active.bit2", "address": address, "type": "bool", "bit": 2},
        {"name": "alarm_active.bit3", "address": address, "type": "bool", "bit": 3},
        {"name": "alarm_code", "address": address},
    ]
    expected |= {"alarm_active.bit2": True, "alarm_active.bit3": False, "alarm_code": 36}
    unit.put("holding", address + 1, [0x4752, 0x2D33, 0x3130, 0x0000])  # "GR-310"
    signals.append({"name": "program_name", "address": address + 1, "type": "string", "length": 4})
    expected["program_name"] = "GR-310"
    unit.coils |= {0: True, 1: False, 7: True}
    unit.discrete_inputs |= {3: True}
    unit.put("input", 10, wire_registers(">f", 0.75, "DCBA"))  # the profile default
    signals += [
        {"name": "alarm_active", "table": "coil", "address": 0, "type": "bool"},
        {"name": "alarm_active.door", "table": "coil", "address": 7, "type": "bool"},
        {"name": "test_result_ok", "table": "discrete_input", "address": 3, "type": "bool"},
        {"name": "power_factor", "table": "input", "address": 10, "type": "float32"},
    ]
    expected |= {
        "alarm_active": True,
        "alarm_active.door": True,
        "test_result_ok": True,
        "power_factor": 0.75,
    }
    unit.holding |= {300: 0x1234, 301: 0x1234, 302: 0x4142}
    signals += [
        {"name": "tool_number", "address": 300, "type": "uint16"},  # profile order: not applied
        {"name": "tool_number.swapped", "address": 301, "type": "uint16", "word_order": "BADC"},
        {"name": "alarm_text", "address": 302, "type": "string", "length": 1},
    ]
    expected |= {"tool_number": 0x1234, "tool_number.swapped": 0x3412, "alarm_text": "AB"}
    server = await modbus_server({1: unit})
    device = make_device(
        signals, f"tcp://127.0.0.1:{server.port}", word_order="DCBA", modbus={"max_gap": 125}
    )
    driver = await connected(drivers, make_driver(device))

    result = await driver.read(DEFAULT)

    assert values_of(result.readings) == expected
    assert all(r.quality is Quality.GOOD for r in result.readings)
    assert result.requests == len(driver.plan(DEFAULT)) == 5  # coils, inputs, 2 holding, input
    assert driver.metrics.requests == 5


async def test_units_behind_one_endpoint_share_one_connection(
    modbus_server: ServerFactory, drivers: list[ModbusDriver]
) -> None:
    units = {uid: UnitMap(holding={0: uid * 100, 1: uid}) for uid in (1, 2, 3)}
    server = await modbus_server(units)
    endpoint = f"tcp://127.0.0.1:{server.port}"
    signals = [{"name": "spindle_speed", "address": 0}, {"name": "tool_number", "address": 1}]
    group = [
        await connected(
            drivers, make_driver(make_device(signals, endpoint, unit_id=uid, device_id=f"m{uid}"))
        )
        for uid in units
    ]

    results = await asyncio.gather(*(d.read(DEFAULT) for d in group))

    assert [values_of(r.readings) for r in results] == [
        {"spindle_speed": uid * 100, "tool_number": uid} for uid in units
    ]
    assert len(server.server.active_connections) == 1
    assert transport_pool().users(group[0].endpoint.bus_key) == 3
    await group[0].close()
    assert transport_pool().users(group[0].endpoint.bus_key) == 2
    assert values_of((await group[1].read(DEFAULT)).readings)["spindle_speed"] == 200


async def test_modbus_exception_on_one_block_keeps_the_other_blocks_good(
    modbus_server: ServerFactory, drivers: list[ModbusDriver]
) -> None:
    server = await modbus_server({1: UnitMap(holding={0: 11, 200: 22})})  # nothing at 100
    signals = [
        {"name": "spindle_speed", "address": 0},
        {"name": "spindle_load", "address": 100},
        {"name": "tool_number", "address": 200},
    ]
    device = make_device(signals, f"tcp://127.0.0.1:{server.port}", modbus={"max_gap": 0})
    driver = await connected(drivers, make_driver(device))

    result = await driver.read(DEFAULT)

    by_name = {r.signal: r for r in result.readings}
    assert (by_name["spindle_speed"].raw, by_name["spindle_speed"].quality) == (11, Quality.GOOD)
    assert (by_name["tool_number"].raw, by_name["tool_number"].quality) == (22, Quality.GOOD)
    bad = by_name["spindle_load"]
    assert (bad.raw, bad.quality) == (None, Quality.BAD)
    assert bad.reason == "Modbus exception 2: illegal data address"
    assert result.requests == 3
    assert driver.metrics.errors == 1


async def test_refused_connection_says_so_with_the_device_and_a_next_step(
    drivers: list[ModbusDriver],
) -> None:
    port = free_port()
    device = make_device([{"name": "spindle_speed", "address": 0}], f"tcp://127.0.0.1:{port}")
    driver = make_driver(device)
    drivers.append(driver)

    with pytest.raises(DeviceUnreachableError) as caught:
        await driver.connect()

    assert str(caught.value) == (
        f"dev-1 (tcp://127.0.0.1:{port} unit 1): connection refused by 127.0.0.1:{port}. "
        f"Check that the device is on and serves Modbus on port {port}."
    )
    assert transport_pool().users(driver.endpoint.bus_key) == 0, (
        "a failed connect holds no connection"
    )


@pytest.fixture()
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers (a hung device)."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def test_unanswered_requests_raise_a_timeout_after_every_try(
    silent_server: int, drivers: list[ModbusDriver]
) -> None:
    device = make_device(
        [{"name": "spindle_speed", "address": 0}],
        f"tcp://127.0.0.1:{silent_server}",
        unit_id=4,
        device_id="hobber-03",
        modbus={"timeout_s": 0.3, "retries": 2},
    )
    driver = await connected(drivers, make_driver(device))
    started = time.monotonic()

    with pytest.raises(DeviceTimeoutError) as caught:
        await driver.read(DEFAULT)

    elapsed = time.monotonic() - started
    assert str(caught.value) == (
        f"hobber-03 (tcp://127.0.0.1:{silent_server} unit 4): no reply in 0.3 s after 3 tries. "
        "Check the unit id or raise timeout_s."
    )
    assert 0.85 <= elapsed < 1.5, elapsed
    assert driver.metrics.errors == 1


async def test_a_dead_unit_delays_its_neighbour_on_the_same_bus_by_at_most_one_timeout(
    modbus_server: ServerFactory, drivers: list[ModbusDriver]
) -> None:
    server = await modbus_server({1: UnitMap(holding={0: 7})}, dead_units={9})
    endpoint = f"tcp://127.0.0.1:{server.port}"
    signals = [{"name": "spindle_speed", "address": 0}]
    timing = {"timeout_s": 0.3, "retries": 1}
    alive = await connected(
        drivers, make_driver(make_device(signals, endpoint, unit_id=1, modbus=timing))
    )
    dead = await connected(
        drivers,
        make_driver(make_device(signals, endpoint, unit_id=9, device_id="dead", modbus=timing)),
    )
    latencies: list[float] = []
    dead_failures = 0

    dead_done = asyncio.Event()

    async def poll_alive() -> None:
        while not dead_done.is_set():  # poll all the while the dead unit fails
            started = time.monotonic()
            result = await alive.read(DEFAULT)
            latencies.append(time.monotonic() - started)
            assert values_of(result.readings) == {"spindle_speed": 7}

    dead_times: list[float] = []

    async def poll_dead() -> None:
        nonlocal dead_failures
        for attempt in range(3):
            started = time.monotonic()
            tries = "2 tries" if attempt == 0 else r"1 try \(silent since an earlier request\)"
            with pytest.raises(DeviceTimeoutError, match=rf"no reply in 0\.3 s after {tries}"):
                await dead.read(DEFAULT)
            dead_times.append(time.monotonic() - started)
            dead_failures += 1
            await dead.close()  # what the scheduler does after a DriverError
            await dead.connect()
        dead_done.set()

    await asyncio.gather(poll_alive(), poll_dead())

    assert dead_failures == 3
    assert dead_times[0] >= 0.6 and all(t < 0.3 + 0.2 for t in dead_times[1:]), dead_times
    assert len(latencies) >= 3, "the live unit kept being read while the dead one failed"
    assert max(latencies) < 0.3 + 0.25, latencies  # at most one of the dead unit's tries ahead
    assert len(server.server.active_connections) == 1, "the shared connection was never dropped"


async def test_a_dead_endpoint_does_not_slow_a_device_on_another_endpoint(
    modbus_server: ServerFactory, silent_server: int, drivers: list[ModbusDriver]
) -> None:
    server = await modbus_server({1: UnitMap(holding={0: 7})})
    signals = [{"name": "spindle_speed", "address": 0}]
    alive = await connected(
        drivers, make_driver(make_device(signals, f"tcp://127.0.0.1:{server.port}"))
    )
    dead = await connected(
        drivers,
        make_driver(
            make_device(
                signals,
                f"tcp://127.0.0.1:{silent_server}",
                device_id="dead",
                modbus={"timeout_s": 1.0, "retries": 0},
            )
        ),
    )
    dead_read = asyncio.create_task(dead.read(DEFAULT))
    latencies = []
    for _ in range(5):
        started = time.monotonic()
        await alive.read(DEFAULT)
        latencies.append(time.monotonic() - started)
    assert not dead_read.done(), "the dead device's request is still waiting"
    assert max(latencies) < 0.2, latencies
    with pytest.raises(DeviceTimeoutError):
        await dead_read


async def test_rtu_framing_over_tcp_reaches_several_units(
    modbus_server: ServerFactory, drivers: list[ModbusDriver]
) -> None:
    units = {
        5: UnitMap(holding=dict(enumerate(wire_registers(">f", 231.5, "CDAB")))),
        6: UnitMap(holding=dict(enumerate(wire_registers(">f", 229.25, "CDAB")))),
    }
    server = await modbus_server(units, framer=FramerType.RTU)
    endpoint = f"rtu+tcp://127.0.0.1:{server.port}"
    signals = [{"name": "voltage", "address": 0, "type": "float32"}]
    meters = [
        await connected(
            drivers,
            make_driver(
                make_device(signals, endpoint, unit_id=uid, device_id=f"m{uid}", word_order="CDAB")
            ),
        )
        for uid in units
    ]
    assert [values_of((await m.read(DEFAULT)).readings) for m in meters] == [
        {"voltage": 231.5},
        {"voltage": 229.25},
    ]


async def test_a_lost_connection_raises_and_reconnects_after_close_and_connect(
    drivers: list[ModbusDriver],
) -> None:
    port = free_port()

    async def serve() -> ModbusTcpServer:
        device = SimDevice(
            id=1,
            simdata=(
                [SimData(0, values=[False], datatype=SimType.BITS)],
                [SimData(0, values=[False], datatype=SimType.BITS)],
                [SimData(0, values=[42], datatype=SimType.REGISTERS)],
                [SimData(0, values=[0], datatype=SimType.REGISTERS)],
            ),
        )
        server = ModbusTcpServer([device], address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        return server

    server = await serve()
    driver = await connected(
        drivers,
        make_driver(
            make_device([{"name": "tool_number", "address": 0}], f"tcp://127.0.0.1:{port}")
        ),
    )
    assert values_of((await driver.read(DEFAULT)).readings) == {"tool_number": 42}
    await server.shutdown()

    async def read_fails() -> bool:
        try:
            await driver.read(DEFAULT)
        except (DeviceUnreachableError, DeviceTimeoutError):
            return True
        return False

    await wait_until_async(
        read_fails, timeout_s=5, what="the read to fail after the server stopped"
    )
    server = await serve()
    await driver.close()
    await driver.connect()
    assert values_of((await driver.read(DEFAULT)).readings) == {"tool_number": 42}
    assert driver.metrics.reconnects == 1
    await server.shutdown()


async def test_request_pause_spaces_the_requests_of_a_slow_device(
    modbus_server: ServerFactory, drivers: list[ModbusDriver]
) -> None:
    server = await modbus_server({1: UnitMap(holding={0: 1, 100: 2, 200: 3})})
    signals = [
        {"name": "spindle_speed", "address": 0},
        {"name": "spindle_load", "address": 100},
        {"name": "tool_number", "address": 200},
    ]
    device = make_device(
        signals, f"tcp://127.0.0.1:{server.port}", modbus={"max_gap": 0, "request_pause_ms": 100}
    )
    driver = await connected(drivers, make_driver(device))
    await driver.read(DEFAULT)  # the first request of a cycle may go at once
    started = time.monotonic()
    result = await driver.read(DEFAULT)
    assert result.requests == 3
    assert time.monotonic() - started >= 0.29


async def test_nan_from_the_device_becomes_a_bad_reading(
    modbus_server: ServerFactory, drivers: list[ModbusDriver]
) -> None:
    unit = UnitMap()
    unit.put("holding", 0, wire_registers(">f", math.nan))
    unit.put("holding", 2, wire_registers(">f", 1.5))
    server = await modbus_server({1: unit})
    signals = [
        {"name": "active_power", "address": 0, "type": "float32"},
        {"name": "frequency", "address": 2, "type": "float32"},
    ]
    driver = await connected(
        drivers, make_driver(make_device(signals, f"tcp://127.0.0.1:{server.port}"))
    )
    by_name = {r.signal: r for r in (await driver.read(DEFAULT)).readings}
    assert by_name["active_power"].quality is Quality.BAD
    assert "not a number" in (by_name["active_power"].reason or "")
    assert (by_name["frequency"].raw, by_name["frequency"].quality) == (1.5, Quality.GOOD)


async def test_a_converter_reporting_a_silent_unit_is_a_device_timeout(
    drivers: list[ModbusDriver],
) -> None:
    async def gateway_says_no_reply(*_: Any) -> ExcCodes:
        return ExcCodes.GATEWAY_NO_RESPONSE

    port = free_port()
    device = SimDevice(
        id=3,
        simdata=([SimData(0, values=[0], datatype=SimType.REGISTERS)]),
        action=gateway_says_no_reply,
    )
    server = ModbusTcpServer([device], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        driver = await connected(
            drivers,
            make_driver(
                make_device(
                    [{"name": "tool_number", "address": 0}], f"tcp://127.0.0.1:{port}", unit_id=3
                )
            ),
        )
        with pytest.raises(DeviceTimeoutError, match="Modbus exception 11: gateway target device"):
            await driver.read(DEFAULT)
    finally:
        await server.shutdown()


@pytest.fixture()
async def serial_line(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """Two pseudo-terminals wired together by socat: a serial line without hardware."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("needs socat (apt-get install socat) to make a pseudo serial line")
    device_end, gateway_end = str(tmp_path / "device"), str(tmp_path / "gateway")
    process = await asyncio.create_subprocess_exec(
        socat,
        f"pty,raw,echo=0,link={device_end}",
        f"pty,raw,echo=0,link={gateway_end}",
        stderr=asyncio.subprocess.DEVNULL,
    )

    def both_exist() -> bool:
        return Path(device_end).exists() and Path(gateway_end).exists()

    async def linked() -> bool:
        return await asyncio.to_thread(both_exist)

    await wait_until_async(linked, timeout_s=5, what="socat's pseudo-terminals")
    yield device_end, gateway_end
    process.terminate()
    await process.wait()


async def test_rtu_over_a_serial_line_reads_two_units_in_turn(
    serial_line: tuple[str, str], drivers: list[ModbusDriver]
) -> None:
    device_end, gateway_end = serial_line
    units = [
        SimDevice(
            id=uid,
            simdata=(
                [SimData(0, values=[uid == 1], datatype=SimType.BITS)],
                [SimData(0, values=[False], datatype=SimType.BITS)],
                [SimData(0, values=[uid * 10, uid * 10 + 1], datatype=SimType.REGISTERS)],
                [SimData(0, values=[0], datatype=SimType.REGISTERS)],
            ),
        )
        for uid in (1, 2)
    ]
    server = ModbusSerialServer(units, port=device_end, baudrate=19200, stopbits=2)
    await server.serve_forever(background=True)
    try:
        endpoint = f"rtu://{gateway_end}?baudrate=19200&stopbits=2"  # ptys take no parity
        signals = [
            {"name": "spindle_speed", "address": 0},
            {"name": "spindle_load", "address": 1},
            {"name": "alarm_active", "table": "coil", "address": 0, "type": "bool"},
        ]
        pair = [
            await connected(
                drivers,
                make_driver(make_device(signals, endpoint, unit_id=uid, device_id=f"s{uid}")),
            )
            for uid in (1, 2)
        ]
        assert (
            ModbusDriver.bus_key(pair[0].device)
            == pair[1].endpoint.bus_key
            == f"rtu://{gateway_end}"
        )
        results = await asyncio.gather(*(d.read(DEFAULT) for d in pair))  # serialized by the lock
        assert [values_of(r.readings) for r in results] == [
            {"spindle_speed": 10, "spindle_load": 11, "alarm_active": True},
            {"spindle_speed": 20, "spindle_load": 21, "alarm_active": False},
        ]
    finally:
        await server.shutdown()


async def test_a_missing_serial_port_is_reported_as_unreachable(
    tmp_path: Path, drivers: list[ModbusDriver]
) -> None:
    port = tmp_path / "ttyUSB9"
    device = make_device([{"name": "spindle_speed", "address": 0}], f"rtu://{port}", unit_id=2)
    driver = make_driver(device)
    drivers.append(driver)
    with pytest.raises(DeviceUnreachableError) as caught:
        await driver.connect()
    assert f"serial port {port} not found" in str(caught.value)
    assert "Check the USB/RS-485 adapter" in str(caught.value)


async def test_the_example_profile_reads_from_a_device_serving_its_map(
    modbus_server: ServerFactory, drivers: list[ModbusDriver]
) -> None:
    from gateway.drivers.modbus import __file__ as package_file
    from gateway.profiles.loader import ProfileResolver

    profile = ProfileResolver().load(str(Path(package_file).parent / "example.yaml")).profile
    unit = UnitMap(coils={0: False, 1: False, 2: False, 3: True}, discrete_inputs={0: True})
    unit.put("holding", 0, [2, 0, 0b1, 0])  # running, no alarm code, status bit 0 set
    unit.put("holding", 4, wire_registers(">f", 1480.0, "CDAB"))
    unit.put("holding", 6, [875, 0])  # 87.5 % in tenths, then an unused register
    unit.put("holding", 8, wire_registers(">f", 120.5, "ABCD"))
    unit.put("holding", 10, wire_registers(">I", 70000, "CDAB"))
    unit.put("holding", 12, [0] * 8)
    unit.put("holding", 20, [0x4F50, 0x3130, 0x3230, 0, 0, 0, 0, 0])  # "OP1020"
    unit.put("input", 0, [412, 770])
    unit.put("input", 2, [0] * 8)
    unit.put("input", 10, wire_registers(">I", 90_000, "CDAB"))
    server = await modbus_server({1: unit})
    device = make_device([], f"tcp://127.0.0.1:{server.port}").model_copy(
        update={"profile": profile}
    )
    driver = await connected(drivers, make_driver(device))

    raw: dict[str, Any] = {}
    for group in profile.groups:
        raw |= values_of((await driver.read(group)).readings)

    assert raw == {
        "machine_state": 2,
        "alarm_code": 0,
        "alarm_active": True,
        "spindle_speed": 1480.0,
        "spindle_load": 875,
        "feed_rate": 120.5,
        "part_count": 70000,
        "program_name": "OP1020",
        "spindle_temperature": 412,
        "coolant_temperature": 770,
        "run_hours": 90000,
        "alarm_active.door": False,
        "alarm_active.coolant_level": True,
        "test_result_ok": True,
    }


async def test_a_reply_one_register_short_makes_the_block_bad_not_the_device(
    drivers: list[ModbusDriver],
) -> None:
    async def one_register_too_few(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # A broken device: answers every read with one register, whatever was asked.
        while request := await reader.read(12):
            tid, unit, function = request[:2], request[6], request[7]
            writer.write(tid + b"\x00\x00\x00\x05" + bytes([unit, function, 2]) + b"\x00\x2a")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(one_register_too_few, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        signals = [{"name": "part_count", "address": 0, "type": "uint32"}]
        driver = await connected(
            drivers, make_driver(make_device(signals, f"tcp://127.0.0.1:{port}"))
        )
        [reading] = (await driver.read(DEFAULT)).readings
        # Before issue 12 this failed the whole device with a max_registers_per_request hint.
        assert (reading.quality, reading.reason) == (
            Quality.BAD,
            "short reply: 1 of 2 registers from holding 0",
        )
        assert driver._transport is not None and driver._transport.is_connected
    finally:
        server.close()


async def test_an_unanswering_converter_gets_a_hint_about_its_mode(
    silent_server: int, drivers: list[ModbusDriver]
) -> None:
    device = make_device(
        [{"name": "voltage", "address": 0}],
        f"rtu+tcp://127.0.0.1:{silent_server}",
        unit_id=7,
        modbus={"timeout_s": 0.2, "retries": 0},
    )
    driver = await connected(drivers, make_driver(device))
    with pytest.raises(DeviceTimeoutError) as caught:
        await driver.read(DEFAULT)
    assert "no reply in 0.2 s after 1 try. Check the unit id, the converter's serial" in str(
        caught.value
    )
    assert "(a Modbus TCP gateway needs tcp://)" in str(caught.value)

"""A server that answers a read with fewer registers than asked, or a garbled reply, fails only
that request's signals, with a hint that fits (issue 12).

Some third-party Modbus TCP servers answer a read that covers registers they do not serve with
whatever they have (a 2-register read answered with 1 register) instead of exception 02. Our
simulators do not misbehave so, so this module runs a small Modbus TCP server of its own that
does, on a real socket, and reads it through the real driver and ``shulian profile probe``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from modbus_live import make_device, make_driver

from gateway.drivers.modbus.driver import ModbusDriver
from gateway.profile_cli import probe
from gateway.profiles.models import GroupSpec
from wire.payloads import Quality

DEFAULT = GroupSpec(name="default")


@dataclass
class SloppyServer:
    """Modbus TCP (function 3 only): registers read ``address * 10``; a read that covers an
    address in ``short`` is answered one register short, one in ``garbled`` with a byte count
    that overruns the reply."""

    short: set[int] = field(default_factory=set)
    garbled: set[int] = field(default_factory=set)
    port: int = 0
    requests: list[tuple[int, int]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(12)
                tid, _, _, unit, function, start, count = struct.unpack(">HHHBBHH", head)
                self.requests.append((start, count))
                covered = set(range(start, start + count))
                values = [(start + i) * 10 for i in range(count)]
                if covered & self.short:
                    values = values[:-1]
                data = struct.pack(f">{len(values)}H", *values)
                byte_count = len(data) + (7 if covered & self.garbled else 0)
                pdu = bytes([function, byte_count]) + data
                writer.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionResetError):
            writer.close()


@pytest_asyncio.fixture()
async def sloppy() -> AsyncIterator[SloppyServer]:
    server = SloppyServer(short={101}, garbled={300})
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server


SIGNALS = [
    {"name": "spindle_speed", "address": 0},
    {"name": "spindle_load", "address": 1},
    {"name": "tool_number", "address": 100},
    {"name": "alarm_code", "address": 101},
    {"name": "feed_rate", "address": 300},
]


async def test_a_short_reply_fails_only_its_block_with_a_hint_that_fits(
    sloppy: SloppyServer, drivers: list[ModbusDriver], caplog: pytest.LogCaptureFixture
) -> None:
    device = make_device(SIGNALS, f"tcp://127.0.0.1:{sloppy.port}", modbus={"max_gap": 0})
    driver = make_driver(device)
    drivers.append(driver)
    await driver.connect()

    with caplog.at_level(logging.WARNING):
        result = await driver.read(DEFAULT)

    by_name = {r.signal: r for r in result.readings}
    assert (by_name["spindle_speed"].raw, by_name["spindle_load"].raw) == (0, 10)
    assert by_name["spindle_speed"].quality is Quality.GOOD
    for name in ("tool_number", "alarm_code"):
        assert by_name[name].quality is Quality.BAD
        assert by_name[name].reason == "short reply: 1 of 2 registers from holding 100"
    assert by_name["feed_rate"].quality is Quality.BAD
    assert (by_name["feed_rate"].reason or "").startswith("malformed reply to holding 300+1")
    assert result.requests == 3 and driver.metrics.errors == 2
    text = caplog.text
    assert "max_registers_per_request" not in text
    assert "check the signals' addresses and types against its register list" in text
    # The device stays connected and reads again next cycle.
    again = await driver.read(DEFAULT)
    assert {r.signal for r in again.readings if r.quality is Quality.GOOD} == {
        "spindle_speed",
        "spindle_load",
    }


async def test_a_short_reply_across_a_gap_points_at_max_gap(
    sloppy: SloppyServer, drivers: list[ModbusDriver], caplog: pytest.LogCaptureFixture
) -> None:
    signals = [{"name": "spindle_speed", "address": 99}, {"name": "spindle_load", "address": 102}]
    device = make_device(signals, f"tcp://127.0.0.1:{sloppy.port}", modbus={"max_gap": 16})
    driver = make_driver(device)
    drivers.append(driver)
    await driver.connect()

    with caplog.at_level(logging.WARNING):
        result = await driver.read(DEFAULT)

    assert sloppy.requests == [(99, 4)]  # read across the unused 100..101
    assert all(r.quality is Quality.BAD for r in result.readings)
    assert "reads through 2 unused address(es) (max_gap)" in caplog.text
    assert "set max_gap: 0" in caplog.text and "modbus.unreadable" in caplog.text


async def test_probe_of_a_server_that_answers_short_reports_rows_not_a_failed_device(
    sloppy: SloppyServer,
) -> None:
    device = make_device(SIGNALS, f"tcp://127.0.0.1:{sloppy.port}", modbus={"max_gap": 0})
    report = await probe(device)  # raised ProtocolError for the whole device before issue 12
    good = {row.signal for row in report.rows if row.quality == "good"}
    assert good == {"spindle_speed", "spindle_load"}
    assert {row.signal: row.reason for row in report.bad}["alarm_code"].startswith("short reply")

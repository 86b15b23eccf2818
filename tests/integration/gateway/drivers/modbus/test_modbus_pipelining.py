"""Requests in flight together on a Modbus TCP connection (``max_requests_in_flight``).

A queueing server written here (its own framing, not the gateway's) answers each request after a
delay and counts how many were waiting at once; the simulators' real server checks the values.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from modbus_live import connected, make_device, make_driver

from gateway.drivers.modbus.driver import ModbusDriver
from gateway.errors import DeviceTimeoutError
from gateway.profiles.loader import load_site
from gateway.profiles.models import GroupSpec
from simulators import KINDS, InstanceSpec, Scenario, ServerSpec, SimulatorHost
from wire.payloads import Quality

DEFAULT = GroupSpec(name="default")
DELAY_S = 0.1
FAR_APART = [  # three blocks: max_gap 0 never merges them
    {"name": "spindle_speed", "address": 0},
    {"name": "spindle_load", "address": 200},
    {"name": "feed_rate", "address": 400},
]


@dataclass
class QueueingServer:
    """Answers every read after ``DELAY_S`` (requests overlap); register i of unit u is u*1000+i."""

    port: int = 0
    dead_units: set[int] = field(default_factory=set)
    outstanding: int = 0
    peak_outstanding: int = 0
    requests: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        replies: set[asyncio.Task[None]] = set()
        try:
            while True:
                tid, _, _, unit, function, start, count = struct.unpack(
                    ">HHHBBHH", await reader.readexactly(12)
                )
                self.requests += 1
                if unit in self.dead_units:
                    continue
                self.outstanding += 1
                self.peak_outstanding = max(self.peak_outstanding, self.outstanding)
                task = asyncio.create_task(self._reply(writer, tid, unit, function, start, count))
                replies.add(task)
                task.add_done_callback(replies.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def _reply(
        self,
        writer: asyncio.StreamWriter,
        tid: int,
        unit: int,
        function: int,
        start: int,
        count: int,
    ) -> None:
        await asyncio.sleep(DELAY_S)
        data = struct.pack(f">{count}H", *(unit * 1000 + start + i for i in range(count)))
        writer.write(
            struct.pack(">HHHBBB", tid, 0, 3 + len(data), unit, function, len(data)) + data
        )
        self.outstanding -= 1


@pytest.fixture()
async def queueing_server() -> AsyncIterator[QueueingServer]:
    state = QueueingServer()
    server = await asyncio.start_server(state.serve, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    yield state
    server.close()


def far_apart_device(port: int, unit_id: int, in_flight: int) -> ModbusDriver:
    return make_driver(
        make_device(
            FAR_APART,
            f"tcp://127.0.0.1:{port}",
            unit_id=unit_id,
            device_id=f"m{unit_id}",
            modbus={"max_gap": 0, "timeout_s": 1.0, "max_requests_in_flight": in_flight},
        )
    )


async def test_a_groups_requests_go_out_together_when_the_device_queues_them(
    queueing_server: QueueingServer, drivers: list[ModbusDriver]
) -> None:
    driver = await connected(drivers, far_apart_device(queueing_server.port, 3, in_flight=4))
    started = time.monotonic()

    result = await driver.read(DEFAULT)

    elapsed = time.monotonic() - started
    assert {r.signal: r.raw for r in result.readings} == {
        "spindle_speed": 3000,
        "spindle_load": 3200,
        "feed_rate": 3400,
    }
    assert result.requests == 3
    assert queueing_server.peak_outstanding == 3
    assert elapsed < 2 * DELAY_S, elapsed  # one delay for all three, not three in turn


async def test_by_default_one_request_at_a_time(
    queueing_server: QueueingServer, drivers: list[ModbusDriver]
) -> None:
    driver = await connected(drivers, far_apart_device(queueing_server.port, 3, in_flight=1))
    started = time.monotonic()

    result = await driver.read(DEFAULT)

    assert len(result.readings) == 3
    assert queueing_server.peak_outstanding == 1
    assert time.monotonic() - started >= 3 * DELAY_S


async def test_units_sharing_a_connection_share_its_window(
    queueing_server: QueueingServer, drivers: list[ModbusDriver]
) -> None:
    group = [
        await connected(drivers, far_apart_device(queueing_server.port, unit, in_flight=4))
        for unit in (1, 2, 3)
    ]

    results = await asyncio.gather(*(d.read(DEFAULT) for d in group))

    assert [sorted(int(r.raw or 0) for r in result.readings) for result in results] == [
        [unit * 1000, unit * 1000 + 200, unit * 1000 + 400] for unit in (1, 2, 3)
    ]
    assert queueing_server.peak_outstanding == 4  # nine requests, never more than the window
    assert group[0]._transport is not None and group[0]._transport.peak_in_flight == 4


async def test_a_dead_unit_holds_one_slot_and_its_neighbours_keep_their_pace(
    queueing_server: QueueingServer, drivers: list[ModbusDriver]
) -> None:
    queueing_server.dead_units.add(9)
    alive = await connected(drivers, far_apart_device(queueing_server.port, 1, in_flight=4))
    dead = make_driver(
        make_device(
            [{"name": "spindle_speed", "address": 0}],
            f"tcp://127.0.0.1:{queueing_server.port}",
            unit_id=9,
            device_id="dead",
            modbus={"timeout_s": 0.5, "retries": 1, "max_requests_in_flight": 4},
        )
    )
    await connected(drivers, dead)
    latencies: list[float] = []

    async def poll_alive() -> None:
        for _ in range(6):
            started = time.monotonic()
            result = await alive.read(DEFAULT)
            latencies.append(time.monotonic() - started)
            assert all(r.quality is Quality.GOOD for r in result.readings)

    async def poll_dead() -> None:
        with pytest.raises(DeviceTimeoutError, match=r"after 2 tries"):
            await dead.read(DEFAULT)

    await asyncio.gather(poll_alive(), poll_dead())

    assert max(latencies) < 2 * DELAY_S, latencies


def test_a_serial_line_refuses_more_than_one_request_in_flight() -> None:
    from gateway.drivers.modbus.driver import check_device

    device = make_device(
        FAR_APART,
        "rtu+tcp://10.0.0.5:4001",
        unit_id=2,
        settings={"max_requests_in_flight": 8},
    )

    problems = [p for p in check_device(device) if p.severity == "error"]

    assert [(p.where, p.message) for p in problems] == [
        (
            "device.settings.max_requests_in_flight",
            "a serial line (rtu+tcp://) carries one request at a time; "
            "max_requests_in_flight must be 1",
        )
    ]


def test_a_pause_between_requests_makes_the_window_moot_and_says_so() -> None:
    from gateway.drivers.modbus.driver import check_device

    device = make_device(
        FAR_APART,
        "tcp://10.0.0.5:502",
        modbus={"request_pause_ms": 20, "max_requests_in_flight": 4},
    )

    warnings = [p for p in check_device(device) if p.where == "modbus.max_requests_in_flight"]

    assert [p.severity for p in warnings] == ["warning"]
    assert "request_pause_ms 20 spaces requests one at a time" in warnings[0].message


MODBUS_KINDS = sorted(k for k, kind in KINDS.items() if kind.protocol == "modbus")


@pytest.mark.timeout(60)
async def test_every_shipped_modbus_profile_reads_good_values_pipelined_from_the_simulators(
    tmp_path: Path, drivers: list[ModbusDriver]
) -> None:
    scenario = Scenario(
        seed=3,
        servers=[ServerSpec(name="line", protocol="modbus", port=0)],
        instances=[
            InstanceSpec(id=kind.replace("_", "-"), kind=kind, server="line", unit_id=index + 1)
            for index, kind in enumerate(MODBUS_KINDS)
        ],
    )
    async with SimulatorHost(scenario) as host:
        lines = ["gateway: {id: gw-1, enterprise: ent-a}", "devices:"]
        for instance in scenario.instances:
            ep = host.endpoint(instance.id)
            lines.append(
                f"  - {{id: {instance.id}, profile: {instance.kind}, "
                f"endpoint: 'tcp://{ep.host}:{ep.port}', unit_id: {ep.unit_id}, "
                "settings: {max_requests_in_flight: 16}}"
            )
        site_file = tmp_path / "gateway.yaml"
        site_file.write_text("\n".join(lines) + "\n")
        site = load_site(site_file)
        group = [await connected(drivers, make_driver(device)) for device in site.devices]

        reads = [(driver, spec) for driver in group for spec in driver.profile.groups]
        results = await asyncio.gather(*(driver.read(spec) for driver, spec in reads))

    bad = [
        (driver.device.id, r.signal, r.reason)
        for (driver, _), result in zip(reads, results, strict=True)
        for r in result.readings
        if r.quality is not Quality.GOOD
    ]
    assert bad == []
    signals = sum(len(driver.profile.signals) for driver in group)
    assert sum(len(result.readings) for result in results) == signals
    transport = group[0]._transport
    assert transport is not None and transport.window == 16
    assert transport.peak_in_flight > 1


def test_units_of_a_pipelined_connection_share_a_poll_phase_key() -> None:
    def key(endpoint: str, in_flight: int) -> str | None:
        device = make_device(
            FAR_APART, endpoint, unit_id=2, modbus={"max_requests_in_flight": in_flight}
        )
        return ModbusDriver.poll_phase_key(device)

    assert key("tcp://10.0.0.5:502", 8) == "tcp://10.0.0.5:502"
    assert key("tcp://10.0.0.5:502", 1) is None
    assert key("rtu+tcp://10.0.0.5:4001", 8) is None  # refused by check(); never bursts


async def test_a_modbus_exception_in_a_pipelined_group_fails_only_its_block(
    drivers: list[ModbusDriver],
) -> None:
    async def refuse_address_200(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                tid, _, _, unit, function, start, count = struct.unpack(
                    ">HHHBBHH", await reader.readexactly(12)
                )
                if start == 200:
                    writer.write(struct.pack(">HHHBBB", tid, 0, 3, unit, function | 0x80, 2))
                    continue
                data = struct.pack(f">{count}H", *range(start, start + count))
                writer.write(
                    struct.pack(">HHHBBB", tid, 0, 3 + len(data), unit, function, len(data)) + data
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(refuse_address_200, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        driver = await connected(drivers, far_apart_device(port, 1, in_flight=4))

        result = await driver.read(DEFAULT)
    finally:
        server.close()

    by_signal = {r.signal: r for r in result.readings}
    assert by_signal["spindle_speed"].raw == 0 and by_signal["feed_rate"].raw == 400
    assert by_signal["spindle_load"].quality is Quality.BAD
    assert by_signal["spindle_load"].reason == "Modbus exception 2: illegal data address"
    assert driver.metrics.requests == 3 and driver.metrics.errors == 1


async def test_a_silent_unit_is_tried_once_until_it_answers_again(
    queueing_server: QueueingServer, drivers: list[ModbusDriver]
) -> None:
    neighbour = await connected(drivers, far_apart_device(queueing_server.port, 1, in_flight=1))
    unit = make_driver(
        make_device(
            [{"name": "spindle_speed", "address": 0}],
            f"tcp://127.0.0.1:{queueing_server.port}",
            unit_id=9,
            device_id="flaky",
            modbus={"timeout_s": 0.25, "retries": 2},
        )
    )
    await connected(drivers, unit)

    async def fails(match: str) -> float:
        started = time.monotonic()
        with pytest.raises(DeviceTimeoutError, match=match):
            await unit.read(DEFAULT)
        return time.monotonic() - started

    queueing_server.dead_units.add(9)
    assert await fails(r"after 3 tries\. ") >= 0.75
    assert await fails(r"after 1 try \(silent since an earlier request\)\. ") < 0.25 + 0.15
    queueing_server.dead_units.clear()
    assert [r.raw for r in (await unit.read(DEFAULT)).readings] == [9000]
    queueing_server.dead_units.add(9)
    assert await fails(r"after 3 tries\. ") >= 0.75  # answering again restored every retry
    assert len((await neighbour.read(DEFAULT)).readings) == 3

"""The real Modbus TCP server: every kind on one port, values equal the truth, faults on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from sim_client_decoding import (
    matches_truth,
    now_ms,
    read_register_field,
    to_canonical,
    wait_until_async,
)

from simulators import KINDS, InstanceSpec, Scenario, ServeError, ServerSpec, SimulatorHost
from simulators.addressmap import Register
from wire import MachineState

MODBUS_KINDS = sorted(k for k, kind in KINDS.items() if kind.protocol == "modbus")


def _scenario(**overrides: object) -> Scenario:
    instances = [
        InstanceSpec(id=f"{kind.replace('_', '-')}-01", kind=kind, server="line", unit_id=index + 1)
        for index, kind in enumerate(MODBUS_KINDS)
    ]
    settings: dict[str, object] = {
        "seed": 5,
        "servers": [ServerSpec(name="line", protocol="modbus", port=0)],
        "instances": instances,
    }
    settings.update(overrides)
    return Scenario(**settings)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def host() -> AsyncIterator[SimulatorHost]:
    async with SimulatorHost(_scenario()) as running:
        yield running


@pytest_asyncio.fixture
async def client(host: SimulatorHost) -> AsyncIterator[AsyncModbusTcpClient]:
    endpoint = host.endpoints()[0]
    modbus = AsyncModbusTcpClient(endpoint.host, port=endpoint.port, timeout=0.5, retries=0)
    assert await modbus.connect()
    yield modbus
    modbus.close()


async def test_every_kind_serves_its_manual_on_one_port(
    host: SimulatorHost, client: AsyncModbusTcpClient
) -> None:
    ports = {e.port for e in host.endpoints()}
    assert len(ports) == 1 and len(host.endpoints()) == len(MODBUS_KINDS)
    checked = 0
    for device_id, device in host.devices.items():
        unit = host.endpoint(device_id).unit_id
        assert unit is not None
        for field in device.kind.address_map.fields():
            assert isinstance(field, Register)
            if field.constant is not None:
                assert await read_register_field(client, unit, field) == field.constant
            if field.signal is None:
                continue
            start = now_ms()
            read = to_canonical(field, await read_register_field(client, unit, field))
            end = now_ms()
            assert matches_truth(host.truth, device_id, field, read, start, end), (
                f"{device_id} {field.label} {field.signal}: read {read!r}, truth "
                f"{host.truth.values_between(device_id, field.signal, start - 1, end + 1)}"
            )
            checked += 1
    assert checked > 150


async def test_reads_follow_the_changing_values(
    host: SimulatorHost, client: AsyncModbusTcpClient
) -> None:
    device_id = "gear-grinder-01"
    host.force_state(device_id, MachineState.RUNNING)
    field = next(
        f for f in host.devices[device_id].kind.address_map.fields() if f.signal == "active_power"
    )
    assert isinstance(field, Register)
    first = host.truth.latest(device_id, "active_power")
    await wait_until_async(
        lambda: host.truth.latest(device_id, "active_power") != first,
        timeout_s=5,
        what="a new power value",
    )
    start = now_ms()
    unit = host.endpoint(device_id).unit_id or 1
    read = to_canonical(field, await read_register_field(client, unit, field))
    assert matches_truth(host.truth, device_id, field, read, start, now_ms())
    assert len(host.truth.series(device_id, "active_power")) >= 2


async def test_whole_grinder_block_reads_in_one_request(client: AsyncModbusTcpClient) -> None:
    unit = MODBUS_KINDS.index("gear_grinder") + 1
    reply = await client.read_holding_registers(100, count=44, device_id=unit)
    assert not reply.isError()
    assert len(reply.registers) == 44


async def test_addresses_outside_the_map_answer_illegal_data_address(
    client: AsyncModbusTcpClient,
) -> None:
    hobber = MODBUS_KINDS.index("gear_hobber") + 1
    for address, count in ((46, 2), (40, 10), (9000, 1)):
        reply = await client.read_holding_registers(address, count=count, device_id=hobber)
        assert reply.isError() and reply.exception_code == 2, (address, count, reply)
    press = MODBUS_KINDS.index("servo_press") + 1
    reply = await client.read_input_registers(0, count=1, device_id=press)  # the press has no IRs
    assert reply.isError() and reply.exception_code == 2


async def test_reads_across_gaps_in_a_map_answer_zeros(client: AsyncModbusTcpClient) -> None:
    """Issue 12: the gateway reads across small gaps, so the simulated PLCs must answer them."""
    hobber = MODBUS_KINDS.index("gear_hobber") + 1
    reply = await client.read_holding_registers(0, count=46, device_id=hobber)  # the whole map
    assert not reply.isError(), reply
    assert [reply.registers[a] for a in (6, 7, 8, 9, 18, 19, 26, 27, 28, 29, 38, 39)] == [0] * 12
    for kind in MODBUS_KINDS:  # every kind: each table from its first to its last address
        if kind == "energy_meter":
            continue
        address_map = KINDS[kind].address_map
        unit = MODBUS_KINDS.index(kind) + 1
        for table in ("holding", "input"):
            fields = [f for f in address_map.fields() if f.table == table]
            if not fields:
                continue
            first = min(f.address for f in fields)
            count = max(f.address + f.size for f in fields) - first
            read = getattr(client, f"read_{table}_registers")
            for start in range(first, first + count, 125):
                size = min(125, first + count - start)
                reply = await read(start, count=size, device_id=unit)
                assert not reply.isError(), (kind, table, start, size, reply)


async def test_the_meter_refuses_reads_across_its_holes(client: AsyncModbusTcpClient) -> None:
    """The DTSU666 map serves only its documented blocks, as some meters do."""
    meter = MODBUS_KINDS.index("energy_meter") + 1
    reply = await client.read_holding_registers(0x2020, count=4, device_id=meter)
    assert reply.isError() and reply.exception_code == 2
    reply = await client.read_holding_registers(0x2000, count=0x22, device_id=meter)
    assert not reply.isError()


async def test_the_map_is_read_only(client: AsyncModbusTcpClient) -> None:
    reply = await client.write_register(12, 999, device_id=MODBUS_KINDS.index("gear_hobber") + 1)
    assert reply.isError() and reply.exception_code == 2


async def test_unknown_unit_never_answers(client: AsyncModbusTcpClient) -> None:
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(0, count=1, device_id=99)


async def test_unreachable_unit_times_out_or_reports_a_gateway_error(
    host: SimulatorHost, client: AsyncModbusTcpClient
) -> None:
    device_id = "servo-press-01"
    unit = host.endpoint(device_id).unit_id
    host.set_unreachable(device_id, mode="timeout")
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(0, count=2, device_id=unit)
    other = await client.read_holding_registers(
        100, count=2, device_id=MODBUS_KINDS.index("gear_grinder") + 1
    )
    assert not other.isError(), "other units on the port keep answering"
    host.set_unreachable(device_id, mode="gateway_exception")
    assert (await client.read_holding_registers(0, count=2, device_id=unit)).exception_code == 0x0B
    host.set_unreachable(device_id, False)
    assert not (await client.read_holding_registers(0, count=2, device_id=unit)).isError()
    outages = host.truth.outages(device_id)
    assert len(outages) == 1 and outages[0].end_ms is not None


async def test_stopped_server_refuses_connections_and_restarts_on_its_port(
    host: SimulatorHost,
) -> None:
    endpoint = host.endpoints()[0]
    await host.stop_server(endpoint.device_id)
    refused = AsyncModbusTcpClient(endpoint.host, port=endpoint.port, timeout=0.5, retries=0)
    assert not await refused.connect()
    refused.close()
    await host.start_server(endpoint.device_id)
    assert host.endpoint(endpoint.device_id).port == endpoint.port
    again = AsyncModbusTcpClient(endpoint.host, port=endpoint.port, timeout=0.5, retries=0)
    assert await again.connect()
    state = next(
        f
        for f in host.devices[endpoint.device_id].kind.address_map.fields()
        if f.signal == "machine_state"
    )
    assert isinstance(state, Register)
    read = await read_register_field(again, endpoint.unit_id or 1, state)
    assert to_canonical(state, read) == host.truth.latest(endpoint.device_id, "machine_state").value
    again.close()
    assert all(o.end_ms is not None for d in host.devices for o in host.truth.outages(d))
    assert len(host.truth.outages(endpoint.device_id)) == 1


async def test_wrapping_stroke_counter_serves_the_register_and_keeps_the_true_count() -> None:
    scenario = Scenario(
        time_scale=20.0,
        instances=[
            InstanceSpec(
                id="press",
                kind="servo_press",
                start_state=MachineState.RUNNING,
                counters={"stroke_count": 65_533},
                dwell_scale=1000.0,
            )
        ],
    )
    async with SimulatorHost(scenario) as host:
        host.force_state("press", MachineState.RUNNING)
        await wait_until_async(
            lambda: host.truth.latest("press", "stroke_count").unwrapped > 65_536,  # type: ignore[operator]
            timeout_s=10,
            what="the stroke counter to wrap",
        )
        endpoint = host.endpoint("press")
        client = AsyncModbusTcpClient(endpoint.host, port=endpoint.port, timeout=0.5, retries=0)
        assert await client.connect()
        host.force_state("press", MachineState.IDLE)  # stop counting, so the read is stable
        await host.wait_ticks(2)
        reply = await client.read_holding_registers(3, count=1, device_id=1)
        client.close()
    latest = host.truth.latest("press", "stroke_count")
    assert reply.registers[0] == latest.value
    assert latest.unwrapped == 65_536 + reply.registers[0]
    values = [p.value for p in host.truth.series("press", "stroke_count")]
    assert 65_535 in values and values[-1] < 100


async def test_a_taken_port_is_reported_with_the_server_and_port(host: SimulatorHost) -> None:
    taken = host.endpoints()[0].port
    scenario = Scenario(instances=[InstanceSpec(id="late", kind="gear_hobber", port=taken)])
    with pytest.raises(
        ServeError, match=rf"\(serving late\): cannot listen on 127\.0\.0\.1:{taken} .*--free-ports"
    ):
        async with SimulatorHost(scenario):
            pass


async def test_pipelined_requests_in_one_segment_are_all_answered_in_order(
    host: SimulatorHost,
) -> None:
    """Several requests in one TCP write (the Modbus TCP spec allows it): one reply each, by id."""
    import asyncio
    import struct

    endpoint = host.endpoints()[0]
    units = [e.unit_id for e in host.endpoints()]
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        burst = b"".join(
            struct.pack(">HHHBBHH", 100 + index, 0, 6, unit, 3, 0, 1)
            for index, unit in enumerate(units)
        )
        writer.write(burst)
        await writer.drain()
        replies: list[tuple[int, int, int]] = []
        async with asyncio.timeout(5):
            for _ in units:
                tid, protocol, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                assert protocol == 0
                replies.append((tid, unit, pdu[0] & 0x7F))
    finally:
        writer.close()
    assert [(tid, unit) for tid, unit, _ in replies] == [
        (100 + index, unit) for index, unit in enumerate(units)
    ]
    assert {function for _, _, function in replies} == {3}

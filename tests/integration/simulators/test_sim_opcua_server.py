"""The real OPC UA server: every OPC UA kind on one server, values and types per the manual."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua
from sim_client_decoding import matches_truth, now_ms, to_canonical, wait_until_async

from simulators import KINDS, NAMESPACE_URI, InstanceSpec, Scenario, ServerSpec, SimulatorHost
from simulators.addressmap import Variable
from wire import MachineState

OPCUA_KINDS = sorted(k for k, kind in KINDS.items() if kind.protocol == "opcua")

# One server for the module: building an asyncua address space costs 1-2 s of CPU. Tests that
# force states or restart the server touch one machine each and leave the server running.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def host() -> AsyncIterator[SimulatorHost]:
    scenario = Scenario(
        seed=8,
        servers=[ServerSpec(name="cell", protocol="opcua", port=0)],
        instances=[
            InstanceSpec(id=f"{kind.replace('_', '-')}-01", kind=kind, server="cell")
            for kind in OPCUA_KINDS
        ],
    )
    async with SimulatorHost(scenario) as running:
        yield running


async def test_every_variable_reads_the_truth_with_the_manuals_type(host: SimulatorHost) -> None:
    url = host.endpoints()[0].url
    assert {e.url for e in host.endpoints()} == {url}
    checked = 0
    async with Client(url, timeout=5) as client:
        index = await client.get_namespace_index(NAMESPACE_URI)
        assert index == host.endpoints()[0].namespace_index
        for device_id, device in host.devices.items():
            for variable in device.kind.address_map.fields():
                assert isinstance(variable, Variable)
                node = client.get_node(ua.NodeId(variable.node_id(device_id), index))
                start = now_ms()
                data = await node.read_data_value()
                end = now_ms()
                assert data.Value is not None
                assert data.Value.VariantType.name == variable.type.value, variable.path
                if variable.constant is not None:
                    assert data.Value.Value == variable.constant, variable.path
                if variable.signal is None:
                    continue
                read = to_canonical(variable, data.Value.Value)
                assert matches_truth(host.truth, device_id, variable, read, start, end), (
                    f"{device_id} {variable.path}: read {read!r}, truth "
                    f"{host.truth.values_between(device_id, variable.signal, start - 1, end + 1)}"
                )
                point = host.truth.point_at(device_id, variable.signal, end)
                if point.value == host.truth.value_at(device_id, variable.signal, start):
                    assert data.SourceTimestamp is not None
                    stamp_ms = round(data.SourceTimestamp.timestamp() * 1000)
                    assert stamp_ms >= point.ts_ms, "the source timestamp is the refresh time"
                checked += 1
    assert checked > 100


async def test_browse_paths_follow_the_manual(host: SimulatorHost) -> None:
    async with Client(host.endpoints()[0].url, timeout=5) as client:
        index = await client.get_namespace_index(NAMESPACE_URI)
        node = await client.nodes.objects.get_child(
            [
                f"{index}:bearing-lathe-01",
                f"{index}:Monitoring",
                f"{index}:Spindle",
                f"{index}:ActualSpeed",
            ]
        )
        assert node.nodeid == ua.NodeId("bearing-lathe-01.Monitoring.Spindle.ActualSpeed", index)
        children = {
            (await c.read_browse_name()).Name for c in await client.nodes.objects.get_children()
        }
        assert {f"{k.replace('_', '-')}-01" for k in OPCUA_KINDS} <= children


class _Changes:
    def __init__(self) -> None:
        self.values: list[tuple[Any, Any]] = []

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        self.values.append((value, data.monitored_item.Value.SourceTimestamp))


async def test_subscription_reports_a_forced_fault_with_its_alarm(host: SimulatorHost) -> None:
    device_id = "machining-centre-01"
    endpoint = host.endpoint(device_id)
    host.force_state(device_id, MachineState.RUNNING)
    await host.wait_ticks(1)
    async with Client(endpoint.url, timeout=5) as client:
        changes = _Changes()
        subscription = await client.create_subscription(50, changes)
        await subscription.subscribe_data_change(
            [
                client.get_node(endpoint.node_id("Status/ControllerMode")),
                client.get_node(endpoint.node_id("Alarm/Number")),
            ]
        )
        host.force_state(device_id, MachineState.FAULT, alarm_code=1120)
        await wait_until_async(
            lambda: (
                ("ALARM" in [v for v, _ in changes.values])
                and 1120 in [v for v, _ in changes.values]
            ),
            timeout_s=5,
            what="the fault and its alarm number",
        )
    fault = host.truth.latest(device_id, "machine_state")
    assert fault.value == "fault"
    stamp = next(ts for v, ts in changes.values if v == "ALARM")
    assert round(stamp.timestamp() * 1000) == fault.ts_ms
    assert host.truth.latest(device_id, "alarm_text").value.endswith("Tool magazine fault")


async def test_restart_closes_sessions_and_serves_again_on_the_same_port(
    host: SimulatorHost,
) -> None:
    device_id = "bearing-lathe-01"
    endpoint = host.endpoint(device_id)
    await host.stop_server(device_id)
    with pytest.raises((OSError, asyncio.TimeoutError)):
        async with Client(endpoint.url, timeout=1):
            pass
    await host.start_server(device_id)
    assert host.endpoint(device_id).port == endpoint.port
    async with Client(endpoint.url, timeout=5) as client:
        value = await client.get_node(endpoint.node_id("Production/PartCounter")).read_value()
    assert value == host.truth.latest(device_id, "part_count").value
    outage = host.truth.outages(device_id)
    assert (
        len(outage) == 1 and outage[0].end_ms is not None and outage[0].end_ms >= outage[0].start_ms
    )

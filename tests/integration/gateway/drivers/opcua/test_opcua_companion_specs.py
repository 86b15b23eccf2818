"""Shipped companion-spec profiles against simulators serving the specs' NodeSets.

One test per specification (OPC 40501-1 umati: the machining centre and the lathe; OPC 40077
EUROMAP 77: the moulding machine). Each loads the shipped profile through a site file, as a
provider would, lets the driver find the machine by browsing and reads every signal; every value
equals the simulator's ground truth at the value's source timestamp. The same profile then runs
unchanged against a second server whose namespace indexes and numeric node ids differ (it loads
the NodeSets in another order and hosts other machines first).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client
from support import run_shulian, wait_until_async

from gateway.drivers.base import DriverMetrics, RawReading
from gateway.drivers.opcua.driver import OpcUaDriver
from gateway.normalize import compile_signal
from gateway.profiles.loader import load_site
from gateway.profiles.models import DeviceConfig
from shulian.devservices import free_port
from simulators.companion import MACHINE_TOOL, MACHINERY
from simulators.host import SimulatorHost
from simulators.opcua_server import NAMESPACE_URI
from simulators.scenario import InstanceSpec, Scenario, ServerSpec
from wire.payloads import MachineState, Quality

pytestmark = pytest.mark.asyncio(loop_scope="module")

RUNNING = MachineState.RUNNING


def _machine(device_id: str, kind: str, server: str, **extra: Any) -> InstanceSpec:
    return InstanceSpec(
        id=device_id, kind=kind, server=server, companion_spec=True, start_state=RUNNING, **extra
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def host() -> AsyncIterator[SimulatorHost]:
    """Server "first" loads the machine-tool NodeSets first; server "second" serves a moulding
    machine, a decoy machining centre and a native-layout machine before the machines under
    test, so its namespace indexes and numeric node ids differ."""
    scenario = Scenario(
        name="companion-specs",
        seed=12,
        servers=[
            ServerSpec(name="first", protocol="opcua"),
            ServerSpec(name="second", protocol="opcua"),
        ],
        instances=[
            _machine("vmc-a", "machining_centre", "first"),
            _machine("lathe-a", "bearing_lathe", "first"),
            _machine("imm-a", "injection_moulding", "first"),
            _machine("imm-b", "injection_moulding", "second", serial_number="E77-0002"),
            _machine("vmc-decoy", "machining_centre", "second"),
            InstanceSpec(id="vmc-native", kind="machining_centre", server="second"),
            _machine("lathe-b", "bearing_lathe", "second"),
            _machine("vmc-b", "machining_centre", "second", serial_number="VMC-0042"),
        ],
    )
    async with SimulatorHost(scenario.with_free_ports(), tick_ms=100) as running:
        await running.wait_ticks(2)
        yield running


def _device(
    host: SimulatorHost, tmp_path: Path, device_id: str, profile: str, **settings: Any
) -> DeviceConfig:
    """The device as a site file names it: a shipped profile by id, the simulator's endpoint."""
    lines = [
        "gateway: {id: gw-test, enterprise: acme}",
        "devices:",
        f"  - id: {device_id}",
        f"    profile: {profile}",
        f"    endpoint: {host.endpoint(device_id).url}",
    ]
    if settings:
        lines.append(f"    settings: {settings!r}".replace("'", '"'))
    site = tmp_path / f"site-{device_id}.yaml"
    site.write_text("\n".join(lines) + "\n", encoding="utf-8")
    [device] = load_site(site, [tmp_path]).devices
    return device


def _driver(device: DeviceConfig) -> OpcUaDriver:
    problems = [p for p in OpcUaDriver.check(device) if p.severity == "error"]
    assert not problems, problems
    logger = logging.LoggerAdapter(logging.getLogger("test.companion"), {"device": device.id})
    return OpcUaDriver(device, logger, DriverMetrics())


async def _read_all(device: DeviceConfig) -> list[RawReading]:
    driver = _driver(device)
    try:
        await driver.connect()
        readings: list[RawReading] = []
        for group in device.profile.groups:
            readings += (await driver.read(group)).readings
        return readings
    finally:
        await driver.close()


async def _assert_matches_truth(
    host: SimulatorHost, device: DeviceConfig, truth_device: str
) -> dict[str, object]:
    """Every signal of the profile reads good and equals the truth at its source timestamp."""
    readings = await _read_all(device)
    await host.wait_ticks(1)  # the truth is recorded right after the server's write
    assert sorted(r.signal for r in readings) == sorted(s.name for s in device.profile.signals)
    values: dict[str, object] = {}
    for reading in readings:
        assert reading.quality is Quality.GOOD, (reading.signal, reading.reason)
        signal = next(s for s in device.profile.signals if s.name == reading.signal)
        value, problem = compile_signal(signal)(reading.raw)
        assert problem is None, (reading.signal, problem)
        expected = host.truth.value_at(truth_device, reading.signal, reading.ts_ms)
        if isinstance(expected, float) and not isinstance(value, bool):
            assert value == pytest.approx(expected, rel=1e-6, abs=1e-9), reading.signal
        else:
            assert value == expected, reading.signal
        values[reading.signal] = value
    return values


async def _node_of(url: str, path: list[tuple[str, str]]) -> tuple[list[str], str]:
    """An independent client's view: the namespace array and the node id at ``path`` from Root."""
    async with Client(url) as client:
        namespaces = await client.get_namespace_array()
        names = [f"{namespaces.index(uri)}:{name}" for uri, name in path]
        node = await client.nodes.root.get_child(names)
        return namespaces, node.nodeid.to_string()


@pytest.mark.parametrize(
    ("profile", "first", "second"),
    [
        ("machining_centre_umati", "vmc-a", "vmc-b"),
        ("bearing_lathe_umati", "lathe-a", "lathe-b"),
    ],
)
async def test_umati_profile_reads_every_signal_on_two_differently_numbered_servers(
    host: SimulatorHost, tmp_path: Path, profile: str, first: str, second: str
) -> None:
    for device_id in (first, second):
        serial = host.endpoint(device_id).serial_number
        device = _device(
            host, tmp_path, device_id, profile, select_machine={"serial_number": serial}
        )
        values = await _assert_matches_truth(host, device, device_id)
        assert values["machine_state"] == "running"
        assert values["operation_mode"] == "Processing"
        assert str(values["job_id"]).startswith(f"{device_id}-J")

    path = [
        ("http://opcfoundation.org/UA/", "Objects"),
        (MACHINERY, "Machines"),
        (NAMESPACE_URI, "{device}"),
        (MACHINE_TOOL, "Monitoring"),
    ]
    spaces_a, node_a = await _node_of(
        host.endpoint(first).url, [(u, n.format(device=first)) for u, n in path]
    )
    spaces_b, node_b = await _node_of(
        host.endpoint(second).url, [(u, n.format(device=second)) for u, n in path]
    )
    assert spaces_a.index(MACHINE_TOOL) != spaces_b.index(MACHINE_TOOL)
    assert node_a != node_b


async def test_umati_profile_follows_a_fault_into_state_and_alert(
    host: SimulatorHost, tmp_path: Path
) -> None:
    serial = host.endpoint("vmc-a").serial_number
    device = _device(
        host, tmp_path, "vmc-a", "machining_centre_umati", select_machine={"serial_number": serial}
    )
    host.force_state("vmc-a", MachineState.FAULT)
    try:
        await host.wait_ticks(2)
        values = await _assert_matches_truth(host, device, "vmc-a")
        assert values["machine_state"] == "fault"
        assert values["alarm_active"] is True
        assert values["alarm_text"] == host.machine("vmc-a").values["alarm_text"] != ""
    finally:
        host.release_state("vmc-a")


async def test_euromap77_profile_reads_every_signal_on_two_differently_numbered_servers(
    host: SimulatorHost, tmp_path: Path
) -> None:
    # The only moulding machine on "first": no selection needed.
    values = await _assert_matches_truth(
        host, _device(host, tmp_path, "imm-a", "injection_moulding_euromap77"), "imm-a"
    )
    assert values["machine_state"] == "running"
    assert values["operation_mode"] == "AUTOMATIC"
    second = _device(
        host,
        tmp_path,
        "imm-b",
        "injection_moulding_euromap77",
        select_machine={"serial_number": "E77-0002"},
    )
    await _assert_matches_truth(host, second, "imm-b")
    path = [
        ("http://opcfoundation.org/UA/", "Objects"),
        ("http://opcfoundation.org/UA/DI/", "DeviceSet"),
        (NAMESPACE_URI, "{device}"),
    ]
    spaces_a, node_a = await _node_of(
        host.endpoint("imm-a").url, [(u, n.format(device="imm-a")) for u, n in path]
    )
    spaces_b, node_b = await _node_of(
        host.endpoint("imm-b").url, [(u, n.format(device="imm-b")) for u, n in path]
    )
    imm2mes = "http://opcfoundation.org/UA/PlasticsRubber/IMM2MES/"
    assert spaces_a.index(imm2mes) != spaces_b.index(imm2mes)
    assert node_a != node_b


async def test_a_path_that_does_not_resolve_names_device_signal_and_step(
    host: SimulatorHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "typo.yaml").write_text(
        "id: vmc_typo\n"
        "extends: machining_centre_umati\n"
        "signals:\n"
        "  - name: spindle_override\n"
        "    browse_path: mt:Monitoring/machine:Spindel/mt:Override\n",
        encoding="utf-8",
    )
    serial = host.endpoint("vmc-b").serial_number
    device = _device(host, tmp_path, "vmc-b", "vmc_typo", select_machine={"serial_number": serial})
    with caplog.at_level(logging.WARNING, logger="test.companion"):
        readings = {r.signal: r for r in await _read_all(device)}
    bad = readings.pop("spindle_override")
    assert bad.quality is Quality.BAD
    assert bad.reason is not None
    assert "step 2 'machine:Spindel' not found below mt:Monitoring" in bad.reason
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "vmc-b" in logged and "spindle_override" in logged and "machine:Spindel" in logged
    assert readings and all(r.quality is Quality.GOOD for r in readings.values())


async def test_machine_selection_errors_say_what_the_server_has(
    host: SimulatorHost, tmp_path: Path
) -> None:
    several = _device(host, tmp_path, "vmc-b", "machining_centre_umati")
    readings = await _read_all(several)
    reasons = {r.reason for r in readings}
    assert all(r.quality is Quality.BAD for r in readings)
    [reason] = reasons
    assert reason is not None
    assert "3 machines of type mt:MachineToolType" in reason
    assert "lathe-b, vmc-b, vmc-decoy" in reason and "select_machine" in reason

    wrong = _device(
        host, tmp_path, "vmc-b", "machining_centre_umati", select_machine={"serial_number": "nope"}
    )
    [reason] = {r.reason for r in await _read_all(wrong)}
    assert reason is not None and "has serial_number=nope" in reason


async def _probe_cli(*args: str) -> tuple[int, str, str]:
    return await run_shulian("profile", "probe", *args)


async def test_probe_cli_selects_a_machine_or_says_which_ones_there_are(
    host: SimulatorHost,
) -> None:
    url = host.endpoint("vmc-b").url
    status, out, _ = await _probe_cli(
        "-p", "machining_centre_umati", "-e", url, "--select-machine", "serial_number=VMC-0042"
    )
    assert status == 0, out
    assert "11/11 signals good" in out
    status, out, err = await _probe_cli("-p", "machining_centre_umati", "-e", url)
    assert status == 1
    assert "0/11 signals good" in out
    assert "lathe-b, vmc-b, vmc-decoy" in out + err


MONITORING_OF_VMC_X = [
    ("http://opcfoundation.org/UA/", "Objects"),
    (MACHINERY, "Machines"),
    (NAMESPACE_URI, "vmc-x"),
    (MACHINE_TOOL, "Monitoring"),
]


async def test_paths_are_resolved_again_after_a_reconnect_to_a_renumbered_server(
    tmp_path: Path,
) -> None:
    """A server updated between two connections (other NodeSets first, other machines first)
    numbers everything anew; the driver's next connect finds the machine and its nodes again."""
    port = free_port()
    before = Scenario(
        name="before-update",
        seed=3,
        instances=[_machine("vmc-x", "machining_centre", "cell")],
        servers=[ServerSpec(name="cell", protocol="opcua", port=port)],
    )
    after = before.model_copy(
        update={
            "name": "after-update",
            "instances": [
                _machine("imm-y", "injection_moulding", "cell"),
                _machine("vmc-decoy", "machining_centre", "cell"),
                *before.instances,
            ],
        }
    )
    device = None
    driver = None
    try:
        async with SimulatorHost(before) as first:
            device = _device(
                first, tmp_path, "vmc-x", "machining_centre_umati", select_machine={"name": "vmc-x"}
            )
            driver = _driver(device)
            await driver.connect()
            [fast] = [g for g in device.profile.groups if g.name == "fast"]
            assert all(r.quality is Quality.GOOD for r in (await driver.read(fast)).readings)
            await driver.close()
            numbering_before = await _node_of(first.endpoint("vmc-x").url, MONITORING_OF_VMC_X)
        async with SimulatorHost(after) as second:
            numbering_after = await _node_of(second.endpoint("vmc-x").url, MONITORING_OF_VMC_X)
            assert numbering_after != numbering_before  # other namespace indexes and node ids
            await driver.connect()
            readings = (await driver.read(fast)).readings
            await second.wait_ticks(1)
            for reading in readings:
                assert reading.quality is Quality.GOOD, (reading.signal, reading.reason)
                signal = next(s for s in device.profile.signals if s.name == reading.signal)
                value = compile_signal(signal)(reading.raw)[0]
                expected = second.truth.value_at("vmc-x", reading.signal, reading.ts_ms)
                assert (
                    value == pytest.approx(expected)
                    if isinstance(expected, float)
                    else value == expected
                )
    finally:
        if driver is not None:
            await driver.close()


async def test_the_gateway_subscription_path_delivers_every_companion_signal(
    host: SimulatorHost, tmp_path: Path
) -> None:
    """`gateway run` subscribes rather than reads: every signal arrives good through the
    subscriptions created on the resolved nodes."""
    device = _device(
        host,
        tmp_path,
        "imm-b",
        "injection_moulding_euromap77",
        select_machine={"serial_number": "E77-0002"},
    )
    driver = _driver(device)
    readings: list[RawReading] = []
    try:
        await driver.connect()
        for group in device.profile.groups:
            await driver.subscribe(group, readings.extend)
        wanted = {s.name for s in device.profile.signals}
        await wait_until_async(
            lambda: wanted <= {r.signal for r in readings if r.quality is Quality.GOOD},
            what="every signal through the subscriptions",
        )
    finally:
        await driver.close()
    assert not [r for r in readings if r.quality is not Quality.GOOD]

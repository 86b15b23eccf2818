"""`shulian profile probe` against simulated machines, as a service provider runs it on site.

The command runs as a subprocess (the real CLI, its output and exit status) while the simulated
machines run in the test's event loop. Device-level failures (refused, unanswered, a converter's
exception) must be one clear line and exit status 2; a signal the device cannot serve (a Modbus
exception, a bad OPC UA status) is a bad row with the reason and exit status 1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from support import run_shulian

from shulian.devservices import free_port
from simulators.host import Endpoint, SimulatorHost
from simulators.modbus_server import Unreachable
from simulators.scenario import InstanceSpec, Scenario
from wire.payloads import MachineState

GRINDER = "probe-grinder"  # gear_grinder, Modbus TCP
RACEWAY = "probe-raceway"  # raceway_grinder, OPC UA

# One simulator for the module (starting an OPC UA server costs seconds); fault tests undo theirs.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Run:
    status: int
    stdout: str
    stderr: str

    @property
    def rows(self) -> dict[str, str]:
        """Table rows by signal name."""
        return {
            line.split()[0]: line
            for line in self.stdout.splitlines()
            if line and not line.startswith(("signal", "-")) and "signals good" not in line
        }


async def _probe(*args: str, timeout_s: float = 60.0) -> Run:
    return Run(*await run_shulian("profile", "probe", *args, timeout_s=timeout_s))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def host() -> AsyncIterator[SimulatorHost]:
    scenario = Scenario(
        name="probe",
        seed=5,
        tick_ms=100,
        instances=[
            InstanceSpec(
                id=GRINDER, kind="gear_grinder", unit_id=3, start_state=MachineState.RUNNING
            ),
            InstanceSpec(id=RACEWAY, kind="raceway_grinder", start_state=MachineState.RUNNING),
        ],
    )
    async with SimulatorHost(scenario.with_free_ports()) as running:
        await running.wait_ticks(2)
        yield running


def _modbus(endpoint: Endpoint) -> str:
    return f"tcp://{endpoint.host}:{endpoint.port}"


def _assert_no_traceback(run: Run) -> None:
    assert "Traceback" not in run.stderr + run.stdout, run.stderr


async def test_probe_prints_raw_and_normalized_values_of_a_modbus_machine(
    host: SimulatorHost,
) -> None:
    endpoint = host.endpoint(GRINDER)
    run = await _probe(
        "--profile", "gear_grinder", "--endpoint", _modbus(endpoint), "--unit-id", "3"
    )
    assert run.status == 0, run.stdout + run.stderr
    assert "20/20 signals good" in run.stdout
    rows = run.rows
    # Scaled registers: the raw column holds the register, the value column the canonical value.
    spindle_load = rows["spindle_load"].split()
    raw, value = float(spindle_load[2]), float(spindle_load[3])
    assert value == pytest.approx(raw * 0.1)
    assert spindle_load[4] == "percent" and spindle_load[5] == "good"
    assert rows["machine_state"].split()[3] in {s.value for s in MachineState}


async def test_probe_reads_an_opcua_machine_with_per_device_node_ids(host: SimulatorHost) -> None:
    endpoint = host.endpoint(RACEWAY)
    run = await _probe(
        "--profile", "raceway_grinder", "--endpoint", endpoint.url, "--device-id", RACEWAY
    )
    assert run.status == 0, run.stdout + run.stderr
    size = run.rows["size_deviation"].split()
    assert float(size[3]) == pytest.approx(float(size[2]) * 1000)  # mm -> um
    assert size[4] == "um"


async def test_refused_modbus_connection_is_one_clear_line() -> None:
    port = free_port()
    run = await _probe("--profile", "gear_grinder", "--endpoint", f"127.0.0.1:{port}")
    assert run.status == 2
    _assert_no_traceback(run)
    assert f"connection refused by 127.0.0.1:{port}" in run.stderr
    assert run.stderr.count("\n") == 1


async def test_refused_opcua_connection_is_one_clear_line() -> None:
    port = free_port()
    run = await _probe("--profile", "raceway_grinder", "--endpoint", f"opc.tcp://127.0.0.1:{port}")
    assert run.status == 2
    _assert_no_traceback(run)
    assert "refused" in run.stderr and f"127.0.0.1:{port}" in run.stderr


async def test_unmapped_address_is_a_bad_row_naming_the_modbus_exception(
    host: SimulatorHost, tmp_path: Path
) -> None:
    profile = tmp_path / "grinder_plus.yaml"
    profile.write_text(
        "id: grinder_plus\nextends: gear_grinder\nprotocol: modbus\nsignals:\n"
        "  - {name: part_temperature, group: slow, address: 3000, type: int16, scale: 0.1, unit: degC}\n"
    )
    endpoint = host.endpoint(GRINDER)
    run = await _probe("--profile", str(profile), "--endpoint", _modbus(endpoint), "--unit-id", "3")
    assert run.status == 1, run.stdout + run.stderr
    _assert_no_traceback(run)
    bad = run.rows["part_temperature"]
    assert " bad " in bad and "exception 2" in bad.lower() and "illegal data address" in bad
    assert "20/21 signals good" in run.stdout  # the rest of the machine still reads


@pytest.fixture()
def unreachable_grinder(host: SimulatorHost) -> Iterator[Callable[[Unreachable], None]]:
    yield lambda mode: host.set_unreachable(GRINDER, mode=mode)
    host.set_unreachable(GRINDER, False)


async def test_unanswered_unit_times_out_with_a_hint(
    host: SimulatorHost, unreachable_grinder: Callable[[Unreachable], None]
) -> None:
    unreachable_grinder(Unreachable.TIMEOUT)
    endpoint = host.endpoint(GRINDER)
    run = await _probe(
        "--profile", "gear_grinder", "--endpoint", _modbus(endpoint), "--unit-id", "3",
        "--timeout-s", "0.3",
    )  # fmt: skip
    assert run.status == 2
    _assert_no_traceback(run)
    assert "unit 3): no reply in 0.3 s after 3 tries" in run.stderr, run.stderr


async def test_converter_without_its_serial_device_is_reported(
    host: SimulatorHost, unreachable_grinder: Callable[[Unreachable], None]
) -> None:
    unreachable_grinder(Unreachable.GATEWAY_EXCEPTION)
    endpoint = host.endpoint(GRINDER)
    run = await _probe(
        "--profile", "gear_grinder", "--endpoint", _modbus(endpoint), "--unit-id", "3"
    )
    assert run.status == 2
    _assert_no_traceback(run)
    assert "unit 3): Modbus exception 11: gateway target device failed to respond" in run.stderr
    assert run.stderr.count("\n") == 1


async def test_unknown_node_is_a_bad_row_naming_the_status_code(
    host: SimulatorHost, tmp_path: Path
) -> None:
    profile = tmp_path / "raceway_plus.yaml"
    profile.write_text(
        "id: raceway_plus\nextends: raceway_grinder\nprotocol: opcua\nsignals:\n"
        "  - name: part_temperature\n    group: slow\n"
        "    node_id: 'nsu=urn:shulian:simulators;s={device}.Gauge.PartTemperature'\n"
    )
    endpoint = host.endpoint(RACEWAY)
    run = await _probe(
        "--profile", str(profile), "--endpoint", endpoint.url, "--device-id", RACEWAY
    )
    assert run.status == 1, run.stdout + run.stderr
    _assert_no_traceback(run)
    bad = run.rows["part_temperature"]
    assert " bad " in bad and "BadNodeIdUnknown" in bad, bad


def _site(tmp_path: Path, host: SimulatorHost, raceway_settings: str = "") -> Path:
    grinder, raceway = host.endpoint(GRINDER), host.endpoint(RACEWAY)
    site = tmp_path / "site.yaml"
    site.write_text(
        f"gateway: {{id: gw-probe, enterprise: ent-a, data_dir: '{tmp_path / 'var'}'}}\n"
        "devices:\n"
        f"  - {{id: grinder-3, profile: gear_grinder, endpoint: '{_modbus(grinder)}',"
        f" unit_id: {grinder.unit_id}, settings: {{timeout_s: 0.5, max_gap: 0}}}}\n"
        f"  - id: {RACEWAY}\n"
        "    profile: raceway_grinder\n"
        f"    endpoint: '{raceway.url}'\n"
        f"{raceway_settings}"
    )
    return site


async def test_probe_of_a_site_device_uses_its_endpoint_unit_and_settings(
    host: SimulatorHost, tmp_path: Path
) -> None:
    site = _site(tmp_path, host)
    run = await _probe("--site", str(site), "--device", "grinder-3")
    assert run.status == 0, run.stdout + run.stderr
    # The unit id and max_gap: 0 come from the site entry: 20 signals, read without gap reads.
    assert f"grinder-3 (tcp://127.0.0.1:{host.endpoint(GRINDER).port} unit 3)" in run.stdout
    assert "20/20 signals good, 5 request(s)" in run.stdout  # 2 with the profile's max_gap
    # The OPC UA device's node ids name the device ({device}): the site's id is used.
    run = await _probe("--site", str(site), "--device", RACEWAY)
    assert run.status == 0, run.stdout + run.stderr


async def test_probe_of_a_site_device_uses_its_security(
    host: SimulatorHost, tmp_path: Path
) -> None:
    # The simulator offers no security; a device that demands it must not be read without.
    settings = "    settings: {security_policy: Basic256Sha256, security_mode: SignAndEncrypt}\n"
    site = _site(tmp_path, host, settings)
    run = await _probe("--site", str(site), "--device", RACEWAY)
    assert run.status == 2, run.stdout + run.stderr
    _assert_no_traceback(run)
    assert "Basic256Sha256" in run.stderr, run.stderr


async def test_probe_of_an_unknown_site_device_lists_the_known_ones(
    host: SimulatorHost, tmp_path: Path
) -> None:
    run = await _probe("--site", str(_site(tmp_path, host)), "--device", "grinder-9")
    assert run.status == 2
    assert "no enabled device 'grinder-9' (devices: grinder-3, probe-raceway)" in run.stderr
    run = await _probe("--site", str(_site(tmp_path, host)))
    assert run.status == 2 and "give --site with --device" in run.stderr


async def test_boolean_state_keys_map_a_register_bit_and_an_opcua_boolean(
    host: SimulatorHost, tmp_path: Path
) -> None:
    """`states: {true: ..., false: ...}` through the real drivers (it failed at run time with
    `unknown state code False` before issue 12)."""
    bit = tmp_path / "bit.yaml"
    bit.write_text(
        "id: grinder_alarm_state\nprotocol: modbus\nsignals:\n"
        "  - {name: machine_state, address: 102, type: bool, bit: 0,"
        " states: {true: fault, false: running}}\n"
    )
    boolean = tmp_path / "boolean.yaml"
    boolean.write_text(
        "id: raceway_alarm_state\nprotocol: opcua\nsignals:\n"
        "  - name: machine_state\n"
        '    node_id: "nsu=urn:shulian:simulators;s={device}.Alarm.Active"\n'
        "    states: {true: fault, false: running}\n"
    )
    grinder = host.endpoint(GRINDER)
    runs = [
        await _probe("--profile", str(bit), "--endpoint", _modbus(grinder), "--unit-id", "3"),
        await _probe(
            "--profile",
            str(boolean),
            "--endpoint",
            host.endpoint(RACEWAY).url,
            "--device-id",
            RACEWAY,
        ),
    ]
    for run in runs:
        assert run.status == 0, run.stdout + run.stderr
        raw, value, _unit, quality = run.rows["machine_state"].split()[2:6]
        assert (raw, value) in {("True", "fault"), ("False", "running")}, run.stdout
        assert quality == "good"

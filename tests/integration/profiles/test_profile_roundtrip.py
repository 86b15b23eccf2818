"""Every shipped profile, reading its simulated machine, yields the simulator's ground truth.

For each profile in device_profiles/ the simulated machine of the same kind is started in-process
(real OPC UA or Modbus TCP server), read once through `shulian profile probe`'s code path (the real
driver, then the gateway's normalizer: scaling, pint unit conversion, state mapping), and every
value is compared with what the simulator says it served, in canonical units, at the time of the
read. The simulator's maps were written independently of the profiles (from the same vendor-style
manuals a service provider would get), so a wrong address, type, word order, scale, unit or state
code in a profile shows up here as a mismatch.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.profile_cli import ProbeReport, probe, probe_device
from gateway.profiles.loader import REPO_PROFILES, ProfileResolver
from simulators.host import SimulatorHost
from simulators.machines import KINDS
from simulators.scenario import InstanceSpec, Scenario, ServerSpec
from wire.payloads import MachineState
from wire.signals import SignalKind, lookup_signal

pytestmark = pytest.mark.asyncio(loop_scope="module")

REL_TOL = 1e-6
"""Both sides compute in doubles from the same raw value; only the order of operations differs."""


def shipped_profiles() -> list[Path]:
    """Every concrete profile in the library (not the abstract bases, not site files)."""
    paths = []
    for path in sorted(REPO_PROFILES.rglob("*.yaml")):
        relative = path.relative_to(REPO_PROFILES)
        if relative.parts[0] in ("_base", "fleets"):
            continue
        paths.append(path)
    return paths


PROFILES = shipped_profiles()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _matches(read: object, served: object) -> bool:
    if isinstance(read, bool) or isinstance(served, bool):
        if isinstance(read, int | float) and isinstance(served, int | float):
            return float(read) == float(served)  # a bit read as a 0/1 gauge
        return read == served
    if isinstance(read, int | float) and isinstance(served, int | float):
        return math.isclose(float(read), float(served), rel_tol=REL_TOL, abs_tol=1e-9)
    return read == served


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def host() -> AsyncIterator[SimulatorHost]:
    """Every kind at once: OPC UA machines share one server, Modbus ones one server by unit id."""
    instances = []
    for unit_id, kind in enumerate(sorted(KINDS), start=1):
        protocol = KINDS[kind].protocol
        instances.append(
            InstanceSpec(
                id=_device_id(kind),
                kind=kind,
                server=protocol,
                unit_id=unit_id if protocol == "modbus" else None,
                start_state=MachineState.RUNNING,
            )
        )
        companion = KINDS[kind].companion
        if companion is not None:
            # The same machine again, served as its companion spec defines (umati, EUROMAP 77).
            instances.append(
                InstanceSpec(
                    id=_device_id(f"{kind}_{companion.name}"),
                    kind=kind,
                    server=protocol,
                    companion_spec=True,
                    start_state=MachineState.RUNNING,
                )
            )
    scenario = Scenario(
        name="roundtrip",
        seed=20240611,
        tick_ms=50,
        gauge_period_s=0.05,  # analog values move every tick, so reads race real changes
        servers=[
            ServerSpec(name="opcua", protocol="opcua", port=0),
            ServerSpec(name="modbus", protocol="modbus", port=0),
        ],
        instances=instances,
    )
    async with SimulatorHost(scenario) as running:
        await running.wait_ticks(5)
        yield running


def _device_id(kind: str) -> str:
    return f"rt-{kind.replace('_', '-')}"


async def _read_simulated(host: SimulatorHost, path: Path) -> tuple[ProbeReport, str, int, int]:
    loaded = ProfileResolver().load(str(path))
    companions = {f"{n}_{k.companion.name}": n for n, k in KINDS.items() if k.companion}
    kind = companions.get(loaded.profile.id, loaded.profile.id)
    assert kind in KINDS, f"{path}: id {kind!r} is not a simulated machine kind"
    device_id = _device_id(loaded.profile.id)
    endpoint = host.endpoint(device_id)
    url = (
        f"tcp://{endpoint.host}:{endpoint.port}" if endpoint.protocol == "modbus" else endpoint.url
    )
    # Several umati machines share the server: a companion-spec device selects its own.
    settings = (
        {"select_machine": {"serial_number": endpoint.serial_number}}
        if endpoint.serial_number
        else None
    )
    device = probe_device(loaded.profile, url, endpoint.unit_id, settings, device_id=device_id)
    start_ms = _now_ms()
    report = await probe(device)
    end_ms = _now_ms()
    return report, device_id, start_ms, end_ms


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
async def test_profile_reads_its_simulator_ground_truth(host: SimulatorHost, path: Path) -> None:
    report, device_id, start_ms, end_ms = await _read_simulated(host, path)

    served = set(host.truth.signals(device_id))
    read = {row.signal for row in report.rows}
    assert read == served, (
        f"profile reads {sorted(read - served)} that the simulator does not serve, and misses "
        f"{sorted(served - read)}"
    )
    bad = [(row.signal, row.reason) for row in report.rows if row.quality != "good"]
    assert not bad, bad

    mismatches = []
    for row in report.rows:
        candidates = host.truth.values_between(device_id, row.signal, start_ms, end_ms)
        if not any(_matches(row.value, value) for value in candidates):
            mismatches.append(
                f"{row.signal}: read {row.value!r} (raw {row.raw!r}), served {candidates}"
            )
    assert not mismatches, "\n".join(mismatches)

    # The machine runs, so its process values are not all zero: a map read at the wrong
    # place (all reserved registers) cannot pass by accident.
    gauges = [
        row.value
        for row in report.rows
        if (spec := lookup_signal(row.signal)) and spec.kind is SignalKind.GAUGE
    ]
    assert any(isinstance(v, int | float) and not isinstance(v, bool) and v != 0 for v in gauges), (
        gauges
    )
    state = next((row.value for row in report.rows if row.signal == "machine_state"), "running")
    assert state in {s.value for s in MachineState}

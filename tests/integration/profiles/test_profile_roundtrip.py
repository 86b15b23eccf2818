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
from pathlib import Path

import pytest

from gateway.profile_cli import ProbeReport, probe, probe_device
from gateway.profiles.loader import REPO_PROFILES, ProfileResolver
from simulators.host import SimulatorHost
from simulators.machines import KINDS
from simulators.scenario import InstanceSpec, Scenario
from wire.payloads import MachineState
from wire.signals import SignalKind, lookup_signal

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


async def _read_simulated(path: Path) -> tuple[ProbeReport, SimulatorHost, str, int, int]:
    loaded = ProfileResolver().load(str(path))
    kind = loaded.profile.id
    assert kind in KINDS, f"{path}: id {kind!r} is not a simulated machine kind"
    device_id = f"rt-{kind.replace('_', '-')}"
    scenario = Scenario(
        name="roundtrip",
        seed=20240611,
        tick_ms=50,
        gauge_period_s=0.05,  # analog values move every tick, so reads race real changes
        instances=[
            InstanceSpec(
                id=device_id,
                kind=kind,
                start_state=MachineState.RUNNING,
                unit_id=7 if KINDS[kind].protocol == "modbus" else None,
            )
        ],
    )
    host = SimulatorHost(scenario.with_free_ports())
    async with host:
        await host.wait_ticks(5)
        endpoint = host.endpoint(device_id)
        url = (
            f"tcp://{endpoint.host}:{endpoint.port}"
            if endpoint.protocol == "modbus"
            else endpoint.url
        )
        device = probe_device(loaded.profile, url, endpoint.unit_id, device_id=device_id)
        start_ms = _now_ms()
        report = await probe(device)
        end_ms = _now_ms()
    return report, host, device_id, start_ms, end_ms


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
async def test_profile_reads_its_simulator_ground_truth(path: Path) -> None:
    report, host, device_id, start_ms, end_ms = await _read_simulated(path)

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
    assert any(isinstance(v, float) and v != 0.0 for v in gauges), gauges
    state = next((row.value for row in report.rows if row.signal == "machine_state"), "running")
    assert state in {s.value for s in MachineState}


def test_every_simulated_kind_has_a_shipped_profile() -> None:
    ids = {ProfileResolver().load(str(path)).profile.id for path in PROFILES}
    assert ids == set(KINDS), (sorted(set(KINDS) - ids), sorted(ids - set(KINDS)))

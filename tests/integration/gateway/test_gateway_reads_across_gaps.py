"""A simulated gear hobber through the gateway and a real Mosquitto (issue 12).

The shipped gear_hobber profile reads its whole register map in one request per group, across
the reserved registers between its blocks, and the simulator answers those reads; integer
registers arrive on the wire as JSON integers (``168``), not floats (``168.0``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gateway_fakes import eventually, fake_settings

from gateway.app import GatewayApp
from gateway.drivers.modbus.planner import plan_profile
from gateway.profiles.loader import load_site
from shulian.devservices import Mosquitto
from simulators.host import SimulatorHost
from simulators.scenario import InstanceSpec, Scenario
from wire.payloads import MachineState

INTEGERS = ("hob_speed", "feed_override", "part_count", "alarm_code")
"""uint16/uint32 registers without scaling or conversion in the gear_hobber profile."""
DECIMALS = ("spindle_load", "table_speed")
"""Registers with a fractional scale (0.1, 0.01): decimal numbers on the wire."""


def raw_samples(sub: Any) -> list[dict[str, Any]]:
    """Every telemetry sample as the JSON on the wire, before any model touched it."""
    return [
        sample
        for message in sub.snapshot()
        if message.topic.endswith("/telemetry")
        for sample in json.loads(message.payload)["samples"]
    ]


@pytest.mark.timeout(90)
async def test_hobber_reads_across_gaps_and_publishes_integers_as_integers(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    scenario = Scenario(
        name="gaps",
        seed=12,
        tick_ms=100,
        instances=[
            InstanceSpec(
                id="hob-1", kind="gear_hobber", enterprise="ent-a", start_state=MachineState.RUNNING
            )
        ],
    )
    sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/#")
    async with SimulatorHost(scenario) as host:
        endpoint = host.endpoint("hob-1")
        site_file = tmp_path / "gateway.yaml"
        site_file.write_text(
            "gateway: {id: gw-1, enterprise: ent-a}\ndevices:\n"
            f"  - {{id: hob-1, profile: gear_hobber, endpoint: "
            f"'tcp://{endpoint.host}:{endpoint.port}', unit_id: {endpoint.unit_id}}}\n"
        )
        site = load_site(site_file)
        app = GatewayApp(fake_settings(mosquitto.url, tmp_path / "gw"), site)
        await app.start()
        try:

            def seen() -> set[str]:
                return {s["signal"] for s in raw_samples(sub) if s["quality"] == "good"}

            await eventually(
                lambda: {*INTEGERS, *DECIMALS} <= seen(), what="hobber values", timeout_s=30
            )
            counters = app.scheduler.runners["hob-1"].counters
            await eventually(lambda: counters.read_cycles >= 4, what="a few cycles")
        finally:
            await app.stop()

    samples = raw_samples(sub)
    bad = [s for s in samples if s["quality"] != "good"]
    assert not bad, bad  # no exception 02 from reading across the reserved registers
    # One request per group and cycle: the plan reads across the gaps.
    plan = plan_profile(site.devices[0].profile)  # type: ignore[arg-type]
    assert plan.requests_per_cycle == len(plan.groups) == 2
    assert counters.requests == counters.read_cycles
    by_signal: dict[str, list[Any]] = {}
    for sample in samples:
        by_signal.setdefault(sample["signal"], []).append(sample["value"])
    for name in INTEGERS:
        assert all(type(v) is int for v in by_signal[name]), (name, by_signal[name][:5])
    for name in DECIMALS:
        assert all(isinstance(v, float) for v in by_signal[name]), (name, by_signal[name][:5])

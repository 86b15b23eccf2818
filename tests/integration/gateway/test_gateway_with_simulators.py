"""The gateway core with the real drivers against the simulators, through a real Mosquitto."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from gateway_fakes import eventually, fake_settings

from gateway.app import GatewayApp
from gateway.profiles.loader import load_site
from shulian.devservices import Mosquitto
from simulators.host import SimulatorHost
from simulators.scenario import InstanceSpec, Scenario
from wire.codec import decode_device_status
from wire.payloads import DeviceConnection, Quality

DEVICES = {"hob-1": "gear_hobber", "hob-2": "gear_hobber", "lathe-1": "bearing_lathe"}


def scenario() -> Scenario:
    return Scenario(
        name="gateway-core",
        seed=7,
        tick_ms=100,
        dwell_scale=0.05,
        instances=[InstanceSpec(id=d, kind=k, enterprise="ent-a") for d, k in DEVICES.items()],
    )


def write_site(path: Path, host: SimulatorHost) -> None:
    lines = ["gateway: {id: gw-1, enterprise: ent-a}", "devices:"]
    for device, kind in DEVICES.items():
        ep = host.endpoint(device)
        scheme = "opc.tcp" if ep.protocol == "opcua" else "tcp"
        unit = f", unit_id: {ep.unit_id}" if ep.unit_id else ""
        lines.append(
            f"  - {{id: {device}, profile: {kind}, endpoint: '{scheme}://{ep.host}:{ep.port}'{unit}}}"
        )
    path.write_text("\n".join(lines) + "\n")


def statuses(sub: Any, device: str) -> list[Any]:
    return [
        decode_device_status(m.payload)
        for m in sub.snapshot()
        if m.topic.endswith(f"devices/{device}/status")
    ]


@pytest.mark.timeout(120)
async def test_simulated_machines_flow_and_an_unreachable_unit_goes_offline_alone(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/#")
    async with SimulatorHost(scenario()) as host:
        site_file = tmp_path / "gateway.yaml"
        write_site(site_file, host)
        site = load_site(site_file)
        app = GatewayApp(fake_settings(mosquitto.url, tmp_path / "gw"), site)
        await app.start()
        try:

            def devices_seen() -> set[str]:
                return {s.device for b in sub.batches() for s in b.samples}

            await eventually(lambda: devices_seen() == set(DEVICES), what="all three", timeout_s=30)
            await eventually(
                lambda: (
                    sum(
                        1
                        for b in sub.batches()
                        for s in b.samples
                        if s.device == "hob-2" and s.signal == "part_count"
                    )
                    >= 1
                ),
                what="hob-2 part counts",
            )
            # Counters agree with what the simulator served around the time they were read.
            for batch in sub.batches():
                for s in batch.samples:
                    if s.signal == "part_count" and s.quality is Quality.GOOD:
                        served = host.truth.values_between(
                            s.device, "part_count", s.ts_ms - 1500, s.ts_ms + 100
                        )
                        assert s.value in served, (s, served)

            runner = app.scheduler.runners["hob-1"]
            interval_s = runner.min_interval_s
            await eventually(lambda: runner.is_connected, what="hob-1 connected")
            other = app.scheduler.runners["hob-2"].counters
            cycles_before, t0 = other.read_cycles, time.monotonic()
            host.set_unreachable("hob-1")
            stopped_at = time.monotonic()
            await eventually(
                lambda: (
                    statuses(sub, "hob-1")
                    and statuses(sub, "hob-1")[-1].connection is not DeviceConnection.CONNECTED
                ),
                what="hob-1 offline",
                timeout_s=10,
            )
            took = time.monotonic() - stopped_at
            assert took <= 3 * interval_s + 0.3, f"offline after {took:.1f} s"
            await eventually(
                lambda: time.monotonic() - t0 > 4 * interval_s, what="a window", timeout_s=10
            )
            rate = (other.read_cycles - cycles_before) / (time.monotonic() - t0)
            groups_per_s = sum(1000 / g.interval_ms for g in app.scheduler.runners["hob-2"].groups)
            assert rate >= 0.7 * groups_per_s, f"hob-2 slowed to {rate:.2f} cycles/s"
            assert statuses(sub, "hob-2")[-1].connection is DeviceConnection.CONNECTED

            host.set_unreachable("hob-1", False)
            await eventually(
                lambda: statuses(sub, "hob-1")[-1].connection is DeviceConnection.CONNECTED,
                what="hob-1 back",
                timeout_s=40,
            )
        finally:
            await app.stop()

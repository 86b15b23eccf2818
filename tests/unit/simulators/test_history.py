"""The simulators' history logs: shifts from the scenario, machines continuing live, and every
logged raw value read by the gateway's own profiles without a bad sample."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from gateway.app import compile_devices
from gateway.drivers.base import RawReading
from gateway.profiles.loader import load_site
from shulian.demo import Broker, plan_scenario, write_site_files
from simulators.history import MANIFEST, shift_is_on, write_history
from simulators.host import SimulatorHost
from simulators.scenario import SCENARIO_DIR, HistorySpec, load_scenario
from wire import MachineState

TZ = ZoneInfo("Asia/Shanghai")


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=TZ).timestamp() * 1000)


def test_shift_follows_the_scenario() -> None:
    spec = HistorySpec(shift_start_h=6, shift_hours=16, worked_share={"ent-x": {1: 0.25}})
    end = _ms(2026, 12, 5, 9, 30)
    assert shift_is_on(spec, "ent-x", _ms(2026, 12, 3, 21, 59), end)  # two days ago: full shift
    assert not shift_is_on(spec, "ent-x", _ms(2026, 12, 3, 22, 0), end)
    assert not shift_is_on(spec, "ent-x", _ms(2026, 12, 4, 5, 59), end)
    assert shift_is_on(spec, "ent-x", _ms(2026, 12, 4, 9, 59), end)  # yesterday: 4 of 16 h
    assert not shift_is_on(spec, "ent-x", _ms(2026, 12, 4, 10, 0), end)
    assert shift_is_on(spec, "ent-y", _ms(2026, 12, 4, 10, 0), end)  # others work all shift


@pytest.fixture(scope="module")
def demo_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, SimulatorHost]:
    """Two days of the demo scenario's history, and the demo's site files."""
    work = tmp_path_factory.mktemp("history")
    scenario_file, devices = plan_scenario(SCENARIO_DIR / "demo.yaml", work)
    scenario = load_scenario(scenario_file)
    assert scenario.history is not None
    spec = scenario.history.model_copy(update={"days": 2})
    host = SimulatorHost(scenario)
    write_history(host.stepping_order(), spec, work / "history", _ms(2026, 12, 5, 9, 30))
    write_site_files(devices, Broker("mqtt://127.0.0.1:1883", "5", "test"), work)
    return work / "history", work / "gateways", host


def test_every_logged_value_normalizes_through_the_gateway_profiles(
    demo_history: tuple[Path, Path, SimulatorHost],
) -> None:
    history, gateways, _ = demo_history
    manifest = orjson.loads((history / MANIFEST).read_bytes())
    assert manifest["steps"] == 2 * 48 and len(manifest["devices"]) == 27
    normalized = 0
    for site_file in sorted(gateways.glob("*.yaml")):
        site = load_site(site_file)
        for device_id, normalizer in compile_devices(site.devices).items():
            lines = (history / f"{device_id}.jsonl").read_bytes().splitlines()
            assert len(lines) == manifest["steps"] + 1
            for line in lines:
                record = orjson.loads(line)
                readings = [RawReading(k, v, record["ts_ms"]) for k, v in record["values"].items()]
                samples = normalizer.normalize(readings)
                normalized += len(samples)
            assert normalizer.bad_samples == 0, (device_id, normalizer.last_bad_reason)
            assert normalizer.unknown_signals == 0, device_id
    assert normalized > 27 * 97 * 5


def test_machines_are_off_outside_the_shift_and_continue_live(
    demo_history: tuple[Path, Path, SimulatorHost],
) -> None:
    history, _, host = demo_history
    states = {}
    for line in (history / "ent-004-caster-01.jsonl").read_bytes().splitlines():
        record = orjson.loads(line)
        states[record["ts_ms"]] = record["values"]
    # ent-004 worked 30 % of yesterday's shift (06:00-10:48); at 15:00 its caster was off
    caster_at_15 = states[_ms(2026, 12, 4, 15, 0)]
    press = host.machine("ent-004-caster-01")
    off_code = next(
        item.state_code(MachineState.OFF)
        for item in host.devices["ent-004-caster-01"].kind.address_map.fields()
        if item.signal == "machine_state"
    )
    assert caster_at_15["machine_state"] == off_code
    # The live machine is the one that ran the history: free again, its count where it ended
    last = orjson.loads((history / "ent-004-caster-01.jsonl").read_bytes().splitlines()[-1])
    assert not press.is_forced
    assert press.values["part_count"] == last["values"]["part_count"]

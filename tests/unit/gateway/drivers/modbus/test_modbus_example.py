"""The Modbus driver's example profile loads, checks clean and plans to few requests."""

from __future__ import annotations

from pathlib import Path

import gateway.drivers.modbus as modbus_package
from gateway.drivers.modbus.driver import ModbusDriver
from gateway.drivers.modbus.models import ModbusProfile, Table, WordOrder
from gateway.drivers.modbus.planner import plan_profile
from gateway.profiles.loader import ProfileResolver
from gateway.profiles.models import DeviceConfig

EXAMPLE = Path(modbus_package.__file__).parent / "example.yaml"


def test_example_profile_loads_through_the_resolver() -> None:
    loaded = ProfileResolver().load(str(EXAMPLE))
    profile = loaded.profile
    assert isinstance(profile, ModbusProfile)
    assert profile.id == "example_modbus_lathe"
    assert profile.word_order is WordOrder.CDAB
    assert {s.table for s in profile.signals} == set(Table)
    assert loaded.where("signals[3].address").endswith("example.yaml:40: signals[3].address")


def test_example_profile_checks_clean_and_plans_four_requests() -> None:
    profile = ProfileResolver().load(str(EXAMPLE)).profile
    assert isinstance(profile, ModbusProfile)
    device = DeviceConfig(
        id="lathe-01",
        enterprise="acme",
        endpoint="tcp://10.2.0.21:502",
        unit_id=1,
        line="rings",
        profile=profile,
    )
    assert ModbusDriver.check(device) == []
    report = plan_profile(profile)
    assert (report.requests_per_cycle, report.signals) == (4, 14)  # as the file's header says

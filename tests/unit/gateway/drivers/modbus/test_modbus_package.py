"""The Modbus package exports what it lists, and validates profiles without pymodbus."""

from __future__ import annotations

import logging
import subprocess
import sys

import gateway.drivers.modbus as modbus
from gateway.drivers.base import Capability, Driver, DriverMetrics
from gateway.drivers.registry import get_driver
from gateway.profiles.models import DeviceConfig


def test_package_exports_every_listed_name() -> None:
    for name in modbus.__all__:
        assert getattr(modbus, name) is not None, name
    assert modbus.ModbusDriver.name == "modbus"


def test_registry_loads_the_modbus_driver_class() -> None:
    driver = get_driver("modbus").load()
    assert driver is modbus.ModbusDriver
    assert driver.capabilities == frozenset({Capability.POLL, Capability.PLAN})
    assert driver.profile_model is modbus.ModbusProfile
    profile = modbus.ModbusProfile.model_validate(
        {"id": "x", "protocol": "modbus", "signals": [{"name": "spindle_speed", "address": 0}]}
    )
    device = DeviceConfig(
        id="d", enterprise="e", endpoint="tcp://h:502", unit_id=None, line="", profile=profile
    )
    instance = driver(device, logging.LoggerAdapter(logging.getLogger("t")), DriverMetrics())
    assert isinstance(instance, Driver)  # every member of the protocol is there


def test_profiles_validate_and_plan_without_importing_pymodbus() -> None:
    code = (
        "import sys, gateway.drivers.modbus as m\n"
        "from gateway.drivers.modbus.planner import plan_profile\n"
        "p = m.ModbusProfile.model_validate({'id': 'x', 'protocol': 'modbus',"
        " 'signals': [{'name': 'spindle_speed', 'address': 0}]})\n"
        "assert plan_profile(p).requests_per_cycle == 1\n"
        "assert 'pymodbus' not in sys.modules, 'pymodbus was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_reading_before_connecting_is_a_clear_driver_error() -> None:
    from gateway.errors import DeviceUnreachableError
    from gateway.profiles.models import GroupSpec

    profile = modbus.ModbusProfile.model_validate(
        {"id": "x", "protocol": "modbus", "signals": [{"name": "spindle_speed", "address": 0}]}
    )
    device = DeviceConfig(
        id="d", enterprise="e", endpoint="tcp://h:502", unit_id=None, line="", profile=profile
    )
    driver = modbus.ModbusDriver(
        device, logging.LoggerAdapter(logging.getLogger("t")), DriverMetrics()
    )
    try:
        await driver.read(GroupSpec(name="default"))
    except DeviceUnreachableError as exc:
        assert str(exc) == "d (tcp://h:502): not connected. Call connect() before read()."
    else:
        raise AssertionError("read without connect did not raise")
    await driver.close()  # closing an unconnected driver is harmless

"""The shipped example profile loads, passes the driver's checks, and the package exports what
its ``__all__`` says (without importing asyncua)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import gateway.drivers.opcua as opcua_package
from gateway.drivers.opcua.driver import OpcUaDriver
from gateway.drivers.opcua.models import OpcUaProfile, SecurityMode
from gateway.drivers.registry import get_driver
from gateway.profiles.loader import ProfileResolver
from gateway.profiles.models import DeviceConfig

EXAMPLE = Path(opcua_package.__file__).parent / "example.yaml"


def test_example_profile_loads_and_has_no_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = ProfileResolver().load(str(EXAMPLE))
    profile = loaded.profile
    assert isinstance(profile, OpcUaProfile)
    assert profile.opcua.security_mode is SecurityMode.SIGN_AND_ENCRYPT
    assert {s.name for s in profile.signals if s.browse_path} == {"size_deviation", "part_count"}
    assert loaded.where("signals[2].node_id").endswith("example.yaml:33: signals[2].node_id")

    monkeypatch.setenv("SHULIAN_GW_OPCUA_PASSWORD__GRINDER_01", "x")
    device = DeviceConfig(
        id="grinder-01",
        enterprise="acme",
        endpoint="opc.tcp://10.2.0.7:4840",
        unit_id=None,
        line="",
        profile=profile,
    )
    assert OpcUaDriver.check(device) == []


def test_registry_loads_the_driver() -> None:
    assert get_driver("opcua").load() is OpcUaDriver
    assert OpcUaDriver.name == "opcua" and OpcUaDriver.profile_model is OpcUaProfile


def test_package_exports_and_does_not_import_asyncua() -> None:
    for name in opcua_package.__all__:
        assert hasattr(opcua_package, name)
    code = "import gateway.drivers.registry, sys; print('asyncua' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "validating a profile must not need asyncua"

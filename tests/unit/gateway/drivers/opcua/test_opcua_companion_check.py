"""check() of companion-spec profiles: namespace aliases, the machine locator and machine
selection are checked without a network, each problem at its field path, all at once; and the
shipped companion-spec profiles validate through the CLI's code path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.drivers.opcua.driver import OpcUaDriver
from gateway.drivers.opcua.models import OpcUaProfile
from gateway.normalize import compile_signal
from gateway.profiles.loader import load_site
from gateway.profiles.models import DeviceConfig

MT = "http://opcfoundation.org/UA/MachineTool/"


def device(profile: dict[str, Any], settings: dict[str, Any] | None = None) -> DeviceConfig:
    base = {
        "id": "umati",
        "protocol": "opcua",
        "namespaces": {"mt": MT, "di": "http://opcfoundation.org/UA/DI/"},
        "machine": {
            "type": "mt:MachineToolType",
            "folder": "0:Objects/mt:Machines",
            "identification": {"serial_number": "di:Identification/di:SerialNumber"},
        },
        "signals": [
            {
                "name": "feed_override",
                "browse_path": "mt:Monitoring/machine:Channel1/mt:FeedOverride",
            }
        ],
    }
    return DeviceConfig(
        id="vmc-01",
        enterprise="acme",
        endpoint="opc.tcp://10.2.0.7:4840",
        unit_id=None,
        line="",
        profile=OpcUaProfile.model_validate({**base, **profile}),
        settings=settings or {},
    )


def errors(config: DeviceConfig) -> dict[str, str]:
    return {p.where: p.message for p in OpcUaDriver.check(config) if p.severity == "error"}


def test_a_correct_companion_profile_with_a_selection_has_no_problems() -> None:
    assert errors(device({}, {"select_machine": {"serial_number": "VMC-1", "name": "vmc"}})) == {}


def test_undeclared_aliases_wrong_type_and_unknown_selection_keys_are_all_named() -> None:
    found = errors(
        device(
            {
                "machine": {
                    "type": "mt:Machine/mt:ToolType",
                    "folder": "0:Objects/machinery:Machines",
                    "identification": {"name": "di:Name"},
                },
                "signals": [
                    {"name": "feed_override", "browse_path": "mtx:Monitoring/mt:FeedOverride"}
                ],
            },
            {"select_machine": {"serial": "VMC-1"}},
        )
    )
    assert "'mtx' is not declared" in found["signals[0].browse_path"]
    assert "'machinery' is not declared" in found["machine.folder"]
    assert "give one BrowseName" in found["machine.type"]
    assert "reserved" in found["machine.identification.name"]
    assert "'serial' is not one of name" in found["device.settings.select_machine"]


def test_the_machine_alias_needs_a_machine_and_selection_needs_a_companion_profile() -> None:
    found = errors(
        device(
            {
                "machine": None,
                "signals": [
                    {"name": "feed_override", "browse_path": "machine:Spindle/mt:Override"}
                ],
            },
            {"select_machine": {"name": "vmc"}},
        )
    )
    assert "'machine' is not declared" in found["signals[0].browse_path"]
    assert "needs a profile with `machine`" in found["device.settings.select_machine"]


def test_labels_name_enumeration_codes_of_text_signals() -> None:
    profile = OpcUaProfile.model_validate(
        {
            "id": "imm",
            "protocol": "opcua",
            "signals": [
                {
                    "name": "operation_mode",
                    "node_id": "i=1",
                    "labels": {1: "AUTOMATIC", "4": "SETUP"},
                }
            ],
        }
    )
    convert = compile_signal(profile.signals[0])
    assert convert(1) == ("AUTOMATIC", None)
    assert convert(4) == ("SETUP", None)
    assert convert(9) == ("9", None)


def test_shipped_companion_profiles_run_from_a_site_file_with_a_selection(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "gateway: {id: gw, enterprise: acme}\n"
        "devices:\n"
        "  - {id: vmc-01, profile: machining_centre_umati, endpoint: 'opc.tcp://10.0.0.5:4840',\n"
        "     settings: {select_machine: {serial_number: VMC-0042}}}\n"
        "  - {id: lathe-01, profile: bearing_lathe_umati, endpoint: 'opc.tcp://10.0.0.5:4840',\n"
        "     settings: {select_machine: {name: lathe-01}}}\n"
        "  - {id: imm-01, profile: injection_moulding_euromap77, endpoint: 'opc.tcp://10.0.0.6:4840'}\n",
        encoding="utf-8",
    )
    devices = load_site(site).devices
    assert [d.id for d in devices] == ["vmc-01", "lathe-01", "imm-01"]
    for config in devices:
        assert errors(config) == {}, config.id
        assert all(s.node_id is None for s in config.profile.signals), "browse paths only"

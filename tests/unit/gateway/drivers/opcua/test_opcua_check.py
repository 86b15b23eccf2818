"""OpcUaDriver.check: every kind of mistake is found without a network, with its field path,
all at once; and through the loader each one names the file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.drivers.base import Problem
from gateway.drivers.opcua.driver import OpcUaDriver
from gateway.drivers.opcua.models import OpcUaProfile
from gateway.errors import ConfigError
from gateway.profiles.loader import load_site
from gateway.profiles.models import DeviceConfig

GOOD_SIGNALS = [
    {"name": "spindle_speed", "node_id": "ns=2;s=Grinder.Spindle.Speed"},
    {"name": "part_count", "browse_path": "0:Objects/2:Grinder/2:PartCount"},
]


def device(
    signals: list[dict[str, Any]] | None = None,
    *,
    opcua: dict[str, Any] | None = None,
    endpoint: str = "opc.tcp://10.2.0.7:4840",
    settings: dict[str, Any] | None = None,
    unit_id: int | None = None,
) -> DeviceConfig:
    profile = OpcUaProfile.model_validate(
        {
            "id": "grinder",
            "protocol": "opcua",
            "groups": [{"name": "default", "interval_ms": 500}],
            "signals": signals or GOOD_SIGNALS,
            "opcua": opcua or {},
        }
    )
    return DeviceConfig(
        id="grinder-01",
        enterprise="acme",
        endpoint=endpoint,
        unit_id=unit_id,
        line="",
        profile=profile,
        settings=settings or {},
    )


def errors(problems: list[Problem]) -> dict[str, str]:
    return {p.where: p.message for p in problems if p.severity == "error"}


def test_a_correct_device_has_no_problems() -> None:
    assert OpcUaDriver.check(device()) == []


def test_every_mistake_is_reported_at_once_with_its_field_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHULIAN_GW_OPCUA_PASSWORD__GRINDER_01", raising=False)
    broken = device(
        [
            {"name": "spindle_speed", "node_id": "ns=2;i=abc"},
            {"name": "part_count", "browse_path": "Objects/Grinder"},
            {"name": "program_name", "node_id": "ns=2;s=Program", "data_change_deadband": 1.0},
            {"name": "machine_state", "node_id": "ns=2;s=State", "data_change_deadband": 1.0},
        ],
        opcua={"security_policy": "Basic256Sha256", "username": "gw", "keepalive_s": 90},
        endpoint="tcp://10.2.0.7:4840",
        settings={"timeout": 3, "password_file": str(tmp_path / "missing")},
    )
    found = errors(OpcUaDriver.check(broken))
    assert "numeric identifier 'abc'" in found["signals[0].node_id"]
    assert "step 1 'Objects'" in found["signals[1].browse_path"]
    assert "this signal is text" in found["signals[2].data_change_deadband"]
    assert "on a state signal hides changes" in found["signals[3].data_change_deadband"]
    assert "needs security_mode Sign or SignAndEncrypt" in found["opcua.security_mode"]
    assert "shorter than session_timeout_s" in found["opcua.keepalive_s"]
    assert "must start with opc.tcp://" in found["device.endpoint"]
    assert "unknown OPC UA setting" in found["device.settings.timeout"]
    assert "is not a file" in found["device.settings.password_file"]
    assert len(found) == 9


def test_security_mode_without_policy_blames_the_field_the_device_overrides() -> None:
    profile_level = errors(OpcUaDriver.check(device(opcua={"security_mode": "Sign"})))
    assert "needs a security_policy (Basic256Sha256)" in profile_level["opcua.security_policy"]
    site_level = errors(OpcUaDriver.check(device(settings={"security_mode": "SignAndEncrypt"})))
    assert "device.settings.security_mode" in site_level


def test_username_needs_a_password_file_or_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secure = {"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt"}
    monkeypatch.delenv("SHULIAN_GW_OPCUA_PASSWORD__GRINDER_01", raising=False)
    found = errors(OpcUaDriver.check(device(opcua={**secure, "username": "gw"})))
    assert "SHULIAN_GW_OPCUA_PASSWORD__GRINDER_01" in found["opcua.username"]

    monkeypatch.setenv("SHULIAN_GW_OPCUA_PASSWORD__GRINDER_01", "x")
    assert OpcUaDriver.check(device(opcua={**secure, "username": "gw"})) == []

    password_file = tmp_path / "pw"
    password_file.write_text("x\n")
    found = errors(OpcUaDriver.check(device(settings={"password_file": str(password_file)})))
    assert "password_file is set but username is not" in found["device.settings.password_file"]


@pytest.mark.parametrize(
    ("endpoint", "complaint"),
    [
        ("opc.tcp://10.2.0.7", "has no port"),
        ("opc.tcp://:4840", "has no host"),
        ("opc.tcp://10.2.0.7:99999", "is not a valid URL"),
        ("opc.tcp://gw:pw@10.2.0.7:4840", "do not put credentials in the URL"),
        ("http://10.2.0.7:4840", "must start with opc.tcp://"),
    ],
)
def test_endpoint_mistakes(endpoint: str, complaint: str) -> None:
    found = errors(OpcUaDriver.check(device(endpoint=endpoint)))
    assert complaint in found["device.endpoint"]


def test_invalid_override_value_is_named_by_its_site_field() -> None:
    found = errors(OpcUaDriver.check(device(settings={"timeout_s": -1, "security_mode": "Loud"})))
    assert "greater than 0" in found["device.settings.timeout_s"]
    assert "device.settings.security_mode" in found


def test_warnings_do_not_stop_a_device() -> None:
    problems = OpcUaDriver.check(
        device(
            [
                {"name": "spindle_speed", "node_id": "ns=2;s=Speed", "sampling_interval_ms": 2000},
                {"name": "spindle_speed.2", "node_id": "ns=2;s=Speed"},
                {"name": "part_count", "node_id": "ns=2;s=Count", "data_change_deadband": 1},
            ],
            unit_id=3,
        )
    )
    assert {p.severity for p in problems} == {"warning"}
    wheres = {p.where for p in problems}
    assert {"signals[0].sampling_interval_ms", "signals[1].node_id"} <= wheres
    assert "signals[2].data_change_deadband" in wheres  # a counter deadband is suspicious
    assert "device.unit_id" in wheres


def test_through_the_loader_problems_name_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "grinder.yaml").write_text(
        "id: test-grinder\n"
        "protocol: opcua\n"
        "signals:\n"
        "  - name: spindle_speed\n"
        "    node_id: ns=2;s=Spindle.Speed\n"
        "  - name: part_count\n"
        "    node_id: ns=2;i=12x\n",
        encoding="utf-8",
    )
    (tmp_path / "site.yaml").write_text(
        "gateway: {enterprise: acme}\n"
        "devices:\n"
        "  - id: grinder-01\n"
        "    profile: grinder.yaml\n"
        "    endpoint: opc.tcp://10.2.0.7\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as failed:
        load_site(tmp_path / "site.yaml")
    text = "\n".join(failed.value.problems)
    assert f"{tmp_path / 'grinder.yaml'}:7: signals[1].node_id: numeric identifier '12x'" in text
    assert (
        f"{tmp_path / 'site.yaml'}:5: devices[0].endpoint: 'opc.tcp://10.2.0.7' has no port" in text
    )

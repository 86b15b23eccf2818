"""`shulian profile validate` names file, line and field for every kind of mistake, all at once.

tests/unit/gateway/profiles/test_loader_errors.py covers the loader's own messages; these cases go
through the command a service provider runs, and add what only the command finds: the drivers'
static checks (overlapping registers, 1-based addresses, request limits, unit ids) and its own
warnings (units that do not convert, groups nobody reads, intervals, heartbeats).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.profile_cli import app

MODBUS_HEAD = """\
id: test_machine
protocol: modbus
groups:
  - name: fast
    interval_ms: 500
signals:
"""
OPCUA_HEAD = """\
id: test_opcua_machine
protocol: opcua
groups:
  - name: fast
    interval_ms: 500
signals:
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _validate(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["validate", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output.splitlines()


# (case, file text, severity, line, field, part of the message)
CASES = [
    (
        "unknown_signal_name",
        MODBUS_HEAD + "  - name: spindel_speed\n    group: fast\n    address: 0\n",
        "error",
        7,
        "signals[0].name",
        "not in the canonical signal vocabulary",
    ),
    (
        "missing_address",
        MODBUS_HEAD + "  - name: spindle_speed\n    group: fast\n    unit: rpm\n",
        "error",
        7,
        "signals[0].address",
        "Field required",
    ),
    (
        "unknown_state",
        MODBUS_HEAD
        + "  - name: machine_state\n    group: fast\n    address: 0\n    states: {0: off, 3: runnin}\n",
        "error",
        10,
        "signals[0].states.3",
        "'running'",
    ),
    (
        "unknown_group",
        MODBUS_HEAD + "  - name: spindle_speed\n    group: slow\n    address: 0\n",
        "error",
        8,
        "signals[0].group",
        "not one of the groups",
    ),
    (
        "string_longer_than_request_limit",
        MODBUS_HEAD.replace("groups:", "modbus:\n  max_registers_per_request: 8\ngroups:")
        + "  - name: alarm_text\n    group: fast\n    address: 10\n    type: string\n    length: 20\n",
        "error",
        13,
        "signals[0].length",
        "more than max_registers_per_request 8",
    ),
    (
        "opcua_two_addresses",
        OPCUA_HEAD
        + "  - name: spindle_speed\n    group: fast\n    node_id: ns=2;s=A\n    browse_path: 0:Objects/2:A\n",
        "error",
        7,
        "signals[0]",
        "exactly one of",
    ),
    (
        "negative_interval",
        MODBUS_HEAD.replace("interval_ms: 500", "interval_ms: -500")
        + "  - name: spindle_speed\n    group: fast\n    address: 0\n",
        "error",
        5,
        "groups[0].interval_ms",
        "greater than or equal to 10",
    ),
    (
        "overlapping_registers",
        MODBUS_HEAD
        + "  - name: spindle_speed\n    group: fast\n    address: 10\n    type: float32\n"
        + "  - name: spindle_load\n    group: fast\n    address: 11\n",
        "warning",
        13,
        "signals[1].address",
        "overlaps signals[0] (spindle_speed)",
    ),
    (
        "one_based_address",
        MODBUS_HEAD + "  - name: spindle_speed\n    group: fast\n    address: 40011\n",
        "warning",
        9,
        "signals[0].address",
        "looks 1-based",
    ),
    (
        "unit_of_wrong_dimension",
        MODBUS_HEAD + "  - name: spindle_speed\n    group: fast\n    address: 0\n    unit: bar\n",
        "error",  # `gateway run` refuses it too (issue 12)
        10,
        "signals[0].unit",
        "does not convert to the canonical unit 'rpm'",
    ),
    (
        "unknown_unit",
        MODBUS_HEAD
        + "  - name: coolant_temperature\n    group: fast\n    address: 0\n    unit: degreesC\n",
        "error",
        10,
        "signals[0].unit",
        "unknown (units are written as pint spells them); the canonical unit of "
        "coolant_temperature is 'degC'",
    ),
    (
        "group_with_no_signals",
        MODBUS_HEAD.replace("signals:", "  - name: slow\n    interval_ms: 5000\nsignals:")
        + "  - name: spindle_speed\n    group: fast\n    address: 0\n",
        "warning",
        6,
        "groups[1].name",
        "has no signals",
    ),
    (
        "heartbeat_shorter_than_interval",
        MODBUS_HEAD.replace("interval_ms: 500", "interval_ms: 5000")
        + "  - name: spindle_speed\n    group: fast\n    address: 0\n    heartbeat_s: 1\n",
        "warning",
        10,
        "signals[0].heartbeat_s",
        "shorter than the interval",
    ),
    (
        "deadband_on_a_counter",
        MODBUS_HEAD
        + "  - name: part_count\n    group: fast\n    address: 0\n    type: uint32\n    deadband: 2\n",
        "warning",
        11,
        "signals[0].deadband",
        "applies to gauges",
    ),
]


@pytest.mark.parametrize(
    ("case", "text", "severity", "line", "field", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_validate_names_file_line_and_field(
    tmp_path: Path, case: str, text: str, severity: str, line: int, field: str, message: str
) -> None:
    path = _write(tmp_path, f"{case}.yaml", text)
    status, lines = _validate(str(path))
    prefix = f"{severity}: {path}:{line}: {field}: "
    assert any(out.startswith(prefix) and message in out for out in lines), "\n".join(lines)
    assert status == (1 if severity == "error" else 0), "\n".join(lines)


def test_warnings_fail_only_with_strict(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", CASES[8][1])  # a 1-based address: a warning
    assert _validate(str(path))[0] == 0
    status, lines = _validate("--strict", str(path))
    assert status == 1 and lines[-1] == "1 file checked: 0 errors, 1 warning", lines


def test_every_mistake_in_every_file_is_reported_at_once(tmp_path: Path) -> None:
    error_cases = [c for c in CASES if c[2] == "error"]
    for case in error_cases:
        _write(tmp_path, f"{case[0]}.yaml", case[1].replace("test_machine", case[0]))
    status, lines = _validate(str(tmp_path))
    assert status == 1
    for case, _, _, line, field, _ in error_cases:
        assert any(f"{case}.yaml:{line}: {field}: " in out for out in lines), (case, lines)
    assert lines[-1].startswith(f"{len(error_cases)} files checked: ")


def test_mistake_in_a_child_points_into_the_child_file(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "base.yaml",
        MODBUS_HEAD + "  - {name: spindle_speed, group: fast, address: 0, unit: rpm}\n",
    )
    child = _write(
        tmp_path,
        "child.yaml",
        "id: child\nextends: base.yaml\nprotocol: modbus\nsignals:\n"
        "  - name: spindle_speed\n    unit: kelvin\n",
    )
    status, lines = _validate(str(child))
    assert status == 1
    assert any(
        out.startswith(f"error: {child}:6: signals[0].unit: ") and "'kelvin'" in out
        for out in lines
    ), lines


def test_abstract_base_is_checked_without_a_protocol(tmp_path: Path) -> None:
    base = _write(
        tmp_path,
        "base.yaml",
        "id: tool_base\nabstract: true\ngroups:\n  - {name: fast, interval_ms: 500}\n"
        "signals:\n  - name: machine_state\n    group: fast\n    colour: red\n"
        "  - name: spindle_sped\n    group: fast\n",
    )
    status, lines = _validate(str(base))
    assert status == 1
    assert any(out.startswith(f"error: {base}:8: signals[0].colour: unknown") for out in lines)
    assert any(
        out.startswith(f"error: {base}:9: signals[1].name: ") and "canonical" in out
        for out in lines
    ), lines


def test_abstract_base_cannot_be_a_device_profile(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "base.yaml",
        "id: tool_base\nabstract: true\nsignals:\n  - name: machine_state\n",
    )
    site = _write(
        tmp_path,
        "site.yaml",
        "gateway: {id: gw-1, enterprise: ent-1}\ndevices:\n"
        "  - {id: m1, profile: base.yaml, endpoint: 'tcp://127.0.0.1:502'}\n",
    )
    status, lines = _validate(str(site))
    assert status == 1
    assert any(
        out.startswith(f"error: {site}:3: devices[0].profile: ")
        and f"{tmp_path / 'base.yaml'}:2" in out
        for out in lines
    ), lines


def test_duplicate_profile_ids_are_an_error(tmp_path: Path) -> None:
    text = MODBUS_HEAD + "  - {name: spindle_speed, group: fast, address: 0}\n"
    _write(tmp_path, "a.yaml", text)
    second = _write(tmp_path, "b.yaml", text)
    status, lines = _validate(str(tmp_path))
    assert status == 1
    assert any(out.startswith(f"error: {second}:1: id: 'test_machine' is also") for out in lines)


SITE_HEAD = "gateway: {id: gw-1, enterprise: ent-1}\n"


def test_site_file_device_fields_point_into_the_site(tmp_path: Path) -> None:
    _write(tmp_path, "m.yaml", MODBUS_HEAD + "  - {name: spindle_speed, group: fast, address: 0}\n")
    site = _write(
        tmp_path,
        "site.yaml",
        SITE_HEAD
        + "devices:\n"
        + "  - {id: lathe-1, profile: m.yaml, endpoint: 'rtu+tcp://10.0.0.9:4001'}\n"
        + "  - {id: lathe-2, profile: m.yaml, endpoint: 'tcp://10.0.0.9:502', unit_id: 300}\n"
        + "  - {id: lathe-3, profile: nowhere.yaml, endpoint: 'tcp://10.0.0.9:502'}\n",
    )
    status, lines = _validate(str(site))
    assert status == 1
    assert any(
        out.startswith(f"error: {site}:3: devices[0].unit_id: ") and "needs a unit_id" in out
        for out in lines
    ), lines
    assert any(out.startswith(f"error: {site}:4: devices[1].unit_id: ") for out in lines), lines
    assert any(out.startswith(f"error: {site}:5: devices[2].profile: ") for out in lines), lines


def test_site_warnings_come_from_the_profiles_it_uses(tmp_path: Path) -> None:
    profile = _write(
        tmp_path,
        "m.yaml",
        MODBUS_HEAD + "  - {name: spindle_speed, group: fast, address: 40001}\n",
    )
    site = _write(
        tmp_path,
        "site.yaml",
        SITE_HEAD
        + "devices:\n"
        + "  - {id: lathe-1, profile: m.yaml, endpoint: 'tcp://10.0.0.9:502'}\n"
        + "  - {id: lathe-2, profile: m.yaml, endpoint: 'tcp://10.0.0.10:502'}\n",
    )
    status, lines = _validate(str(site))
    one_based = [out for out in lines if "looks 1-based" in out]
    assert status == 0 and len(one_based) == 1, lines  # once per profile, not per device
    assert one_based[0].startswith(f"warning: {profile}:7: signals[0].address: ")


def test_fleet_csv_mistake_names_the_csv_line(tmp_path: Path) -> None:
    _write(tmp_path, "m.yaml", MODBUS_HEAD + "  - {name: spindle_speed, group: fast, address: 0}\n")
    (tmp_path / "fleet.csv").write_text(
        "id,host,port,unit_id,enterprise,line\n"
        "press-1,10.0.0.1,502,1,ent-1,L1\n"
        "press-2,10.0.0.2,502,x,ent-1,L1\n"
    )
    site = _write(
        tmp_path, "site.yaml", SITE_HEAD + "fleets:\n  - {profile: m.yaml, csv: fleet.csv}\n"
    )
    status, lines = _validate(str(site))
    assert status == 1
    assert any(f"{tmp_path / 'fleet.csv'}:3: " in out for out in lines), lines


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", MODBUS_HEAD + "  - name: spindle_speed\n    address: [0\n")
    status, lines = _validate(str(path))
    assert status == 1
    assert any(out.startswith(f"error: {path}:") and "YAML syntax" in out for out in lines), lines


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_group_mistakes_are_reported_with_field_mistakes(tmp_path: Path) -> None:
    # pydantic skips model-level checks when a field is invalid; validate still reports both.
    path = _write(
        tmp_path,
        "p.yaml",
        MODBUS_HEAD
        + "  - {name: machine_state, group: fast, address: 0, states: {1: runin}}\n"
        + "  - {name: spindle_speed, group: medium, address: 1}\n"
        + "  - {name: spindle_speed, group: fast, address: 2}\n",
    )
    status, lines = _validate(str(path))
    assert status == 1
    assert any(out.startswith(f"error: {path}:7: signals[0].states.1: ") for out in lines), lines
    assert any(
        out.startswith(f"error: {path}:8: signals[1].group: 'medium' is not one of the groups")
        for out in lines
    ), lines
    assert any(
        out.startswith(f"error: {path}:9: signals[2].name: 'spindle_speed' appears twice")
        for out in lines
    ), lines


def test_abstract_base_extending_a_missing_file_is_an_error(tmp_path: Path) -> None:
    base = _write(tmp_path, "base.yaml", "id: tool_base\nabstract: true\nextends: nowhere.yaml\n")
    status, lines = _validate(str(base))
    assert status == 1
    assert any(
        out.startswith(f"error: {base}:3: extends: ") and "nowhere.yaml" in out for out in lines
    ), lines

"""The profile tools never mislead (issue 12): what `validate` passes runs, and the reverse.

Each test writes the files a service provider would and runs them through the same code the
commands run: booleans and enumeration texts as state keys, errors inside nested sections with
their real line and full path, `extends` by id beside the file, and units judged alike by
`shulian profile validate` and `shulian gateway run`.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.app import compile_devices, log_profile_warnings
from gateway.cli import app as gateway_app
from gateway.drivers.base import RawReading
from gateway.normalize import compile_device
from gateway.profile_cli import app as profile_app
from gateway.profile_cli import stand_in_device
from gateway.profiles.loader import ProfileResolver, load_site


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _validate(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(profile_app, ["validate", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output.splitlines()


def _states_of(path: Path, raws: list[object]) -> list[tuple[object, str]]:
    """What the gateway publishes for each raw state value read with the profile at ``path``."""
    loaded = ProfileResolver([path.parent]).load(str(path))
    normalizer = compile_device(stand_in_device(loaded.profile, source=str(path)))
    samples = normalizer.normalize([RawReading("machine_state", raw, 1) for raw in raws])
    return [(s.value, s.quality.value) for s in samples]


def test_boolean_state_keys_map_a_modbus_coil_and_a_register_bit(tmp_path: Path) -> None:
    coil = _write(
        tmp_path,
        "coil.yaml",
        """\
        id: coil_machine
        protocol: modbus
        signals:
          - name: machine_state
            table: coil
            address: 3
            type: bool
            states: {true: running, false: idle}
        """,
    )
    bit = _write(
        tmp_path,
        "bit.yaml",
        """\
        id: bit_machine
        protocol: modbus
        signals:
          - {name: machine_state, address: 1, type: bool, bit: 4, states: {True: running, False: idle}}
        """,
    )
    assert _validate(str(coil), str(bit))[0] == 0
    # The Modbus driver reads a coil or a bit as a bool.
    assert _states_of(coil, [True, False]) == [("running", "good"), ("idle", "good")]
    assert _states_of(bit, [True, False]) == [("running", "good"), ("idle", "good")]


def test_boolean_and_enumeration_text_keys_map_opcua_values(tmp_path: Path) -> None:
    boolean = _write(
        tmp_path,
        "boolean.yaml",
        """\
        id: opc_boolean
        protocol: opcua
        signals:
          - name: machine_state
            node_id: "ns=2;s=Machine.Running"
            states: {true: running, false: idle}
        """,
    )
    text = _write(
        tmp_path,
        "text.yaml",
        """\
        id: opc_text
        protocol: opcua
        signals:
          - name: machine_state
            node_id: "ns=2;s=Machine.Mode"
            states: {AUTO_RUN: running, MDI: setup, Ready: idle, 7: fault}
        """,
    )
    assert _validate(str(boolean), str(text))[0] == 0
    # The OPC UA driver hands a Boolean over as bool, a LocalizedText or String as str, and an
    # enumeration's value as int.
    assert _states_of(boolean, [True, False]) == [("running", "good"), ("idle", "good")]
    assert _states_of(text, ["AUTO_RUN", "mdi", " READY ", 7, "JOG"]) == [
        ("running", "good"),
        ("setup", "good"),
        ("idle", "good"),
        ("fault", "good"),
        (None, "bad"),
    ]


def test_two_keys_for_one_state_code_are_an_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "p.yaml",
        """\
        id: twice
        protocol: modbus
        signals:
          - name: machine_state
            address: 0
            states: {true: running, "1": idle}
        """,
    )
    status, lines = _validate(str(path))
    assert status == 1
    assert any(
        line.startswith(f"error: {path}:6: signals[0].states: ") and "same state code 1" in line
        for line in lines
    ), lines


def test_errors_in_a_nested_section_have_their_line_and_full_path_with_the_others(
    tmp_path: Path,
) -> None:
    path = _write(
        tmp_path,
        "p.yaml",
        """\
        id: opc_machine
        protocol: opcua
        opcua:
          security_mode: SignAndEncrypt
          password: secret
          timeout_s: -1
        signals:
          - name: spindle_speed
            node_id: "ns=2;s=Speed"
            scale: fast
          - name: coolant_temperature
            node_id: "ns=2;s=T"
            unit: degreesC
        """,
    )
    status, lines = _validate(str(path))
    assert status == 1
    for expected in (
        f"error: {path}:5: opcua.password: Extra inputs are not permitted",
        f"error: {path}:6: opcua.timeout_s: Input should be greater than 0",
        f"error: {path}:10: signals[0].scale: ",
        f"error: {path}:13: signals[1].unit: unit 'degreesC' is unknown",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, lines)


def test_modbus_section_errors_name_the_section(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "p.yaml",
        """\
        id: mb_machine
        protocol: modbus
        modbus:
          max_gap: 500
        signals:
          - {name: spindle_speed, address: 0}
        """,
    )
    status, lines = _validate(str(path))
    assert status == 1
    assert any(line.startswith(f"error: {path}:4: modbus.max_gap: ") for line in lines), lines


def test_extends_by_id_finds_a_base_beside_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "my_profiles"
    folder.mkdir()
    _write(
        folder,
        "press_base.yaml",
        """\
        id: my_press_base
        abstract: true
        signals:
          - {name: machine_state, states: {0: idle, 1: running}}
        """,
    )
    child = _write(
        folder,
        "press.yaml",
        """\
        id: my_press
        extends: my_press_base
        protocol: modbus
        signals:
          - {name: machine_state, address: 10}
        """,
    )
    monkeypatch.chdir(tmp_path)  # run from elsewhere, with no --profile-path
    assert _validate("my_profiles/press.yaml") == (0, ["1 file checked: 0 errors, 0 warnings"])
    loaded = ProfileResolver().load(str(child))
    assert loaded.profile.signals[0].states == {0: "idle", 1: "running"}
    # A site file beside the profiles uses them by id as well.
    site = _write(
        folder,
        "site.yaml",
        """\
        gateway: {enterprise: ent-a}
        devices:
          - {id: press-1, profile: my_press, endpoint: "tcp://127.0.0.1:502"}
        """,
    )
    assert load_site(site).devices[0].profile.id == "my_press"


SITE = """\
gateway: {{id: gw-1, enterprise: ent-a, data_dir: "{data}"}}
mqtt: {{url: "mqtt://127.0.0.1:1"}}
devices:
  - {{id: spindle-1, profile: spindle.yaml, endpoint: "tcp://127.0.0.1:502"}}
"""


def _site_with_unit(folder: Path, unit: str) -> Path:
    _write(
        folder,
        "spindle.yaml",
        f"""\
        id: spindle
        protocol: modbus
        signals:
          - {{name: spindle_speed, address: 0, unit: {unit}}}
          - {{name: coolant_temperature, address: 1, unit: degC}}
        """,
    )
    return _write(folder, "site.yaml", SITE.format(data=folder / "var"))


def test_a_unit_alias_is_accepted_with_the_same_warning_by_validate_and_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = _site_with_unit(tmp_path, "RPM")
    status, lines = _validate(str(site), str(tmp_path / "spindle.yaml"))
    warning = f"{tmp_path / 'spindle.yaml'}:4: signals[0].unit: unit 'RPM' is read as 'rpm'"
    assert status == 0 and any(line.startswith(f"warning: {warning}") for line in lines), lines
    # What `gateway run` does before it connects: load the site, compile every device.
    loaded = load_site(site)
    assert any(w.startswith(warning) for w in loaded.warnings), loaded.warnings
    normalizer = compile_devices(loaded.devices)["spindle-1"]
    [sample] = normalizer.normalize([RawReading("spindle_speed", 1200, 1)])
    assert (sample.value, sample.quality.value) == (1200, "good")
    with caplog.at_level(logging.WARNING, logger="gateway.app"):
        log_profile_warnings(loaded)  # what GatewayApp.start and each reload log
    assert any(warning in record.getMessage() for record in caplog.records), caplog.text


def test_a_unit_run_refuses_fails_validate_with_the_same_message(tmp_path: Path) -> None:
    site = _site_with_unit(tmp_path, "bar")
    status, lines = _validate(str(site))
    message = (
        f"{tmp_path / 'spindle.yaml'}:4: signals[0].unit: unit 'bar' does not convert to the "
        "canonical unit 'rpm' of spindle_speed"
    )
    assert status == 1 and any(message in line for line in lines), lines
    result = CliRunner().invoke(gateway_app, ["run", "--config", str(site)])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_errors_in_a_site_device_settings_have_their_line_and_full_path(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "m.yaml",
        """\
        id: m
        protocol: modbus
        signals:
          - {name: spindle_speed, address: 0}
        """,
    )
    site = _write(
        tmp_path,
        "site.yaml",
        """\
        gateway: {enterprise: ent-a}
        devices:
          - id: hob-1
            profile: m.yaml
            endpoint: tcp://127.0.0.1:502
            settings:
              timeout_s: -1
              max_gap: 500
          - id: rac-1
            profile: raceway_grinder
            endpoint: opc.tcp://127.0.0.1:4840
            settings:
              password: secret
        """,
    )
    status, lines = _validate(str(site))
    assert status == 1
    for expected in (
        f"error: {site}:7: devices[0].settings.timeout_s: Input should be greater than 0",
        f"error: {site}:8: devices[0].settings.max_gap: Input should be less than or equal to 125",
        f"error: {site}:13: devices[1].settings.password: unknown OPC UA setting",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, lines)


def test_driver_checks_still_run_beside_field_errors(tmp_path: Path) -> None:
    """A bad setting or signal no longer hides what the driver's check finds in the rest."""
    path = _write(
        tmp_path,
        "p.yaml",
        """\
        id: mb_machine
        protocol: modbus
        modbus:
          password: secret
          max_registers_per_request: 2
        signals:
          - {name: alarm_active, address: 3, type: bool, bit: 2, scale: 2}
          - {name: spindle_speed, address: 70000}
          - {name: spindle_load, address: 65535, type: float32}
          - {name: feed_rate, address: 10, type: float64}
        """,
    )
    status, lines = _validate(str(path))
    assert status == 1
    for expected in (
        f"error: {path}:4: modbus.password: Extra inputs are not permitted",
        f"error: {path}:8: signals[1].address: Input should be less than or equal to 65535",
        f"error: {path}:7: signals[0].scale: scale applies to numbers",
        f"error: {path}:9: signals[2].address: holding 65535 + 2 registers runs past 65535",
        f"error: {path}:10: signals[3].type: float64 takes 4 registers, more than "
        "max_registers_per_request 2",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, lines)

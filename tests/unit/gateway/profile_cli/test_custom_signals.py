"""Custom signals (issue 12): a profile declares its own signals in a vendor namespace.

``shulian profile validate`` names file, line and field of each mistake in a declaration or in
its use, all in one pass; a valid declaration is inherited through ``extends``, normalized like a
canonical signal (unit conversion, scale, deadband, states), and reaches the wire in the device's
status.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.drivers.base import RawReading
from gateway.normalize import compile_device
from gateway.pipeline import now_ms
from gateway.profile_cli import app
from gateway.profiles.loader import ProfileResolver
from gateway.profiles.models import DeviceConfig
from gateway.rbe import ReportByException
from gateway.scheduler import custom_signal_declarations
from wire.payloads import DeviceConnection, DeviceStatus, Quality
from wire.signals import SignalKind

HEAD = """\
id: vendor_press
protocol: modbus
custom_signals:
  - name: acme:fan_speed
    kind: gauge
    unit: rpm
    meaning: {en: Cabinet fan speed, zh: 电柜风扇转速}
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _validate(path: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output.splitlines()


# (case, declaration lines appended to HEAD's list, signals, line, field, part of the message)
CASES = [
    (
        "no_namespace",
        "  - {name: fan_speed, kind: gauge, meaning: {en: Fan, zh: 风扇}}\n",
        "",
        8,
        "custom_signals[1].name",
        "has no vendor namespace: write it as 'namespace:name'",
    ),
    (
        "bad_namespace",
        "  - {name: 'Acme-Co:fan', kind: gauge, meaning: {en: Fan, zh: 风扇}}\n",
        "",
        8,
        "custom_signals[1].name",
        "is not 'namespace:name' with lowercase letters",
    ),
    (
        "qualified_declaration",
        "  - {name: 'acme:pump.p2', kind: gauge, meaning: {en: Pump, zh: 泵}}\n",
        "",
        8,
        "custom_signals[1].name",
        "declare the base name without a qualifier ('acme:pump')",
    ),
    (
        "shadows_canonical_with_namespace",
        "  - {name: 'acme:spindle_speed', kind: gauge, unit: rpm, meaning: {en: S, zh: 主轴}}\n",
        "",
        8,
        "custom_signals[1].name",
        "shadows the canonical signal 'spindle_speed'",
    ),
    (
        "shadows_canonical_name",
        "  - {name: spindle_speed, kind: gauge, unit: rpm, meaning: {en: S, zh: 主轴}}\n",
        "",
        8,
        "custom_signals[1].name",
        "is a canonical signal: read it in `signals:`",
    ),
    (
        "unknown_kind",
        "  - name: 'acme:pump'\n    kind: level\n    meaning: {en: Pump, zh: 泵}\n",
        "",
        9,
        "custom_signals[1].kind",
        "Input should be 'gauge', 'counter', 'state', 'alarm' or 'text'",
    ),
    (
        "unit_alias",
        "  - name: 'acme:pump'\n    kind: gauge\n    unit: RPM\n    meaning: {en: P, zh: 泵}\n",
        "",
        10,
        "custom_signals[1].unit",
        "a canonical unit is written as pint does: 'rpm'",
    ),
    (
        "unit_unknown",
        "  - name: 'acme:pump'\n    kind: gauge\n    unit: litres_per_fortnight\n"
        "    meaning: {en: P, zh: 泵}\n",
        "",
        10,
        "custom_signals[1].unit",
        "unit 'litres_per_fortnight' is unknown",
    ),
    (
        "unit_on_a_state",
        "  - name: 'acme:door'\n    kind: state\n    unit: rpm\n    meaning: {en: D, zh: 门}\n",
        "",
        10,
        "custom_signals[1].unit",
        "a state signal takes no unit",
    ),
    (
        "missing_chinese_meaning",
        "  - name: 'acme:pump'\n    kind: gauge\n    meaning: {en: Pump}\n",
        "",
        10,
        "custom_signals[1].meaning.zh",
        "Field required",
    ),
    (
        "empty_english_meaning",
        "  - name: 'acme:pump'\n    kind: gauge\n    meaning: {en: ' ', zh: 泵}\n",
        "",
        10,
        "custom_signals[1].meaning.en",
        "at least 1 character",
    ),
    (
        "counts_as_a_gauge",
        "  - name: 'acme:parts'\n    kind: counter\n    meaning: {en: P, zh: 件}\n"
        "    counts_as: spindle_speed\n",
        "",
        11,
        "custom_signals[1].counts_as",
        "'spindle_speed' is not a canonical counter",
    ),
    (
        "counts_as_in_another_unit",
        "  - name: 'acme:energy'\n    kind: counter\n    unit: Wh\n    meaning: {en: E, zh: 电}\n"
        "    counts_as: active_energy\n",
        "",
        12,
        "custom_signals[1].counts_as",
        "'active_energy' is counted in 'kWh'; declare unit: 'kWh'",
    ),
    (
        "counts_as_what_the_profile_reads",
        "  - name: 'acme:parts'\n    kind: counter\n    meaning: {en: P, zh: 件}\n"
        "    counts_as: part_count\n",
        "  - {name: part_count, address: 5}\n",
        11,
        "custom_signals[1].counts_as",
        "the profile also reads 'part_count'; mapping another signal onto it would count it twice",
    ),
    (
        "declared_twice",
        "  - {name: 'acme:fan_speed', kind: gauge, unit: rpm, meaning: {en: F, zh: 风}}\n",
        "",
        8,
        "custom_signals[1].name",
        "'acme:fan_speed' is declared twice",
    ),
    (
        "undeclared_custom_signal",
        "",
        "  - {name: 'acme:pump_speed', address: 5}\n",
        10,
        "signals[1].name",
        "'acme:pump_speed' is neither canonical nor declared in custom_signals",
    ),
    (
        "neither_canonical_nor_namespaced",
        "",
        "  - {name: fan_speed, address: 5}\n",
        10,
        "signals[1].name",
        "or declare a custom signal such as 'acme:fan_speed'",
    ),
    (
        "kind_contradicts_declaration",
        "",
        "  - {name: 'acme:fan_speed.left', address: 5, kind: counter}\n",
        10,
        "signals[1].kind",
        "'acme:fan_speed.left' is declared a gauge, not a counter",
    ),
    (
        "states_on_a_declared_gauge",
        "",
        "  - {name: 'acme:fan_speed.left', address: 5, states: {1: running}}\n",
        10,
        "signals[1].states",
        "`states` maps codes of a state signal only",
    ),
    (
        "signal_unit_of_another_dimension",
        "",
        "  - {name: 'acme:fan_speed.left', address: 5, unit: bar}\n",
        10,
        "signals[1].unit",
        "does not convert to the canonical unit 'rpm' of acme:fan_speed.left",
    ),
]


@pytest.mark.parametrize(
    ("declaration", "signals", "line", "field", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_validate_names_file_line_and_field_of_each_mistake(
    tmp_path: Path, declaration: str, signals: str, line: int, field: str, message: str
) -> None:
    text = HEAD + declaration + "signals:\n  - {name: 'acme:fan_speed', address: 0}\n" + signals
    path = _write(tmp_path, "vendor_press.yaml", text)
    code, lines = _validate(path)
    assert code == 1, lines
    expected = f"error: {path}:{line}: {field}: "
    found = [entry for entry in lines if entry.startswith(expected)]
    assert found, f"no {expected!r} in {lines}"
    assert message in found[0], found[0]


def test_every_mistake_is_reported_in_one_pass(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "vendor_press.yaml",
        HEAD
        + "  - {name: fan_speed, kind: gauge, meaning: {en: F, zh: 风}}\n"
        + "  - {name: 'acme:pump', kind: level, meaning: {en: P}}\n"
        + "signals:\n  - {name: 'acme:fan_speed', address: 0, unit: bar}\n"
        + "  - {name: 'acme:valve', address: 1}\n",
    )
    code, lines = _validate(path)
    assert code == 1
    fields = sorted(entry.split(": ")[2] for entry in lines if entry.startswith("error:"))
    assert fields == [
        "custom_signals[1].name",
        "custom_signals[2].kind",
        "custom_signals[2].meaning.zh",
        "signals[0].unit",
        "signals[1].name",
    ], lines


def _extending_profile(folder: Path) -> Path:
    _write(
        folder,
        "vendor_base.yaml",
        HEAD
        + "  - name: 'acme:door'\n    kind: state\n    meaning: {en: Guard door, zh: 防护门}\n"
        + "  - name: 'acme:parts'\n    kind: counter\n    meaning: {en: Vendor parts, zh: 件}\n"
        + "  - name: 'acme:good'\n    kind: counter\n    meaning: {en: Good, zh: 合格}\n"
        + "    counts_as: good_count\n"
        + "signals:\n  - {name: 'acme:fan_speed', address: 0, unit: rps, scale: 0.01,"
        + " deadband: 5}\n",
    )
    return _write(
        folder,
        "vendor_press_l2.yaml",
        """\
        id: vendor_press_l2
        extends: vendor_press
        protocol: modbus
        custom_signals:
          - name: 'acme:fan_speed'
            meaning: {en: Drive cabinet fan speed, zh: 驱动柜风扇转速}
        signals:
          - {name: 'acme:fan_speed.left', address: 1}
          - {name: 'acme:door', address: 2, states: {0: idle, 1: running}}
          - {name: 'acme:parts', address: 3, type: uint32}
        """,
    )


def _device(path: Path) -> DeviceConfig:
    profile = ProfileResolver().load(str(path)).profile
    return DeviceConfig(
        id="press-9", enterprise="e", endpoint="tcp://127.0.0.1:502", unit_id=None, line="",
        profile=profile,
    )  # fmt: skip


def test_declarations_are_inherited_and_merge_by_name(tmp_path: Path) -> None:
    path = _extending_profile(tmp_path)
    code, lines = _validate(path)
    assert code == 0, lines
    profile = ProfileResolver().load(str(path)).profile
    fan = next(c for c in profile.custom_signals if c.name == "acme:fan_speed")
    assert (fan.kind, fan.unit, fan.meaning.en, fan.meaning.zh) == (
        SignalKind.GAUGE,
        "rpm",
        "Drive cabinet fan speed",  # the child's meaning replaced the base's, field by field
        "驱动柜风扇转速",
    )
    left = next(s for s in profile.signals if s.name == "acme:fan_speed.left")
    assert left.effective_kind is SignalKind.GAUGE and left.canonical_unit == "rpm"


def test_custom_signals_are_normalized_like_canonical_ones(tmp_path: Path) -> None:
    device = _device(_extending_profile(tmp_path))
    normalizer = compile_device(device)
    readings = [
        RawReading("acme:fan_speed", 4150, 1000),  # 41.50 r/s -> 2490 rpm
        RawReading("acme:fan_speed.left", 2400, 1000),  # already rpm: stays an integer
        RawReading("acme:door", 1, 1000),
        RawReading("acme:door", 7, 1001),
        RawReading("acme:parts", 12, 1000),
    ]
    out = {(s.signal, s.ts_ms): s for s in normalizer.normalize(readings)}
    assert out[("acme:fan_speed", 1000)].value == pytest.approx(2490.0)
    left = out[("acme:fan_speed.left", 1000)].value
    assert left == 2400 and type(left) is int
    assert out[("acme:door", 1000)].value == "running"
    assert out[("acme:door", 1001)].quality is Quality.BAD  # an unmapped state code, as usual
    assert out[("acme:parts", 1000)].value == 12
    # The declared deadband of a custom gauge applies: 3 rpm of noise is not reported.
    rbe = ReportByException(device.profile)
    first = normalizer.normalize([RawReading("acme:fan_speed", 4150, 1000)])
    noise = normalizer.normalize([RawReading("acme:fan_speed", 4155, 2000)])
    moved = normalizer.normalize([RawReading("acme:fan_speed", 4170, 3000)])
    assert [len(rbe.filter(batch)) for batch in (first, noise, moved)] == [1, 0, 1]


def test_the_device_status_declares_what_the_profile_reads(tmp_path: Path) -> None:
    device = _device(_extending_profile(tmp_path))
    declared = custom_signal_declarations(device)
    # acme:good is declared in the base but read by no signal: not announced.
    assert [c.name for c in declared] == ["acme:fan_speed", "acme:door", "acme:parts"]
    status = DeviceStatus(
        gateway="gw", device="press-9", connection=DeviceConnection.CONNECTED, ts_ms=now_ms(),
        custom_signals=declared,
    )  # fmt: skip
    again = DeviceStatus.model_validate_json(status.model_dump_json())
    assert again.custom_signals[0].meaning.zh == "驱动柜风扇转速"
    assert again.custom_signals[1].kind is SignalKind.STATE and again.custom_signals[1].unit == ""


def test_the_example_profile_validates_strictly_and_satisfies_the_editor_schema() -> None:
    """tests/data/profiles/servo_press_cabinet.yaml (docs/profiles.md's runnable example)."""
    import json

    import jsonschema
    from ruamel.yaml import YAML

    from gateway.profiles.loader import REPO_PROFILES

    example = Path(__file__).resolve().parents[3] / "data" / "profiles" / "servo_press_cabinet.yaml"
    result = CliRunner().invoke(app, ["validate", "--strict", str(example)])
    assert result.exit_code == 0, result.output
    schema = json.loads((REPO_PROFILES / "profile.schema.json").read_text(encoding="utf-8"))
    document = YAML(typ="safe").load(example.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    assert not [e.message for e in validator.iter_errors(document)]
    document["custom_signals"][0]["kind"] = "level"  # the schema checks declarations too
    assert list(validator.iter_errors(document))

"""Every kind of profile and site-file mistake is reported with file, line and field path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.profiles.loader import ProfileResolver, load_site

MODBUS_HEAD = """\
id: test_machine
protocol: modbus
groups:
  - name: fast
    interval_ms: 500
signals:
"""

# (case id, signals YAML appended to MODBUS_HEAD (or a whole file), expected line, field, message part)
PROFILE_CASES = [
    (
        "unknown_signal_name",
        "  - name: spindel_speed\n    group: fast\n    address: 0\n",
        7,
        "signals[0].name",
        "not in the canonical signal vocabulary",
    ),
    (
        "negative_address",
        "  - name: spindle_speed\n    group: fast\n    address: -1\n",
        9,
        "signals[0].address",
        "greater than or equal to 0",
    ),
    (
        "address_too_large",
        "  - name: spindle_speed\n    group: fast\n    address: 70000\n",
        9,
        "signals[0].address",
        "less than or equal to 65535",
    ),
    (
        "unknown_type",
        "  - name: spindle_speed\n    group: fast\n    address: 0\n    type: float16\n",
        10,
        "signals[0].type",
        "'float32'",
    ),
    (
        "unknown_state",
        "  - name: machine_state\n    group: fast\n    address: 0\n    states: {0: off, 1: runing}\n",
        10,
        "signals[0].states.1",
        "'running'",
    ),
    (
        "states_on_a_gauge",
        "  - name: spindle_speed\n    group: fast\n    address: 0\n    states: {0: off}\n",
        7,
        "signals[0]",
        "kind: state",
    ),
    (
        "coil_with_int_type",
        "  - name: alarm_active\n    group: fast\n    table: coil\n    address: 3\n    type: int16\n",
        7,
        "signals[0]",
        "single bits",
    ),
    (
        "string_without_length",
        "  - name: alarm_text\n    group: fast\n    address: 3\n    type: string\n",
        7,
        "signals[0]",
        "needs `length`",
    ),
    (
        "bit_on_a_number",
        "  - name: alarm_active\n    group: fast\n    address: 3\n    type: uint16\n    bit: 4\n",
        7,
        "signals[0]",
        "`bit` picks a bit",
    ),
    (
        "misspelt_field",
        "  - name: spindle_speed\n    group: fast\n    adress: 0\n",
        7,
        "signals[0].address",
        "Field required",
    ),
    (
        "extra_field",
        "  - name: spindle_speed\n    group: fast\n    address: 0\n    scaling: 2\n",
        10,
        "signals[0].scaling",
        "Extra inputs are not permitted",
    ),
    (
        "word_order_typo",
        "  - name: part_count\n    group: fast\n    address: 0\n    type: uint32\n    word_order: CADB\n",
        11,
        "signals[0].word_order",
        "'CDAB'",
    ),
    (
        "negative_deadband",
        "  - name: spindle_speed\n    group: fast\n    address: 0\n    deadband: -5\n",
        10,
        "signals[0].deadband",
        "greater than or equal to 0",
    ),
]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _problems(resolver: ProfileResolver, ref: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        resolver.load(ref)
    return info.value.problems


@pytest.mark.parametrize(
    ("case", "signals", "line", "field", "message"),
    PROFILE_CASES,
    ids=[c[0] for c in PROFILE_CASES],
)
def test_profile_mistake_names_file_line_and_field(
    tmp_path: Path, case: str, signals: str, line: int, field: str, message: str
) -> None:
    path = _write(tmp_path, f"{case}.yaml", MODBUS_HEAD + signals)
    problems = _problems(ProfileResolver([tmp_path]), path.name)
    assert any(p.startswith(f"{path}:{line}: {field}: ") and message in p for p in problems), (
        problems
    )


def test_unknown_group_names_the_signal(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "p.yaml",
        MODBUS_HEAD + "  - name: spindle_speed\n    group: slow\n    address: 0\n",
    )
    problems = _problems(ProfileResolver([tmp_path]), "p.yaml")
    assert any(
        f"{path}:" in p and "signals[0].group: 'slow' is not one of the groups" in p
        for p in problems
    ), problems


def test_duplicate_signal_is_reported(tmp_path: Path) -> None:
    body = "  - {name: spindle_speed, group: fast, address: 0}\n  - {name: spindle_speed, group: fast, address: 1}\n"
    problems = _problems(
        ProfileResolver([tmp_path]), _write(tmp_path, "p.yaml", MODBUS_HEAD + body).name
    )
    assert any("signals[1].name: 'spindle_speed' appears twice" in p for p in problems), problems


def test_unknown_protocol_lists_the_known_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", "id: x\nprotocol: profinet\nsignals: []\n")
    problems = _problems(ProfileResolver([tmp_path]), "p.yaml")
    assert any(
        p.startswith(f"{path}:2: protocol: ") and "'modbus'" in p and "'opcua'" in p
        for p in problems
    ), problems


def test_opcua_signal_needs_exactly_one_address(tmp_path: Path) -> None:
    text = "id: x\nprotocol: opcua\nsignals:\n  - name: spindle_speed\n    node_id: ns=2;s=A\n    browse_path: 0:Objects/2:A\n"
    path = _write(tmp_path, "p.yaml", text)
    problems = _problems(ProfileResolver([tmp_path]), "p.yaml")
    assert any(
        p.startswith(f"{path}:4: signals[0]: ") and "exactly one of" in p for p in problems
    ), problems


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", MODBUS_HEAD + "  - name: spindle_speed\n    address: [0\n")
    problems = _problems(ProfileResolver([tmp_path]), "p.yaml")
    assert problems[0].startswith(f"{path}:") and "YAML syntax" in problems[0]


def test_extends_cycle_is_reported(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "id: a\nextends: b.yaml\nprotocol: modbus\nsignals: []\n")
    _write(tmp_path, "b.yaml", "id: b\nextends: a.yaml\nprotocol: modbus\nsignals: []\n")
    problems = _problems(ProfileResolver([tmp_path]), "a.yaml")
    assert any("extends: cycle" in p for p in problems), problems


def test_all_mistakes_are_reported_at_once(tmp_path: Path) -> None:
    body = "".join(case[1].replace("- name", "- name", 1) for case in PROFILE_CASES[:3])
    # three signals with three different mistakes (their names differ only in the first two cases)
    path = _write(
        tmp_path,
        "p.yaml",
        MODBUS_HEAD
        + body.replace(
            "spindle_speed\n    group: fast\n    address: 70000",
            "feed_rate\n    group: fast\n    address: 70000",
        ),
    )
    problems = _problems(ProfileResolver([tmp_path]), path.name)
    assert len(problems) >= 3, problems


def test_child_profile_error_points_into_the_child_file(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "base.yaml",
        MODBUS_HEAD
        + "  - {name: spindle_speed, group: fast, address: 0}\n  - {name: part_count, group: fast, address: 2, type: uint32}\n",
    )
    child = _write(
        tmp_path,
        "child.yaml",
        "id: child\nextends: base.yaml\nsignals:\n  - name: part_count\n    address: -5\n",
    )
    problems = _problems(ProfileResolver([tmp_path]), "child.yaml")
    assert any(p.startswith(f"{child}:5: signals[1].address: ") for p in problems), problems


def test_child_overrides_merge_field_by_field(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "base.yaml",
        MODBUS_HEAD
        + "  - {name: spindle_speed, group: fast, address: 0, scale: 0.1}\n  - {name: part_count, group: fast, address: 2, type: uint32}\n",
    )
    _write(
        tmp_path,
        "child.yaml",
        "id: child\nextends: base.yaml\nsignals:\n  - {name: part_count, address: 20}\n  - {name: spindle_speed, remove: true}\n",
    )
    profile = ProfileResolver([tmp_path]).load("child.yaml").profile
    assert [(s.name, s.address, s.type.value) for s in profile.signals] == [
        ("part_count", 20, "uint32")
    ]  # type: ignore[attr-defined]
    assert profile.id == "child" and profile.group("fast").interval_ms == 500


SITE_HEAD = "gateway: {id: gw-1, enterprise: ent-1}\n"


def test_site_device_mistakes_name_file_line_and_field(tmp_path: Path) -> None:
    _write(tmp_path, "m.yaml", MODBUS_HEAD + "  - {name: spindle_speed, group: fast, address: 0}\n")
    site = _write(
        tmp_path,
        "site.yaml",
        SITE_HEAD
        + "devices:\n"
        + "  - {id: lathe-1, profile: m.yaml, endpoint: 'tcp://127.0.0.1:502', unit_id: 300}\n"
        + "  - {id: 'bad id', profile: m.yaml, endpoint: 'tcp://127.0.0.1:502'}\n"
        + "  - {id: lathe-3, profile: nowhere.yaml, endpoint: 'tcp://127.0.0.1:502'}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_site(site)
    problems = info.value.problems
    assert any(p.startswith(f"{site}:3: devices[0].unit_id: ") for p in problems), problems
    assert any(p.startswith(f"{site}:4: devices[1].id: ") for p in problems), problems
    assert any(
        p.startswith(f"{site}:5: devices[2].profile: ") and "nowhere.yaml" in p for p in problems
    ), problems


def test_fleet_csv_mistakes_name_the_csv_line(tmp_path: Path) -> None:
    _write(tmp_path, "m.yaml", MODBUS_HEAD + "  - {name: spindle_speed, group: fast, address: 0}\n")
    (tmp_path / "fleet.csv").write_text(
        "id,host,port,unit_id\npress-1,127.0.0.1,502,1\npress-2,,502,2\n"
    )
    site = _write(
        tmp_path, "site.yaml", SITE_HEAD + "fleets:\n  - {profile: m.yaml, csv: fleet.csv}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_site(site)
    assert any(
        p.startswith(f"{tmp_path / 'fleet.csv'}:3: ") and "host" in p for p in info.value.problems
    ), info.value.problems

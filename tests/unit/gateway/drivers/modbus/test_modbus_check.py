"""``ModbusDriver.check`` finds every kind of Modbus mistake, each with its field path."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from gateway.drivers.modbus.driver import ModbusDriver, check_device, device_bus_key
from gateway.drivers.modbus.models import ModbusProfile
from gateway.errors import ConfigError
from gateway.profiles.loader import load_site
from gateway.profiles.models import DeviceConfig

GOOD_SIGNALS: list[dict[str, Any]] = [
    {"name": "machine_state", "address": 0, "states": {0: "off", 1: "running"}},
    {"name": "spindle_speed", "address": 2, "type": "float32"},
    {"name": "part_count", "address": 4, "type": "uint32"},
]


def device(
    signals: list[dict[str, Any]] | None = None,
    *,
    endpoint: str = "tcp://10.2.0.7:502",
    unit_id: int | None = 4,
    settings: dict[str, Any] | None = None,
    modbus: dict[str, Any] | None = None,
    groups: list[dict[str, Any]] | None = None,
) -> DeviceConfig:
    profile: dict[str, Any] = {
        "id": "hobber",
        "protocol": "modbus",
        "signals": GOOD_SIGNALS if signals is None else signals,
    }
    if modbus:
        profile["modbus"] = modbus
    if groups:
        profile["groups"] = groups
    return DeviceConfig(
        id="hobber-03",
        enterprise="acme",
        endpoint=endpoint,
        unit_id=unit_id,
        line="",
        profile=ModbusProfile.model_validate(profile),
        settings=settings or {},
    )


def problems_at(config: DeviceConfig) -> dict[str, tuple[str, str]]:
    return {p.where: (p.severity, p.message) for p in ModbusDriver.check(config)}


def test_check_accepts_a_good_device() -> None:
    assert ModbusDriver.check(device()) == []
    assert ModbusDriver.check(device(endpoint="rtu:///dev/ttyUSB0?baudrate=19200&parity=e")) == []


# (case, device, field path, severity, words in the message)
CASES: list[tuple[str, DeviceConfig, str, str, str]] = [
    (
        "value runs past the last register",
        device([{"name": "part_count", "address": 65534, "type": "uint64"}]),
        "signals[0].address",
        "error",
        "holding 65534 + 4 registers runs past 65535",
    ),
    (
        "value larger than one request",
        device(
            [{"name": "program_name", "address": 0, "type": "string", "length": 40}],
            modbus={"max_registers_per_request": 32},
        ),
        "signals[0].length",
        "error",
        "more than max_registers_per_request 32",
    ),
    (
        "float64 on a device limited to two registers",
        device(
            [{"name": "active_energy", "address": 0, "type": "float64"}],
            modbus={"max_registers_per_request": 2},
        ),
        "signals[0].type",
        "error",
        "cannot be split across requests",
    ),
    (
        "one-based holding address",
        device([{"name": "spindle_speed", "address": 40001}]),
        "signals[0].address",
        "warning",
        "40001 looks 1-based; holding-register offsets start at 0",
    ),
    (
        "one-based input address",
        device([{"name": "spindle_speed", "address": 30010, "table": "input"}]),
        "signals[0].address",
        "warning",
        "input-register offsets start at 0 (register 30010 is usually address 9)",
    ),
    (
        "overlapping signals",
        device(
            [
                {"name": "spindle_speed", "address": 10, "type": "float32"},
                {"name": "spindle_load", "address": 11},
            ]
        ),
        "signals[1].address",
        "warning",
        "holding 11..11 overlaps signals[0] (spindle_speed) at 10..11",
    ),
    (
        "scale on a bool",
        device([{"name": "alarm_active", "address": 3, "type": "bool", "bit": 2, "scale": 10}]),
        "signals[0].scale",
        "error",
        "scale applies to numbers",
    ),
    (
        "float state code",
        device([{"name": "machine_state", "address": 0, "type": "float32"}]),
        "signals[0].type",
        "warning",
        "state codes are integers",
    ),
    (
        "string state keyed by numbers",
        device(
            [
                {
                    "name": "machine_state",
                    "address": 0,
                    "type": "string",
                    "length": 4,
                    "states": {1: "running"},
                }
            ]
        ),
        "signals[0].states",
        "warning",
        "key `states` by the texts the device sends",
    ),
    (
        "unknown scheme",
        device(endpoint="modbus://10.2.0.7:502"),
        "device.endpoint",
        "error",
        "scheme 'modbus'; use tcp://host:502",
    ),
    (
        "endpoint without host",
        device(endpoint="tcp://:502"),
        "device.endpoint",
        "error",
        "has no host",
    ),
    (
        "serial port after two slashes",
        device(endpoint="rtu://dev/ttyUSB0"),
        "device.endpoint",
        "error",
        "rtu:///dev/dev/ttyUSB0",
    ),
    (
        "unknown serial setting",
        device(endpoint="rtu:///dev/ttyUSB0?baud=9600"),
        "device.endpoint",
        "error",
        "unknown serial setting(s) ['baud']",
    ),
    (
        "bad parity",
        device(endpoint="rtu:///dev/ttyUSB0?parity=X"),
        "device.endpoint",
        "error",
        "serial setting parity",
    ),
    (
        "rtu without unit id",
        device(endpoint="rtu+tcp://10.2.0.50:4001", unit_id=None),
        "device.unit_id",
        "error",
        "needs a unit_id in 1..247",
    ),
    (
        "rtu broadcast unit id",
        device(endpoint="rtu:///dev/ttyUSB0", unit_id=0),
        "device.unit_id",
        "error",
        "broadcast address",
    ),
    (
        "rtu unit id above 247",
        device(endpoint="rtu:///dev/ttyUSB0", unit_id=250),
        "device.unit_id",
        "error",
        "out of range; RTU uses 1..247",
    ),
    (
        "unknown per-device setting",
        device(settings={"timeout": 2}),
        "device.settings.timeout",
        "error",
        "Extra inputs are not permitted",
    ),
    (
        "invalid per-device setting",
        device(settings={"max_registers_per_request": 200}),
        "device.settings.max_registers_per_request",
        "error",
        "less than or equal to 125",
    ),
    (
        "pauses longer than the interval",
        device(
            [
                {"name": "spindle_speed", "address": 0, "group": "fast"},
                {"name": "spindle_load", "address": 100, "group": "fast"},
            ],
            groups=[{"name": "fast", "interval_ms": 100}],
            settings={"request_pause_ms": 80},
        ),
        "groups[0].interval_ms",
        "warning",
        "at least 160 ms, longer than interval_ms 100",
    ),
    (
        "group without signals",
        device(
            [{"name": "spindle_speed", "address": 0, "group": "fast"}],
            groups=[{"name": "fast"}, {"name": "slow"}],
        ),
        "groups[1].name",
        "warning",
        "group 'slow' has no signals",
    ),
]


@pytest.mark.parametrize(
    ("config", "where", "severity", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_check_names_the_field_of_each_mistake(
    config: DeviceConfig, where: str, severity: str, words: str
) -> None:
    found = problems_at(config)
    assert where in found, found
    assert found[where][0] == severity
    assert words in found[where][1]


def test_check_reports_all_problems_at_once() -> None:
    config = device(
        [
            {"name": "spindle_speed", "address": 40001},
            {"name": "part_count", "address": 65535, "type": "uint32"},
            {"name": "alarm_active", "address": 3, "type": "bool", "offset": 1},
        ],
        endpoint="rtu:///dev/ttyUSB0",
        unit_id=None,
        settings={"retries": -1},
    )
    wheres = sorted(p.where for p in check_device(config))
    assert wheres == [
        "device.settings.retries",
        "device.unit_id",
        "signals[0].address",
        "signals[1].address",
        "signals[2].offset",
    ]


def test_check_does_not_flag_bits_of_one_status_word() -> None:
    config = device(
        [
            {"name": "alarm_code", "address": 5},
            {"name": "alarm_active", "address": 5, "type": "bool", "bit": 0},
            {"name": "alarm_active.door", "address": 5, "type": "bool", "bit": 1},
        ]
    )
    assert check_device(config) == []
    twice = device(
        [
            {"name": "alarm_active", "address": 5, "type": "bool", "bit": 1},
            {"name": "alarm_active.door", "address": 5, "type": "bool", "bit": 1},
        ]
    )
    assert [p.where for p in check_device(twice)] == ["signals[1].address"]


def test_driver_refuses_to_build_a_device_with_errors() -> None:
    import logging

    from gateway.drivers.base import DriverMetrics

    with pytest.raises(ConfigError, match=r"device\.unit_id"):
        ModbusDriver(
            device(endpoint="rtu:///dev/ttyUSB0", unit_id=None),
            logging.LoggerAdapter(logging.getLogger("test")),
            DriverMetrics(),
        )


def test_bus_key_is_shared_by_units_behind_one_endpoint() -> None:
    assert device_bus_key(device(endpoint="tcp://10.2.0.7:502", unit_id=1)) == device_bus_key(
        device(endpoint="TCP://10.2.0.7:502/", unit_id=2)
    )
    assert device_bus_key(device(endpoint="tcp://10.2.0.7")) == "tcp://10.2.0.7:502"
    assert (
        device_bus_key(device(endpoint="rtu:///dev/ttyUSB0?baudrate=9600")) == "rtu:///dev/ttyUSB0"
    )
    assert ModbusDriver.bus_key(device(endpoint="tcp://h:1")) == "tcp://h:1", "works on the class"
    assert device_bus_key(device(endpoint="rtu+tcp://10.2.0.50:4001")) != device_bus_key(
        device(endpoint="tcp://10.2.0.50:4001")
    )


def test_site_loading_reports_modbus_problems_with_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "hobber.yaml").write_text(
        textwrap.dedent(
            """\
            id: hobber_test
            protocol: modbus
            signals:
              - name: spindle_speed
                address: 0
              - name: program_name
                address: 10
                type: string
                length: 100
            modbus:
              max_registers_per_request: 60
            """
        ),
        encoding="utf-8",
    )
    site = tmp_path / "site.yaml"
    site.write_text(
        textwrap.dedent(
            """\
            gateway:
              enterprise: acme
            devices:
              - id: hobber-03
                profile: hobber.yaml
                endpoint: rtu+tcp://10.2.0.50:4001
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_site(site)
    problems = caught.value.problems
    assert any(
        p.startswith(f"{tmp_path / 'hobber.yaml'}:9: signals[1].length: ")
        and "more than max_registers_per_request 60" in p
        for p in problems
    ), problems
    # A field the entry lacks points at the entry, with its full path.
    assert any(
        p.startswith(f"{site}:4: devices[0].unit_id: ") and "needs a unit_id" in p for p in problems
    ), problems


def test_a_signal_inside_an_unreadable_range_is_an_error() -> None:
    config = device(modbus={"unreadable": [{"table": "holding", "start": 3, "end": 5}]})
    severity, message = problems_at(config)["signals[2].address"]  # part_count at 4..5
    assert severity == "error"
    assert "holding 4..5 lies in modbus.unreadable[0] (holding 3..5)" in message


def test_a_string_state_keyed_by_texts_is_not_flagged() -> None:
    config = device(
        [
            {
                "name": "machine_state",
                "address": 0,
                "type": "string",
                "length": 4,
                "states": {"AUTO": "running", "STOP": "idle"},
            }
        ]
    )
    assert ModbusDriver.check(config) == []

"""Normalization: scaling, unit conversion through pint (compiled once), states, quality."""

from __future__ import annotations

import pytest
from gateway_fakes import make_device, make_profile

from gateway.drivers.base import RawReading
from gateway.errors import ConfigError
from gateway.normalize import compile_device, linear_conversion
from wire.payloads import Quality


def normalize(signals: list[dict], readings: list[tuple[str, object]], **kw: object) -> list:
    device = make_device("d1", profile=make_profile(signals=signals))
    normalizer = compile_device(device)
    return normalizer.normalize([RawReading(name, raw, 1000, **kw) for name, raw in readings])  # type: ignore[arg-type]


def test_scale_offset_then_unit_conversion_to_canonical() -> None:
    # Fahrenheit tenths: raw 770 * 0.1 = 77 degF = 25 degC.
    [sample] = normalize(
        [{"name": "coolant_temperature", "address": 0, "scale": 0.1, "unit": "degF"}],
        [("coolant_temperature", 770)],
    )
    assert sample.value == pytest.approx(25.0)
    assert sample.quality is Quality.GOOD
    assert isinstance(sample.value, float)


def test_energy_counter_in_wh_becomes_kwh_and_stays_numeric() -> None:
    samples = normalize(
        [
            {"name": "active_energy", "address": 0, "type": "uint32", "unit": "Wh"},
            {"name": "part_count", "address": 2, "type": "uint32"},
        ],
        [("active_energy", 123456), ("part_count", 42)],
    )
    assert samples[0].value == pytest.approx(123.456)
    assert samples[1].value == 42 and type(samples[1].value) is int


def test_percent_to_dimensionless_and_kvar_to_canonical() -> None:
    samples = normalize(
        [
            {"name": "power_factor", "address": 0, "unit": "percent"},
            {"name": "reactive_power", "address": 1, "unit": "var"},
        ],
        [("power_factor", 95), ("reactive_power", 2500)],
    )
    assert samples[0].value == pytest.approx(0.95)
    assert samples[1].value == pytest.approx(2.5)


def test_state_codes_map_to_machine_states_and_unknown_code_is_bad() -> None:
    signals = [{"name": "machine_state", "address": 0, "states": {0: "off", 2: "running"}}]
    good, bad = normalize(signals, [("machine_state", 2), ("machine_state", 7)])
    assert good.value == "running" and good.quality is Quality.GOOD
    assert bad.value is None and bad.quality is Quality.BAD


def test_unknown_state_code_reason_is_kept_for_diagnosis() -> None:
    device = make_device(
        "d1",
        profile=make_profile(
            signals=[{"name": "machine_state", "address": 0, "states": {0: "off"}}]
        ),
    )
    normalizer = compile_device(device)
    normalizer.normalize([RawReading("machine_state", 9, 1)])
    assert normalizer.last_bad_reason["machine_state"] == "unknown state code 9"
    assert normalizer.bad_samples == 1


def test_bad_quality_and_none_and_nan_become_bad_samples() -> None:
    signals = [{"name": "spindle_speed", "address": 0}]
    device = make_device("d1", profile=make_profile(signals=signals))
    normalizer = compile_device(device)
    out = normalizer.normalize(
        [
            RawReading("spindle_speed", 5, 1, quality=Quality.BAD, reason="exception 2"),
            RawReading("spindle_speed", None, 2),
            RawReading("spindle_speed", float("nan"), 3),
            RawReading("spindle_speed", 7, 4, quality=Quality.UNCERTAIN),
        ]
    )
    assert [s.quality for s in out] == [Quality.BAD, Quality.BAD, Quality.BAD, Quality.UNCERTAIN]
    assert [s.value for s in out] == [None, None, None, 7.0]


def test_bools_alarms_and_text() -> None:
    samples = normalize(
        [
            {"name": "alarm_active", "address": 0, "type": "bool", "table": "coil"},
            {"name": "alarm_code", "address": 1},
            {"name": "program_name", "address": 2, "type": "string", "length": 4},
        ],
        [("alarm_active", True), ("alarm_code", 17), ("program_name", "O1234")],
    )
    assert [s.value for s in samples] == [True, 17, "O1234"]


def test_signals_the_profile_lacks_are_skipped_and_counted() -> None:
    device = make_device("d1")
    normalizer = compile_device(device)
    assert normalizer.normalize([RawReading("nonexistent", 1, 1)]) == []
    assert normalizer.unknown_signals == 1


def test_unit_of_wrong_dimension_is_a_config_error_naming_the_signal() -> None:
    device = make_device(
        "d9", profile=make_profile(signals=[{"name": "spindle_speed", "address": 0, "unit": "kg"}])
    )
    with pytest.raises(ConfigError) as info:
        compile_device(device)
    text = str(info.value)
    assert "d9" in text and "spindle_speed" in text and "'kg'" in text and "rpm" in text


def test_unknown_unit_is_a_config_error() -> None:
    device = make_device(
        "d9",
        profile=make_profile(signals=[{"name": "motor_current", "address": 0, "unit": "amperez"}]),
    )
    with pytest.raises(ConfigError, match="amperez"):
        compile_device(device)


def test_every_canonical_unit_is_known_to_pint() -> None:
    from wire.signals import SIGNALS

    for spec in SIGNALS.values():
        factor, shift = linear_conversion(spec.unit, spec.unit)
        assert (factor, shift) == (1.0, 0.0), spec.name


def test_conversion_factor_is_computed_once_not_per_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.normalize as normalize_module

    device = make_device(
        "d1",
        profile=make_profile(signals=[{"name": "stone_pressure", "address": 0, "unit": "bar"}]),
    )
    normalizer = compile_device(device)

    def forbidden(*_a: object) -> None:
        raise AssertionError("pint used on the hot path")

    monkeypatch.setattr(normalize_module, "unit_registry", forbidden)
    [sample] = normalizer.normalize([RawReading("stone_pressure", 5, 1)])
    assert sample.value == pytest.approx(0.5)


def test_integer_readings_stay_integers_unless_scaled_or_converted() -> None:
    samples = normalize(
        [
            {"name": "spindle_speed", "address": 0},
            {"name": "coolant_temperature", "address": 1, "type": "int16"},
            {"name": "feed_rate", "address": 2, "scale": 10},
            {"name": "spindle_load", "address": 3, "scale": 0.1},
            {"name": "active_power", "address": 4, "unit": "W"},
            {"name": "cycle_time", "address": 5, "unit": "min"},
        ],
        [
            ("spindle_speed", 168),
            ("coolant_temperature", -12),
            ("feed_rate", 25),
            ("spindle_load", 455),
            ("active_power", 2500),
            ("cycle_time", 2),
        ],
    )
    values = [s.value for s in samples]
    assert values == [168, -12, 250, pytest.approx(45.5), pytest.approx(2.5), 120]
    # 168, not 168.0, on the wire; an integral scale or conversion factor (min -> s) keeps ints.
    assert [type(v) for v in values] == [int, int, int, float, float, int]

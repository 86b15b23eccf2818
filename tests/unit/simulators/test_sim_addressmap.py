"""Address maps: encodings, word orders, scaling, unit conversions and map consistency."""

from __future__ import annotations

import struct

import pint
import pytest

from simulators.addressmap import (
    UNIT_CONVERSIONS,
    ModbusMap,
    Register,
    RegisterType,
    Table,
    Variable,
    VariantType,
    WordOrder,
)
from simulators.errors import MapError
from simulators.machines import KINDS
from wire import MachineState, lookup_signal

T = RegisterType
UNITS = pint.UnitRegistry()  # building a registry takes ~0.2 s: share one


def _reg(**kwargs: object) -> Register:
    base: dict[str, object] = {"table": Table.HOLDING, "address": 0, "meaning": "test"}
    base.update(kwargs)
    return Register(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (WordOrder.ABCD, [0x3F9D, 0xF3B6]),
        (WordOrder.CDAB, [0xF3B6, 0x3F9D]),
        (WordOrder.BADC, [0x9D3F, 0xB6F3]),
        (WordOrder.DCBA, [0xB6F3, 0x9D3F]),
    ],
)
def test_float32_word_orders(order: WordOrder, expected: list[int]) -> None:
    field = _reg(type=T.FLOAT32, word_order=order, signal="feed_rate", unit="mm/min")
    assert struct.pack(">f", 1.234).hex() == "3f9df3b6"
    assert field.pack(field.to_raw(1.234)) == expected


def test_uint64_cdab_puts_the_least_significant_word_first() -> None:
    field = _reg(type=T.UINT64, word_order=WordOrder.CDAB, key="x", unit="")
    assert field.pack(0x0001_0002_0003_0004) == [4, 3, 2, 1]


def test_scaled_integer_rounds_to_the_register_resolution() -> None:
    field = _reg(type=T.INT16, signal="coolant_temperature", unit="degC", scale=0.1)
    raw = field.to_raw(23.46)
    assert raw == 235
    assert field.served(raw) == pytest.approx(23.5)
    assert field.pack(field.to_raw(-1.25)) == [0xFFF4]  # -12 two's complement (round half even)


def test_scaled_integers_saturate_instead_of_overflowing() -> None:
    field = _reg(type=T.UINT16, signal="spindle_load", unit="percent", scale=0.1)
    assert field.to_raw(7000.0) == 65535
    assert field.to_raw(-3.0) == 0


def test_wrapping_counter_rolls_over_and_serves_the_register_value() -> None:
    field = _reg(type=T.UINT16, signal="stroke_count", wraps=True)
    assert field.to_raw(65_535) == 65_535
    assert field.to_raw(65_537) == 1
    assert field.served(1) == 1


def test_unit_conversion_with_an_offset() -> None:
    field = _reg(type=T.UINT16, signal="die_temperature", unit="K", scale=0.1)
    raw = field.to_raw(230.27)
    assert raw == 5034  # 503.42 K in 0.1 K
    assert field.served(raw) == pytest.approx(230.25)


def test_state_codes_and_strings() -> None:
    state = _reg(type=T.UINT16, signal="machine_state", states={7: MachineState.FAULT})
    assert state.to_raw("fault") == 7
    assert state.served(7) == "fault"
    text = _reg(type=T.STRING, length=3, signal="program_name")
    assert text.pack(text.to_raw("ABCDEFGH")) == [0x4142, 0x4344, 0x4546]
    assert text.pack(text.to_raw("AB")) == [0x4142, 0, 0]


def test_unscaled_counters_stay_integers() -> None:
    counter = Variable(path="P/C", type=VariantType.UINT32, signal="part_count", meaning="c")
    assert counter.served(counter.to_raw(41)) == 41
    assert isinstance(counter.served(41), int)


def test_float_variables_are_narrowed_to_single_precision() -> None:
    variable = Variable(
        path="S/L", type=VariantType.FLOAT, signal="spindle_load", unit="percent", meaning="load"
    )
    raw = variable.to_raw(47.3)
    assert raw == struct.unpack(">f", struct.pack(">f", 47.3))[0]
    assert raw != 47.3


@pytest.mark.parametrize(("unit", "canonical"), sorted(UNIT_CONVERSIONS))
def test_every_hand_written_conversion_agrees_with_pint(unit: str, canonical: str) -> None:
    registry = UNITS
    factor, shift = UNIT_CONVERSIONS[(unit, canonical)]
    for value in (0.0, 1.0, 250.0):
        expected = registry.Quantity(value, unit).to(canonical).magnitude
        assert value * factor + shift == pytest.approx(expected, rel=1e-12, abs=1e-9)


def test_every_map_unit_is_pint_convertible_to_the_canonical_unit() -> None:
    registry = UNITS
    for kind in KINDS.values():
        for field in kind.address_map.fields():
            if not field.signal or not field.unit:
                continue
            spec = lookup_signal(field.signal)
            assert spec is not None, field.signal
            if spec.unit:
                registry.Quantity(1.0, field.unit).to(spec.unit)  # raises if not convertible


def test_overlapping_registers_are_refused() -> None:
    with pytest.raises(MapError, match="overlaps"):
        ModbusMap(
            (
                _reg(address=10, type=T.FLOAT32, key="a"),
                _reg(address=11, type=T.UINT16, key="b"),
            )
        )


def test_unknown_signal_and_misplaced_bool_are_refused_together() -> None:
    with pytest.raises(MapError) as caught:
        ModbusMap(
            (
                _reg(address=1, type=T.UINT16, signal="spindle_sped"),
                _reg(address=2, type=T.BOOL, key="door"),
            )
        )
    assert "not a canonical signal" in str(caught.value)
    assert "does not belong in the holding table" in str(caught.value)


def test_bits_may_share_a_register_but_not_a_bit() -> None:
    ModbusMap((_reg(type=T.BIT, bit=0, key="a"), _reg(type=T.BIT, bit=1, key="b")))
    with pytest.raises(MapError, match="bit used twice"):
        ModbusMap((_reg(type=T.BIT, bit=3, key="a"), _reg(type=T.BIT, bit=3, key="b")))


def test_the_maps_cover_what_the_issue_asks_for() -> None:
    registers = [
        f for k in KINDS.values() for f in k.address_map.fields() if isinstance(f, Register)
    ]
    types = {f.type for f in registers}
    assert {T.INT16, T.UINT16, T.INT32, T.UINT32, T.FLOAT32, T.FLOAT64, T.BIT, T.STRING} <= types
    assert any(f.word_order == WordOrder.CDAB and f.size == 2 for f in registers)
    assert any(f.wraps and f.type == T.UINT16 for f in registers)
    assert any(f.scale != 1 and f.type in (T.INT16, T.UINT16) for f in registers)
    assert {f.table for f in registers} == set(Table)
    variables = [
        f for k in KINDS.values() for f in k.address_map.fields() if isinstance(f, Variable)
    ]
    assert {
        VariantType.DOUBLE,
        VariantType.FLOAT,
        VariantType.INT32,
        VariantType.UINT32,
        VariantType.BOOLEAN,
        VariantType.STRING,
    } <= {v.type for v in variables}

"""The read planner covers every signal once, in as few requests as the device's limits allow."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.drivers.modbus.models import (
    AddressRange,
    DataType,
    ModbusProfile,
    ModbusSettings,
    ModbusSignal,
    Table,
)
from gateway.drivers.modbus.planner import (
    BIT_TABLES,
    PlannedRequest,
    gap_limit,
    plan_profile,
    plan_reads,
    request_limit,
)

REGISTER_TYPES = [
    (DataType.UINT16, None),
    (DataType.INT32, None),
    (DataType.FLOAT64, None),
    (DataType.STRING, 3),
    (DataType.BOOL, None),
]


def sig(
    index: int,
    address: int,
    type_: DataType = DataType.UINT16,
    table: Table = Table.HOLDING,
    length: int | None = None,
) -> ModbusSignal:
    return ModbusSignal(
        name=f"axis_temperature.s{index}", address=address, type=type_, table=table, length=length
    )


def limits(registers: int = 125, gap: int = 16, bits: int = 2000) -> ModbusSettings:
    return ModbusSettings(
        max_registers_per_request=registers, max_gap=gap, max_bits_per_request=bits
    )


@st.composite
def signal_lists(draw: st.DrawFn, overlapping: bool = True) -> list[ModbusSignal]:
    count = draw(st.integers(1, 25))
    signals = []
    next_free = {t: draw(st.integers(0, 50)) for t in Table}
    for index in range(count):
        table = draw(st.sampled_from(list(Table)))
        if table in BIT_TABLES:
            type_, length = DataType.BOOL, None
        else:
            type_, length = draw(st.sampled_from(REGISTER_TYPES))
        if overlapping:
            address = draw(st.integers(0, 120))
        else:
            address = next_free[table] + draw(st.integers(0, 12))
        signal = sig(index, address, type_, table, length)
        next_free[table] = signal.end
        signals.append(signal)
    return signals


@st.composite
def settings_strategy(draw: st.DrawFn) -> ModbusSettings:
    return limits(
        registers=draw(st.integers(4, 30)),
        gap=draw(st.integers(0, 6)),
        bits=draw(st.integers(1, 40)),
    )


def covered_once(signals: Sequence[ModbusSignal], plan: list[PlannedRequest]) -> None:
    seen = [p.signal.name for r in plan for p in r.signals]
    assert sorted(seen) == sorted(s.name for s in signals), "each signal in exactly one request"
    for request in plan:
        for placed in request.signals:
            assert placed.signal.table is request.table
            assert placed.offset == placed.signal.address - request.start
            assert request.start <= placed.signal.address
            assert placed.signal.end <= request.end, "a value is never split across requests"


def within_limits(plan: list[PlannedRequest], config: ModbusSettings) -> None:
    for request in plan:
        limit = request_limit(request.table, config)
        if len(request.signals) > 1:
            assert request.count <= limit, request.describe()
        first = min(p.signal.address for p in request.signals)
        last = max(p.signal.end for p in request.signals)
        assert (request.start, request.end) == (first, last), "no registers read beyond signals"


def gaps_respected(plan: list[PlannedRequest], config: ModbusSettings) -> None:
    for request in plan:
        reach = request.start
        for placed in sorted(request.signals, key=lambda p: (p.signal.address, p.signal.end)):
            assert placed.signal.address - reach <= gap_limit(request.table, config)
            reach = max(reach, placed.signal.end)


def optimal_request_count(signals: Sequence[ModbusSignal], config: ModbusSettings) -> int:
    """Brute force: fewest contiguous runs per table (non-overlapping signals)."""
    total = 0
    for table in Table:
        members = sorted((s for s in signals if s.table is table), key=lambda s: s.address)
        best = [0] + [10**9] * len(members)
        for stop in range(1, len(members) + 1):
            for begin in range(stop):
                run = members[begin:stop]
                size = run[-1].end - run[0].address
                gaps_ok = all(
                    b.address - a.end <= gap_limit(table, config)
                    for a, b in itertools.pairwise(run)
                )
                if len(run) == 1 or (size <= request_limit(table, config) and gaps_ok):
                    best[stop] = min(best[stop], best[begin] + 1)
        total += best[len(members)]
    return total


@settings(max_examples=150, deadline=None)
@given(signals=signal_lists(), config=settings_strategy())
def test_planner_covers_every_signal_once_within_limits_and_gaps(
    signals: list[ModbusSignal], config: ModbusSettings
) -> None:
    plan = plan_reads(signals, config)
    covered_once(signals, plan)
    within_limits(plan, config)
    gaps_respected(plan, config)


@settings(max_examples=150, deadline=None)
@given(signals=signal_lists(overlapping=False), config=settings_strategy())
def test_planner_uses_the_fewest_requests_the_limits_allow(
    signals: list[ModbusSignal], config: ModbusSettings
) -> None:
    plan = plan_reads(signals, config)
    covered_once(signals, plan)
    assert len(plan) == optimal_request_count(signals, config)


def test_planner_merges_gaps_up_to_max_gap() -> None:
    signals = [sig(0, 0), sig(1, 5), sig(2, 11)]  # gaps of 4 and 5 unused registers
    assert [(r.start, r.count) for r in plan_reads(signals, limits(gap=5))] == [(0, 12)]
    assert [(r.start, r.count) for r in plan_reads(signals, limits(gap=4))] == [(0, 6), (11, 1)]
    assert len(plan_reads(signals, limits(gap=0))) == 3


def test_planner_splits_at_the_register_limit_without_splitting_a_value() -> None:
    signals = [sig(0, 0, DataType.FLOAT64), sig(1, 4, DataType.FLOAT64), sig(2, 8, DataType.INT32)]
    plan = plan_reads(signals, limits(registers=6))
    assert [(r.start, r.count) for r in plan] == [(0, 4), (4, 6)]


def test_planner_keeps_tables_apart_and_orders_by_function_code() -> None:
    signals = [
        sig(0, 0, table=Table.INPUT),
        sig(1, 1, table=Table.HOLDING),
        sig(2, 0, DataType.BOOL, table=Table.COIL),
        sig(3, 2, DataType.BOOL, table=Table.DISCRETE_INPUT),
        sig(4, 0, table=Table.HOLDING),
    ]
    plan = plan_reads(signals, limits())
    assert [(r.function_code, r.start, r.count) for r in plan] == [
        (1, 0, 1),
        (2, 2, 1),
        (3, 0, 2),
        (4, 0, 1),
    ]


def test_planner_reads_bits_through_gaps_of_sixteen_bits_per_gap_register() -> None:
    coils = [sig(0, 0, DataType.BOOL, Table.COIL), sig(1, 33, DataType.BOOL, Table.COIL)]
    assert len(plan_reads(coils, limits(gap=2))) == 1  # 32 unused bits <= 2 * 16
    assert len(plan_reads(coils, limits(gap=1))) == 2
    assert len(plan_reads(coils, limits(gap=2, bits=20))) == 2


def test_planner_gives_an_oversized_value_a_request_of_its_own() -> None:
    signals = [sig(0, 0), sig(1, 1, DataType.STRING, length=10), sig(2, 11)]
    plan = plan_reads(signals, limits(registers=4))
    assert [(r.start, r.count) for r in plan] == [(0, 1), (1, 10), (11, 1)]


def test_planner_shares_a_register_between_bit_signals() -> None:
    status = [
        ModbusSignal(name=f"alarm_active.b{bit}", address=7, type=DataType.BOOL, bit=bit)
        for bit in (0, 3, 15)
    ]
    plan = plan_reads(status, limits())
    assert [(r.start, r.count, len(r.signals)) for r in plan] == [(7, 1, 3)]


# ---- demonstration: a grinder-like and a press-like register map ------------------------------

GRINDER_MAP = [  # (name, table, address, type): a raceway grinder's PLC map, with gaps
    ("machine_state", "holding", 0, "uint16"),
    ("alarm_code", "holding", 1, "uint16"),
    ("part_count", "holding", 2, "uint32"),
    ("good_count", "holding", 4, "uint32"),
    ("reject_count", "holding", 6, "uint32"),
    ("cycle_time", "holding", 10, "float32"),
    ("spindle_speed", "holding", 20, "float32"),
    ("workhead_speed", "holding", 22, "float32"),
    ("spindle_load", "holding", 24, "uint16"),
    ("wheel_surface_speed", "holding", 26, "float32"),
    ("infeed_rate", "holding", 28, "float32"),
    ("size_deviation", "holding", 40, "float32"),
    ("dressing_count", "holding", 42, "uint32"),
    ("coolant_temperature", "holding", 50, "int16"),
    ("spindle_temperature", "holding", 51, "int16"),
    ("axis_temperature.x", "holding", 52, "int16"),
    ("axis_temperature.z", "holding", 53, "int16"),
    ("vibration_rms", "holding", 60, "float32"),
    ("vibration_accel_rms", "holding", 62, "float32"),
    ("feed_override", "holding", 70, "uint16"),
    ("tool_number", "holding", 71, "uint16"),
    ("program_name", "holding", 80, "string:8"),
    ("run_hours", "holding", 96, "float32"),
    ("alarm_active", "coil", 0, "bool"),
]

PRESS_MAP = [  # a servo stamping press's controller map: inputs, holding and status coils
    ("machine_state", "input", 0, "uint16"),
    ("alarm_code", "input", 1, "uint16"),
    ("stroke_count", "input", 2, "uint32"),
    ("part_count", "input", 4, "uint32"),
    ("reject_count", "input", 6, "uint32"),
    ("stroke_rate", "input", 10, "float32"),
    ("press_force", "input", 12, "float32"),
    ("press_force.left", "input", 14, "float32"),
    ("press_force.right", "input", 16, "float32"),
    ("die_height", "input", 20, "float32"),
    ("motor_current", "input", 22, "float32"),
    ("motor_current.l1", "input", 24, "float32"),
    ("motor_current.l2", "input", 26, "float32"),
    ("motor_current.l3", "input", 28, "float32"),
    ("cycle_time", "input", 40, "float32"),
    ("axis_temperature.slide", "input", 50, "int16"),
    ("axis_temperature.motor", "input", 51, "int16"),
    ("axis_temperature.oil", "input", 52, "int16"),
    ("active_power", "input", 60, "float32"),
    ("active_energy", "input", 62, "float64"),
    ("program_name", "holding", 100, "string:10"),
    ("tool_number", "holding", 110, "uint16"),
    ("feed_override", "holding", 111, "uint16"),
    ("alarm_active", "discrete_input", 0, "bool"),
    ("alarm_active.light_curtain", "discrete_input", 1, "bool"),
    ("alarm_active.overload", "discrete_input", 2, "bool"),
    ("alarm_active.lubrication", "discrete_input", 5, "bool"),
]


def profile_of(rows: list[tuple[str, str, int, str]], max_registers: int = 125) -> ModbusProfile:
    signals = []
    for name, table, address, type_ in rows:
        kind, _, length = type_.partition(":")
        signals.append(
            {"name": name, "table": table, "address": address, "type": kind}
            | ({"length": int(length)} if length else {})
        )
    return ModbusProfile.model_validate(
        {
            "id": "demo",
            "protocol": "modbus",
            "signals": signals,
            "modbus": {"max_registers_per_request": max_registers},
        }
    )


@pytest.mark.parametrize(("machine", "rows"), [("grinder", GRINDER_MAP), ("press", PRESS_MAP)])
def test_planner_needs_five_times_fewer_requests_than_one_per_signal(
    machine: str, rows: list[tuple[str, str, int, str]]
) -> None:
    profile = profile_of(rows)
    report = plan_profile(profile)
    assert 15 <= report.signals <= 30
    assert report.requests_per_cycle * 5 <= report.signals, report.render()
    covered_once(profile.signals, [r for g in report.groups for r in g.requests])
    assert f"{report.signals} with one request per signal" in report.render()


def test_plan_report_counts_groups_at_their_intervals() -> None:
    profile = ModbusProfile.model_validate(
        {
            "id": "two_groups",
            "protocol": "modbus",
            "groups": [
                {"name": "fast", "interval_ms": 250},
                {"name": "slow", "interval_ms": 10000},
            ],
            "signals": [
                {"name": "spindle_speed", "address": 0, "group": "fast"},
                {"name": "spindle_load", "address": 1, "group": "fast"},
                {"name": "part_count", "address": 100, "type": "uint32", "group": "slow"},
                {"name": "run_hours", "address": 300, "type": "uint32", "group": "slow"},
            ],
        }
    )
    report = plan_profile(profile)
    assert report.requests_per_cycle == 3  # fast: 0..1; slow: 100..101 and 300..301 (gap > 16)
    assert report.signals == 4
    assert report.requests_per_second == pytest.approx(4 + 0.2)
    assert report.naive_requests_per_second == pytest.approx(8 + 0.2)
    figures = report.as_dict()
    assert figures["requests_per_cycle"] == 3
    assert figures["groups"][1]["requests"][0] == {  # type: ignore[index]
        "function_code": 3,
        "table": "holding",
        "start": 100,
        "count": 2,
        "signals": ["part_count"],
    }
    text = report.render()
    assert "FC3 holding 0..1 (2 registers, 2 signals): spindle_speed@0, spindle_load@1" in text


def test_plan_profile_uses_a_devices_tighter_limits() -> None:
    profile = profile_of(GRINDER_MAP)
    loose = plan_profile(profile)
    tight = plan_profile(profile, limits(registers=8, gap=0))
    assert tight.requests_per_cycle > loose.requests_per_cycle
    covered_once(profile.signals, [r for g in tight.groups for r in g.requests])


def test_planner_never_reads_into_an_unreadable_range() -> None:
    signals = [sig(0, 0), sig(1, 5), sig(2, 11), sig(3, 20)]
    config = ModbusSettings(
        max_gap=16, unreadable=[AddressRange(table=Table.HOLDING, start=7, end=9)]
    )
    # 0..5 merge (gap 1..4 is readable); 7..9 sits in the gap before 11, so 11 starts a new
    # request, which still reads across the readable gap 12..19.
    assert [(r.start, r.count) for r in plan_reads(signals, config)] == [(0, 6), (11, 10)]
    # A range of another table changes nothing.
    other = ModbusSettings(max_gap=16, unreadable=[AddressRange(table=Table.INPUT, start=7, end=9)])
    assert [(r.start, r.count) for r in plan_reads(signals, other)] == [(0, 21)]


def test_an_unreadable_range_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="end 3 is before start 9"):
        AddressRange(start=9, end=3)

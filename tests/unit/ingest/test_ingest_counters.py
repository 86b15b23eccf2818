"""Counter increments over constructed sequences: wraps, resets, replacements, late readings."""

from __future__ import annotations

import pytest

from ingest.counters import CounterEvent, increment, increments

E = CounterEvent


@pytest.mark.parametrize(
    "prev, new, expected",
    [
        (10, 15, (5, E.INCREASE)),
        (10, 10, (0, E.INCREASE)),
        (65_530, 4, (10, E.WRAP)),  # uint16 rollover: 65530..65535, 0..4
        (65_535, 0, (1, E.WRAP)),
        (4_294_967_290, 5, (11, E.WRAP)),  # uint32 rollover
        (9_000, 3, (3, E.RESET)),  # shift reset: counted from zero
        (120, 0, (0, E.RESET)),
        (9_000, 5_000, (0, E.REBASE)),  # replaced device with its own count: new baseline
        (1234.5, 1234.4, (0, E.REBASE)),  # float meter jitter backwards
    ],
)
def test_increment_between_two_readings(prev, new, expected):
    increase, event = increment(prev, new)
    assert (increase, event) == (pytest.approx(expected[0]), expected[1])


def test_a_uint16_part_counter_through_a_wrap_and_a_reset_sums_to_the_parts_made():
    # 65,530 -> 65,535 (5), wrap to 2 (3), 10 (8), shift reset to 1 (1), 4 (3): 20 parts
    readings = [
        (1, 65_525.0),
        (2, 65_530.0),
        (3, 65_535.0),
        (4, 2.0),
        (5, 10.0),
        (6, 1.0),
        (7, 4.0),
    ]
    found, baseline, late = increments(None, readings)
    assert sum(i.increase for i in found) == 5 + 5 + 3 + 8 + 1 + 3
    assert [i.event for i in found if i.event is not E.INCREASE] == [E.WRAP, E.RESET]
    assert baseline == (7, 4.0) and late == 0


def test_energy_counter_uint32_rollover_in_kwh():
    readings = [(1, 4_294_967_000.0), (2, 4_294_967_290.0), (3, 100.0), (4, 160.5)]
    found, _, _ = increments(None, readings)
    assert sum(i.increase for i in found) == pytest.approx(290 + 6 + 100 + 60.5)


def test_the_first_reading_is_a_baseline_not_an_increase():
    found, baseline, _ = increments(None, [(100, 5_000.0)])
    assert found == [] and baseline == (100, 5_000.0)
    found, _, _ = increments(baseline, [(200, 5_003.0)])
    assert [(i.ts_ms, i.increase) for i in found] == [(200, 3.0)]


def test_late_readings_are_skipped_and_totals_stay_exact():
    # 100 @10 is known; 130 @30 arrives, then the late 115 @20: the total is still 30
    found, baseline, _ = increments((10, 100.0), [(30, 130.0)])
    found_late, baseline2, late2 = increments(baseline, [(20, 115.0)])
    assert sum(i.increase for i in found + found_late) == 30
    assert late2 == 1 and baseline2 == (30, 130.0)


def test_zero_increases_are_not_stored_but_events_are():
    found, _, _ = increments((1, 50.0), [(2, 50.0), (3, 50.0), (4, 20.0)])
    assert [(i.increase, i.event) for i in found] == [(20.0, E.RESET)]

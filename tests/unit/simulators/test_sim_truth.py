"""Ground truth: change-only recording, lookups by time, outages and the JSONL file."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from simulators.errors import TruthError
from simulators.truth import GroundTruth


def test_records_only_changes() -> None:
    truth = GroundTruth()
    assert truth.record("d", "spindle_speed", 1000, 1200.0)
    assert not truth.record("d", "spindle_speed", 1100, 1200.0)
    assert truth.record("d", "spindle_speed", 1200, 1300.0)
    assert [(p.ts_ms, p.value) for p in truth.series("d", "spindle_speed")] == [
        (1000, 1200.0),
        (1200, 1300.0),
    ]


def test_value_at_returns_the_value_in_effect() -> None:
    truth = GroundTruth()
    truth.record("d", "machine_state", 1000, "running")
    truth.record("d", "machine_state", 2000, "fault")
    assert truth.value_at("d", "machine_state", 1999) == "running"
    assert truth.value_at("d", "machine_state", 2000) == "fault"
    assert truth.values_between("d", "machine_state", 1500, 2500) == ["running", "fault"]
    with pytest.raises(TruthError, match="no value at 999"):
        truth.value_at("d", "machine_state", 999)


def test_unknown_device_or_signal_names_what_is_known() -> None:
    truth = GroundTruth()
    truth.record("press-01", "stroke_count", 1, 5, unwrapped=65541)
    with pytest.raises(
        TruthError, match=r"no ground truth for device 'press-02'; known: \['press-01'\]"
    ):
        truth.series("press-02", "stroke_count")
    with pytest.raises(TruthError, match=r"'part_count'; known: \['stroke_count'\]"):
        truth.series("press-01", "part_count")


def test_wrapped_counter_keeps_the_true_count() -> None:
    truth = GroundTruth()
    truth.record("p", "stroke_count", 1, 65535, unwrapped=65535)
    truth.record("p", "stroke_count", 2, 0, unwrapped=65536)
    assert truth.value_at("p", "stroke_count", 2) == 0
    assert truth.latest("p", "stroke_count").unwrapped == 65536


def test_memory_is_bounded_per_series() -> None:
    truth = GroundTruth(max_points=3)
    for ts in range(10):
        truth.record("d", "x", ts, ts)
    assert [p.value for p in truth.series("d", "x")] == [7, 8, 9]


def test_outages_open_and_close() -> None:
    truth = GroundTruth()
    truth.begin_outage("d", 100, "server stopped")
    truth.begin_outage("d", 150, "again")  # already in an outage: ignored
    truth.end_outage("d", 200)
    assert [(o.start_ms, o.end_ms, o.reason) for o in truth.outages("d")] == [
        (100, 200, "server stopped")
    ]


def test_jsonl_file_has_one_object_per_change(tmp_path: Path) -> None:
    path = tmp_path / "truth" / "run.jsonl"
    truth = GroundTruth(path=path)
    truth.record("d", "part_count", 10, 41)
    truth.record("d", "part_count", 11, 41)
    truth.record("p", "stroke_count", 12, 1, unwrapped=65537)
    truth.begin_outage("d", 13, "unit unreachable")
    truth.close()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert lines == [
        {"ts_ms": 10, "device": "d", "signal": "part_count", "value": 41},
        {"ts_ms": 12, "device": "p", "signal": "stroke_count", "value": 1, "unwrapped": 65537},
        {"ts_ms": 13, "device": "d", "event": "outage_start", "reason": "unit unreachable"},
    ]

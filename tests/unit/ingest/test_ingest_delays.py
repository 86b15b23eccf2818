"""Delay statistics: buckets, percentile bounds and the per-day, per-device accumulation."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from ingest.delays import BUCKETS, DELAY_EDGES_S, DelayRecorder, bucket_of, percentile_bound

TZ = ZoneInfo("Asia/Shanghai")


def _ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=TZ).timestamp() * 1000)


@pytest.mark.parametrize(
    ("delay_s", "upper"),
    [(0.0, 0.1), (0.1, 0.1), (0.11, 0.2), (40.0, 60.0), (60.0, 60.0), (400.0, 600.0)],
)
def test_a_delay_falls_in_the_bucket_whose_upper_edge_bounds_it(
    delay_s: float, upper: float
) -> None:
    assert DELAY_EDGES_S[bucket_of(delay_s)] == upper


def test_delays_beyond_a_day_have_their_own_bucket() -> None:
    assert bucket_of(90_000.0) == BUCKETS - 1
    histogram = [0] * BUCKETS
    histogram[-1] = 1
    assert percentile_bound(histogram, 0.5) == float("inf")


def test_percentile_bounds_are_the_edges_where_the_share_is_reached() -> None:
    histogram = [0] * BUCKETS
    histogram[bucket_of(40.0)] = 19
    histogram[bucket_of(400.0)] = 1
    assert percentile_bound(histogram, 0.5) == 60.0
    assert percentile_bound(histogram, 0.95) == 60.0  # 19 of 20 deliveries are within 60 s
    assert percentile_bound(histogram, 0.99) == 600.0
    assert percentile_bound([0] * BUCKETS, 0.5) is None


def test_deliveries_are_counted_per_device_and_day_of_their_oldest_sample() -> None:
    recorder = DelayRecorder("Asia/Shanghai", flush_every_s=60)
    late_evening = _ms(2025, 6, 10, 23, 59, 50)
    committed = late_evening / 1000 + 30  # stored after midnight: still the 10th's delivery
    recorder.record([([1, 2], late_evening, False), ([1], late_evening, True)], committed)
    recorder.record([([1], _ms(2025, 6, 11, 0, 0, 10), False)], committed)
    pending = recorder._pending
    day10, day11 = date(2025, 6, 10), date(2025, 6, 11)
    assert set(pending) == {(day10, 1), (day10, 2), (day11, 1)}
    first = pending[(day10, 1)]
    assert (first.deliveries, first.historical) == (1, 1)
    assert first.max_delay_s == pytest.approx(30) and first.historical_max_s == pytest.approx(30)
    assert first.histogram[bucket_of(30.0)] == 1
    assert pending[(day11, 1)].max_delay_s == pytest.approx(10)


def test_a_sample_stamped_in_the_future_counts_as_no_delay() -> None:
    recorder = DelayRecorder("Asia/Shanghai", flush_every_s=60)
    ts = _ms(2025, 6, 10, 12, 0, 0)
    recorder.record([([7], ts, False)], ts / 1000 - 5)
    (entry,) = recorder._pending.values()
    assert entry.max_delay_s == 0.0 and entry.histogram[0] == 1


class _RefusingConnection:
    """A connection whose transaction fails, as when the database went away."""

    def transaction(self) -> object:
        raise psycopg.OperationalError("server closed the connection")


def test_statistics_that_could_not_be_stored_are_kept_for_the_next_try() -> None:
    recorder = DelayRecorder("Asia/Shanghai", flush_every_s=60)
    ts = _ms(2025, 6, 10, 12, 0, 0)
    recorder.record([([7], ts, False)], ts / 1000 + 2)
    with pytest.raises(psycopg.OperationalError):
        recorder.store(_RefusingConnection())  # type: ignore[arg-type]
    recorder.record([([7], ts, False)], ts / 1000 + 3)
    (entry,) = recorder._pending.values()
    assert entry.deliveries == 2 and entry.max_delay_s == pytest.approx(3)


def test_the_delay_benchmark_runs_briefly_and_reports() -> None:
    bench = Path(__file__).resolve().parents[3] / "bench" / "delays.py"
    result = subprocess.run(
        [sys.executable, str(bench), "--number", "20", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(result.stdout)
    assert figures["delay_record_us_per_batch"] > 0 and figures["ratio_record_to_encode"] > 0

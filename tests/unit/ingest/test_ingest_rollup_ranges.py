"""Rollup refresh ranges: aligned to whole buckets and merged."""

from __future__ import annotations

import datetime as dt

from ingest.db.rollups import HOUR, MINUTE, align, floor, merge_ranges


def t(h: int, m: int, s: int = 0, ms: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, 28, h, m, s, ms * 1000, tzinfo=dt.UTC)


def test_align_widens_to_whole_buckets():
    assert align((t(10, 5, 30), t(10, 7, 0, 1)), MINUTE) == (t(10, 5), t(10, 8))
    assert align((t(10, 5), t(10, 7)), MINUTE) == (t(10, 5), t(10, 7))
    assert align((t(10, 5), t(10, 7)), HOUR) == (t(10, 0), t(11, 0))
    assert floor(t(23, 59, 59, 999), HOUR) == t(23, 0)


def test_merge_joins_overlapping_and_touching_ranges_only():
    ranges = [
        (t(10, 5), t(10, 8)),
        (t(10, 0), t(10, 5)),
        (t(11, 0), t(11, 1)),
        (t(10, 7), t(10, 9)),
    ]
    assert merge_ranges(ranges) == [(t(10, 0), t(10, 9)), (t(11, 0), t(11, 1))]
    assert merge_ranges([]) == []

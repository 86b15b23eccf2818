"""The ingest process tunes the garbage collector once started (see ingest.service.settle_heap)."""

from __future__ import annotations

import gc

from ingest.service import GC_YOUNG_THRESHOLD, settle_heap


def test_settling_freezes_what_exists_and_collects_the_young_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

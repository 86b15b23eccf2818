"""Several ingest workers may start at the same moment (a deployment, a rolling restart, two
containers after a host reboot): each prepares the database at start, and every one must start."""

from __future__ import annotations

import threading

import pytest
from ingest_support import ingest_settings

from ingest.service import prepare_database

WORKERS = 3
ROUNDS = 3


@pytest.mark.timeout(180)
def test_workers_preparing_one_database_at_the_same_moment_all_start(pg_url: str) -> None:
    settings = ingest_settings(pg_url, "mqtt://127.0.0.1:1883")
    failures: list[str] = []
    for round_no in range(ROUNDS):  # the first round migrates a fresh database
        barrier = threading.Barrier(WORKERS)

        def start(
            worker: int, round_no: int = round_no, barrier: threading.Barrier = barrier
        ) -> None:
            barrier.wait()
            try:
                prepare_database(settings)
            except Exception as exc:  # the assertion below lists them all
                failures.append(f"round {round_no}, worker {worker}: {exc!r}")

        threads = [threading.Thread(target=start, args=(n,)) for n in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert failures == []

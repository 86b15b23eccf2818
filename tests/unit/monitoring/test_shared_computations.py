"""Concurrent requests for the same page data share one computation, and nothing outlives it."""

from __future__ import annotations

import asyncio

import pytest

from monitoring.api.shared import SharedComputations


def test_callers_during_a_computation_share_it_and_later_ones_compute_again() -> None:
    async def run() -> tuple[list[int], int, int]:
        shared = SharedComputations()
        release = asyncio.Event()
        calls = 0

        async def compute() -> int:
            nonlocal calls
            calls += 1
            await release.wait()
            return calls

        waiting = [asyncio.ensure_future(shared.run("overview", compute)) for _ in range(5)]
        await asyncio.sleep(0.01)
        assert shared.running == 1
        release.set()
        together = list(await asyncio.gather(*waiting))
        assert shared.running == 0
        later = await shared.run("overview", compute)  # not served from the first computation
        other = await shared.run("segment", compute)
        return together, later, other

    together, later, other = asyncio.run(run())
    assert together == [1] * 5
    assert (later, other) == (2, 3)


def test_different_keys_never_share() -> None:
    async def run() -> list[str]:
        shared = SharedComputations()
        release = asyncio.Event()

        def compute(answer: str):  # type: ignore[no-untyped-def]
            async def work() -> str:
                await release.wait()
                return answer

            return work

        tasks = [
            asyncio.ensure_future(shared.run(("enterprise", "ent-a", True), compute("rows"))),
            asyncio.ensure_future(shared.run(("enterprise", "ent-a", False), compute("none"))),
        ]
        await asyncio.sleep(0.01)
        release.set()
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(run()) == ["rows", "none"]


def test_a_cancelled_first_caller_waits_for_its_computation_and_the_others_get_it() -> None:
    """The computation runs on the first request's connections: that request must not end (and
    give them back to the pool) while the computation still uses them."""

    async def run() -> tuple[str, bool]:
        shared = SharedComputations()
        release = asyncio.Event()
        finished = False

        async def compute() -> str:
            nonlocal finished
            await release.wait()
            finished = True
            return "page"

        first = asyncio.ensure_future(shared.run("k", compute))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(shared.run("k", compute))
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0.01)
        assert not first.done()  # still waiting for the computation it started
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        ended_with_it = finished
        return await second, ended_with_it

    assert asyncio.run(run()) == ("page", True)


def test_an_error_reaches_every_caller() -> None:
    async def run() -> list[BaseException | str]:
        shared = SharedComputations()
        release = asyncio.Event()

        async def compute() -> str:
            await release.wait()
            raise LookupError("segment '999' not found")

        tasks = [asyncio.ensure_future(shared.run("k", compute)) for _ in range(3)]
        await asyncio.sleep(0.01)
        release.set()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    outcomes = asyncio.run(run())
    assert [type(o) for o in outcomes] == [LookupError] * 3

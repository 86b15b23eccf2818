"""Helpers every test may import (`from support import wait_until`): waiting without sleeping.

A module of its own with a unique name, because several conftest.py files exist and
`from conftest import ...` would find whichever was imported last.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["wait_until", "wait_until_async"]


def wait_until(
    pred: Callable[[], object],
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> object:
    """Poll ``pred`` until it returns something truthy; fail the test naming ``what`` on time-out."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = pred()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


async def wait_until_async(
    pred: Callable[[], Awaitable[object] | object],
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        result = pred()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)

"""Helpers every test may import (`from support import wait_until`): waiting without sleeping,
and running the `shulian` command as a subprocess.

A module of its own with a unique name, because several conftest.py files exist and
`from conftest import ...` would find whichever was imported last.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

__all__ = ["run_shulian", "wait_until", "wait_until_async"]


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


async def run_shulian(*args: str, timeout_s: float = 60.0) -> tuple[int, str, str]:
    """Run ``python -m shulian <args>`` (the real CLI); its exit status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shulian",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()

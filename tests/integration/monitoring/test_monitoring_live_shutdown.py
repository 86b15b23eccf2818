"""A live stream cancelled while its payload is being computed (the browser went away, or the
ingest is stopping) leaves nothing for asyncio to report: the demo's log showed "Future exception
was never retrieved" tracebacks after Ctrl-C with a dashboard open."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any

from psycopg_pool import AsyncConnectionPool

from monitoring.api.access import Reach
from monitoring.api.deps import Caller
from monitoring.api.live import LiveHub
from monitoring.api.scopes import Scope
from monitoring.auth import Principal, Role
from monitoring.settings import MonitoringSettings


async def test_a_payload_cancelled_mid_computation_leaves_no_unretrieved_future(
    monitoring_db: str,
) -> None:
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    pool = AsyncConnectionPool(monitoring_db, min_size=1, max_size=2, open=False)
    await pool.open()
    try:
        hub = LiveHub(pool, MonitoringSettings())
        caller = Caller(Principal(token_id=1, role=Role.BUREAU), Reach())
        # The same computation finishes when nothing cancels it, so the cancel below is what
        # the test is about.
        assert (await hub.payload(caller, Scope("city"))).startswith(b"{")
        scopes = [Scope("segment", "345"), Scope("segment", "367"), Scope("district", "210211")]
        for scope in scopes:  # each one not cached yet: its payload is being computed
            task = asyncio.create_task(hub.payload(caller, scope))
            await asyncio.sleep(0)  # it has started computing (the first await of a query)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            del task
            gc.collect()
            await asyncio.sleep(0)
    finally:
        await pool.close()
        loop.set_exception_handler(None)
    never = [c for c in reported if "never retrieved" in str(c.get("message", ""))]
    assert never == [], never

"""Requests for the same page data at the same moment share one computation; nothing is kept.

Twenty viewers opening the city overview together would otherwise sum the same 10,000 devices
twenty times over. A request whose page data (same page, scope, days and access-dependent
content) is already being computed waits for that computation instead of starting its own. Once
it ends its entry is gone: a later request computes afresh, so an answer is never older than the
computation it joined (at most one page computation, tens of milliseconds), and `as_of` says when
that began. This is not a cache: there is nothing to invalidate.

Each request checks its own caller's access before it joins (the routes do), and the key holds
everything in the payload that depends on the caller (whether device rows are included), so no
caller gets a payload another caller's access shaped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, TypeVar

from fastapi import Request
from psycopg import AsyncConnection

from monitoring.api import views
from monitoring.api.deps import Caller, get_settings
from monitoring.api.json_body import JsonBody
from monitoring.api.scopes import Scope, parse_day, require_scope

T = TypeVar("T")


class SharedComputations:
    """In-flight page computations by key."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[Any]] = {}

    @property
    def running(self) -> int:
        return len(self._running)

    async def run(self, key: Hashable, compute: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """``compute()``'s result, shared with every caller asking for ``key`` while it runs.

        The first caller's ``compute`` runs on that caller's connections, so when that request is
        cancelled (its client went away) it still waits for the computation to end before its
        connections go back to the pool; the others keep waiting for the result.
        """
        task = self._running.get(key)
        if task is not None:
            result: T = await asyncio.shield(task)
            return result
        task = asyncio.ensure_future(compute())
        self._running[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))
        try:
            return await asyncio.shield(task)
        finally:
            if not task.done():
                await asyncio.wait([task])

    def _forget(self, key: Hashable, done: asyncio.Task[Any]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # its callers re-raise it; none left (all cancelled) is not an error


def shared_computations(request: Request) -> SharedComputations:
    """The app's SharedComputations, made on first use."""
    state = request.app.state
    found: SharedComputations | None = getattr(state, "shared_computations", None)
    if found is None:
        found = state.shared_computations = SharedComputations()
    return found


async def group_page_body(
    request: Request,
    caller: Caller,
    conn: AsyncConnection[Any],
    scope: Scope,
    start: str | None,
    end: str | None,
) -> JsonBody:
    """A segment's or district's page data (``views.group_page``), shared by concurrent callers
    once each has passed its own scope check."""
    await require_scope(conn, caller, scope)  # each caller's own check, before sharing
    first, last = parse_day(start, "start"), parse_day(end, "end")
    settings = get_settings(request).kpi
    body = await shared_computations(request).run(
        (scope.kind, scope.key, first, last),
        lambda: views.group_page(conn, settings, caller, scope, views.utc_now(), first, last),
    )
    return JsonBody(body)

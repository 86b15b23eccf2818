"""Live updates: watch for new data and push each subscriber its page's data as server-sent events.

One poller per app asks the database for the newest sample, gateway status/metrics and device
status times every ``live_poll_s``; when one moves, every open stream recomputes its scope's payload (shared between subscribers of the same
scope and access) and sends it as an ``update`` event. A quiet stream gets a comment line every
15 s so proxies keep it open.

Every ``live_recheck_s`` (2 s) each stream checks its caller again: the token or session must
still be live and the caller must still be allowed the scope (an enterprise may have withdrawn the
bureau's grant). When not, the stream sends a ``closed`` event with ``{code, message, hint}`` and
ends. When the caller's access changed but still covers the scope (for example a grant that
decides whether an enterprise page lists devices), the stream sends a fresh ``update`` at once.
A stream holds no database connection between checks and payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from monitoring.api import fleet, views
from monitoring.api.access import Capability
from monitoring.api.deps import Caller
from monitoring.api.errors import ApiError
from monitoring.api.scopes import Scope
from monitoring.settings import MonitoringSettings

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
ACCESS = 6
"""Where the access part of the poll's marker starts (before it: data, gateway and device status)."""

Recheck = Callable[[], Awaitable[Caller]]
"""Authenticates the stream's credential again and checks its scope; raises ``ApiError`` when
the caller may no longer see it."""


class LiveHub:
    """Detects new data and fans recomputed payloads out to SSE streams."""

    def __init__(self, pool: AsyncConnectionPool, settings: MonitoringSettings) -> None:
        self._pool = pool
        self._settings = settings
        self._version = 0
        self._access_version = 0
        self._marker: Any = None
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._cache: dict[tuple[Any, ...], tuple[int, asyncio.Future[bytes]]] = {}
        self._closing = False

    @property
    def version(self) -> int:
        return self._version

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll_forever(), name="live-hub")

    async def close_streams(self) -> None:
        """End every open stream at once (the server is stopping): a stream waits for changes
        for ever, and uvicorn waits for open connections before it stops."""
        self._closing = True
        async with self._changed:
            self._changed.notify_all()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the task boundary: log, keep polling
                log.warning("live poll failed", exc_info=True)
            await asyncio.sleep(self._settings.live_poll_s)

    async def poll_once(self) -> bool:
        """Check for new data or changed access; wake the streams and return True on a change.

        Access (grants, revoked tokens, sessions) is watched separately: when it changes, every
        stream re-checks its caller before it computes the next payload, so a withdrawn grant
        never feeds one more update to a caller who lost it.
        """
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """SELECT (SELECT max(last_seen) FROM device_presence),
                          (SELECT max(since) FROM device_states),
                          (SELECT max(greatest(status_at, metrics_at)) FROM gateways),
                          (SELECT max(connection_at) FROM devices),
                          (SELECT (max(id), max(refused_at)) FROM config_assignments),
                          (SELECT max(id) FROM config_reports),
                          (SELECT coalesce(string_agg(enterprise || ':' || grantee, ','
                                                      ORDER BY enterprise, grantee), '')
                           FROM data_grants),
                          (SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL),
                          (SELECT count(*) FROM web_sessions)"""
            )
            marker = await cur.fetchone()
        if marker == self._marker:
            return False
        if marker is not None and (
            self._marker is None or marker[ACCESS:] != self._marker[ACCESS:]
        ):
            self._access_version += 1
        self._marker = marker
        async with self._changed:
            self._version += 1
            self._changed.notify_all()
        return True

    async def _wait_change(self, seen: int, timeout_s: float) -> bool:
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._version != seen or self._closing),
                    max(timeout_s, 0.0),
                )
            except TimeoutError:
                return False
        return True

    async def payload(self, caller: Caller, scope: Scope) -> bytes:
        """The scope's page data at the current version, computed once per scope and access."""
        key = (
            scope,
            caller.role,
            caller.principal.enterprise,
            caller.can(Capability.DEVICE_DATA, scope.key.partition("/")[0]),
        )
        version = self._version
        cached = self._cache.get(key)
        if cached and cached[0] == version:
            shared = cached[1]
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not shared.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The stream that was computing it went away (its browser closed, or the
                # server is stopping): this one computes it itself below.
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._cache[key] = (version, future)
        try:
            data = await self._compute(caller, scope)
        except asyncio.CancelledError:
            # Cancelled, not failed: a cancelled future is never reported by asyncio, whereas
            # one holding a CancelledError nobody awaits was logged as "Future exception was
            # never retrieved" (after Ctrl-C of the demo with a dashboard open).
            future.cancel()
            self._cache.pop(key, None)
            raise
        except Exception as exc:
            future.set_exception(exc)
            # Raised to this caller below; streams sharing the future get it through shield.
            # Marked retrieved so that with no other stream it is not logged a second time.
            future.exception()
            self._cache.pop(key, None)
            raise
        future.set_result(data)
        return data

    async def _compute(self, caller: Caller, scope: Scope) -> bytes:
        settings = self._settings.kpi
        now = views.utc_now()
        async with self._pool.connection() as conn:
            if scope.kind == "city":
                body = await views.overview(conn, settings, now, snapshot=False)
            elif scope.kind in ("segment", "district"):
                body = await views.group_page(conn, settings, caller, scope, now, snapshot=False)
            elif scope.kind == "enterprise":
                body = await views.enterprise_page(conn, settings, caller, scope.key, now)
            elif scope.kind == "provider":
                body = await views.provider_page(conn, settings, caller, scope.key, now)
            elif scope.kind == "fleet":
                body = await fleet.fleet_page(conn, caller, scope.key, now)
            else:
                body = await views.device_live(conn, settings, caller, scope, now)
        return orjson.dumps(body, default=_default)

    async def stream(
        self, request: Request, caller: Caller, scope: Scope, recheck: Recheck
    ) -> AsyncIterator[bytes]:
        """SSE frames: the payload now, then after every change; keep-alive comments between.

        Ends with a ``closed`` event as soon as ``recheck`` finds the caller lost the scope.
        """
        seen, access_seen = self._version, self._access_version
        yield b"retry: 2000\nevent: update\ndata: " + await self.payload(caller, scope) + b"\n\n"
        recheck_s = self._settings.live_recheck_s
        next_check = time.monotonic() + recheck_s
        last_sent = time.monotonic()
        while not self._closing and not await request.is_disconnected():
            wake = min(next_check, last_sent + KEEPALIVE_S)
            changed = await self._wait_change(seen, wake - time.monotonic())
            if self._closing:
                return  # the browser reconnects (retry: 2000) to the next server that answers
            if time.monotonic() >= next_check or self._access_version != access_seen:
                access_seen = self._access_version
                try:
                    fresh = await recheck()
                except ApiError as exc:
                    log.info("live stream closed: %s (scope %s)", exc.message, scope.kind)
                    yield b"event: closed\ndata: " + orjson.dumps(exc.body()) + b"\n\n"
                    return
                next_check = time.monotonic() + recheck_s
                if fresh != caller:
                    caller, changed = fresh, True
            if changed:
                seen = self._version
                yield b"event: update\ndata: " + await self.payload(caller, scope) + b"\n\n"
                last_sent = time.monotonic()
            elif time.monotonic() - last_sent >= KEEPALIVE_S:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")

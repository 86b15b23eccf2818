"""Build the monitoring web app: JSON API under /api, pages and static assets, live updates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitoring import integration as integration_measures
from monitoring.api.errors import ApiError
from monitoring.api.export_push import push_forever
from monitoring.api.live import LiveHub
from monitoring.api.routes import (
    auth,
    config,
    devices,
    districts,
    enterprises,
    evidence,
    export,
    health,
    imports,
    integration,
    overview,
    pages,
    providers,
    segments,
)
from monitoring.kpis import refresh_daily, refresh_status
from monitoring.settings import MonitoringSettings

log = logging.getLogger(__name__)

WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web"


def create_app(settings: MonitoringSettings) -> FastAPI:
    """The FastAPI app: opens a connection pool on start-up and closes it on shutdown, and runs
    the background refresh jobs while it is up when ``refresh.enabled``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = _open_pool(settings.db.url, settings, "shulian-api")
        read_pool = (
            _open_pool(settings.db.read_url, settings, "shulian-api-read")
            if settings.db.read_url is not None
            else pool
        )
        pools = [pool] if read_pool is pool else [pool, read_pool]
        for each in pools:
            await each.open(wait=True, timeout=30)
        try:
            await _require_writable(pool)
        except BaseException:
            for each in pools:
                await each.close()
            raise
        hub = LiveHub(read_pool, settings)
        app.state.pool = pool
        app.state.read_pool = read_pool
        app.state.hub = hub
        # The refresh jobs write: they run on the write pool, which _require_writable checked.
        tasks = _start_refresh_jobs(pool, settings) if settings.refresh.enabled else []
        hub.start()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await hub.stop()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for each in pools:
                await each.close()

    app = FastAPI(
        title="shulian monitoring (产业运行监测)",
        version="1.0",
        description="City industry-operation monitoring: KPIs, registry, devices, daily export. "
        "Authenticate with `Authorization: Bearer <token>`; docs/monitoring.md lists what each "
        "role can see.",
        lifespan=lifespan,
    )
    app.state.api_settings = settings
    _install_error_handlers(app)
    for module in (
        health,
        auth,
        overview,
        segments,
        districts,
        enterprises,
        devices,
        providers,
        export,
        evidence,
        integration,
        config,
    ):
        app.include_router(module.router, prefix="/api")
    app.include_router(imports.router, prefix="/api")
    app.include_router(pages.router)
    app.include_router(evidence.pages)
    app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")
    app.add_middleware(NoStoreMiddleware)
    return app


def _open_pool(url: SecretStr, settings: MonitoringSettings, name: str) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        url.get_secret_value(),
        # Two open from the start: a request and the live hub's once-a-second poll (or a refresh
        # job) meet often, and opening a connection costs more than a page's queries.
        min_size=min(2, settings.pool_size),
        max_size=settings.pool_size,
        # JIT compiling the KPI queries (their cost estimates are large) takes longer than
        # running them: about 1.4 s against 0.1 s at 10,000 devices (bench/monitoring.py).
        kwargs={"autocommit": True, "options": "-c jit=off"},
        open=False,
        name=name,
    )


async def _require_writable(pool: AsyncConnectionPool) -> None:
    """Refuse to start when ``db.url`` cannot write: sign-in, sessions and the refresh jobs need
    it, and a standby (or a read-only login) would fail each of them later, one by one."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')"
        )
        row = await cur.fetchone()
    if row is not None and (row[0] or row[1] == "on"):
        what = "a standby (in recovery)" if row[0] else "a read-only login"
        raise StartupError(
            f"db.url reaches {what}: the monitoring writes sessions, tokens, grants, uploads and "
            "its daily KPI tables there. Point db.url at the primary with the monitoring's role, "
            "and db.read_url at the replica or read-only login (docs/scaling.md)"
        )


class StartupError(RuntimeError):
    """The app cannot start with these settings; the message says which and what to change."""


class NoStoreMiddleware:
    """``Cache-Control: no-store`` on pages and API answers (not on /static).

    Nothing a signed-in user saw stays in the browser's cache: after signing out, the back button
    asks the server again (and lands on the sign-in page) instead of showing the data.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_no_store)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        body = {
            "code": "bad_input",
            "message": f"{where}: {first.get('msg', 'invalid')}",
            "hint": "See /docs for the parameters of this endpoint.",
        }
        return JSONResponse(body, status_code=422)


def _start_refresh_jobs(
    pool: AsyncConnectionPool, settings: MonitoringSettings
) -> list[asyncio.Task[None]]:
    """The jobs that write (``refresh.enabled``): one instance of a deployment runs them."""
    tasks = [
        asyncio.create_task(_refresh_daily_forever(pool, settings), name="kpi-daily"),
        asyncio.create_task(_refresh_status_forever(pool, settings), name="kpi-status"),
        asyncio.create_task(_refresh_integration_forever(pool, settings), name="integration-daily"),
    ]
    if settings.export.enabled:  # the optional upward push (docs/export.md)
        db_url = settings.db.url.get_secret_value()
        tasks.append(asyncio.create_task(push_forever(db_url, settings), name="export"))
    log.info("refresh jobs running: %s", ", ".join(task.get_name() for task in tasks))
    return tasks


async def _refresh_daily_forever(pool: AsyncConnectionPool, settings: MonitoringSettings) -> None:
    """Keep the daily KPI table current for today and yesterday (late data may still arrive)."""
    while True:
        try:
            async with pool.connection() as conn:
                await refresh_daily(conn, settings.kpi, days_back=1)
        except asyncio.CancelledError:
            raise
        except Exception:  # one broad catch at the task boundary: log and retry next period
            log.exception("daily KPI refresh failed; retrying in %.0f s", settings.refresh.daily_s)
        await asyncio.sleep(settings.refresh.daily_s)


async def _refresh_status_forever(pool: AsyncConnectionPool, settings: MonitoringSettings) -> None:
    """Keep the status snapshot the city, segment and district pages read at most
    ``refresh.status_s`` old (``kpis.refresh_status``)."""
    while True:
        try:
            async with pool.connection() as conn:
                await refresh_status(conn, settings.kpi)
        except asyncio.CancelledError:
            raise
        except Exception:  # one broad catch at the task boundary: log and retry next period
            log.exception("status refresh failed; retrying in %.0f s", settings.refresh.status_s)
        await asyncio.sleep(settings.refresh.status_s)


async def _refresh_integration_forever(
    pool: AsyncConnectionPool, settings: MonitoringSettings
) -> None:
    """Keep the data-integration measures current, in a task of its own: they read raw telemetry,
    which takes longer than the KPIs' rollups and must not delay them. Today (and yesterday while
    late data may come) every ``refresh.integration_s``; past days that gained data, checked as
    often as the KPIs (``refresh.daily_s``), so loaded history shows within a minute."""
    loop = asyncio.get_running_loop()
    recent_due = 0.0
    while True:
        try:
            recent = loop.time() >= recent_due
            async with pool.connection() as conn:
                await integration_measures.refresh_daily(
                    conn, settings.kpi, days_back=1, recent=recent
                )
            if recent:
                recent_due = loop.time() + settings.refresh.integration_s
        except asyncio.CancelledError:
            raise
        except Exception:  # one broad catch at the task boundary: log and retry next period
            log.exception(
                "integration refresh failed; retrying in %.0f s", settings.refresh.daily_s
            )
        await asyncio.sleep(settings.refresh.daily_s)

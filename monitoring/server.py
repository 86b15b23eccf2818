"""Serve the monitoring app with uvicorn: ``shulian monitoring run``, and the ingest's process when
it hosts the monitoring (shulian/hosting.py).

On SIGTERM uvicorn stops accepting requests and waits for open connections; dashboards hold
``/api/live`` streams that never end by themselves, so the server ends them at once and gives
any other request ``STREAMS_CLOSE_S`` to finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any, Final

import uvicorn
from fastapi import FastAPI

from monitoring.api.app import create_app
from monitoring.settings import MonitoringSettings

log = logging.getLogger(__name__)

STREAMS_CLOSE_S: Final = 3
"""How long a stopping server lets open live streams (dashboards) run before it ends them."""


def run(settings: MonitoringSettings) -> None:
    """Serve the pages and the API (and the refresh jobs when enabled) until SIGTERM or SIGINT."""
    _log_stops()
    serve(create_app(settings), settings.http.host, settings.http.port)
    log.info("monitoring stopped")


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run ``app`` until the process is told to stop; returns after a graceful shutdown."""
    log.info("monitoring app on http://%s:%d", host, port)
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, timeout_graceful_shutdown=STREAMS_CLOSE_S
    )
    _Server(config).run()


def _log_stops() -> None:
    """uvicorn handles SIGTERM/SIGINT while it runs, then restores the previous handlers and
    raises the signal again: with these in place that only logs, so the process exits 0."""

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


class _Server(uvicorn.Server):
    """uvicorn's server that also ends the app's live streams when told to stop."""

    _closing: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app: Any = self.config.app
        hub = getattr(app.state, "hub", None)
        if hub is not None and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(hub.close_streams())
        super().handle_exit(sig, frame)


__all__ = ["STREAMS_CLOSE_S", "run", "serve"]

"""The ingest's own HTTP endpoint: ``/metrics`` (Prometheus) and ``/api/ingest/health``.

``shulian ingest run`` serves them on ``api.host:api.port`` when ``api.enabled``; a process that
also hosts the monitoring (``--with-monitoring``, shulian/hosting.py) adds the same routes to the
monitoring's app instead, so one port answers both.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response

if TYPE_CHECKING:
    from ingest.service import IngestService

log = logging.getLogger(__name__)


def add_routes(app: FastAPI, service: IngestService) -> None:
    """Add ``/metrics`` and ``/api/ingest/health`` of ``service`` to ``app``."""
    from prometheus_client.exposition import choose_encoder

    registry = service.metrics.registry

    def metrics(request: Request) -> Response:
        # A route, not a mounted app: a mount at /metrics answers /metrics with a redirect to
        # /metrics/, which a scraper or a person following the banner has to chase.
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/api/ingest/health",
        service.health,
        methods=["GET"],
        tags=["health"],
        summary="The ingest worker: broker connection, database, backlog, last commit",
    )


def create_app(service: IngestService) -> FastAPI:
    """The ingest's endpoint as an app of its own (no pages, no monitoring API)."""
    app = FastAPI(title="shulian ingest", docs_url=None, redoc_url=None, openapi_url=None)
    add_routes(app, service)
    return app


def serve(service: IngestService) -> None:
    """Serve ``create_app(service)`` on ``api.host:api.port`` until SIGTERM or SIGINT."""
    import uvicorn

    api = service.settings.api
    log.info("ingest endpoint on http://%s:%d (/metrics, /api/ingest/health)", api.host, api.port)
    uvicorn.Server(
        uvicorn.Config(create_app(service), host=api.host, port=api.port, log_config=None)
    ).run()


__all__ = ["add_routes", "create_app", "serve"]

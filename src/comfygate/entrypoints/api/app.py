"""The FastAPI application factory.

``create_app(container)`` builds one app around one container: routers, problem+json
error handlers, the request-context middleware, and a lifespan that runs
``container.on_startup`` (in order) and ``container.on_shutdown`` (in reverse) — the
jobs side starts and stops its dispatcher there. The web pages (``entrypoints/web``)
are served by the same app, outside the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline

import comfygate
from comfygate.bootstrap import Container
from comfygate.entrypoints.api import (
    routes_account,
    routes_admin,
    routes_capabilities,
    routes_health,
    routes_jobs,
    routes_payments,
    routes_price_books,
    routes_quotes,
    routes_usage,
)
from comfygate.entrypoints.api.errors import install_error_handlers
from comfygate.entrypoints.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from comfygate.entrypoints.web import routes as web_routes


def _routers() -> list[APIRouter]:
    return [
        routes_health.router,
        routes_quotes.router,
        routes_capabilities.router,
        routes_account.router,
        routes_payments.router,
        routes_admin.router,
        routes_price_books.router,
        routes_jobs.router,
        routes_usage.router,
    ]


def create_app(container: Container) -> FastAPI:
    """One app serving ``container``; build as many as you like (tests do)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            for hook in container.on_startup:
                await hook()
            yield
        finally:
            for hook in reversed(container.on_shutdown):
                await hook()

    # The docs pages' scripts and styles are served from the package, not a CDN: the
    # gateway works offline (SPEC §6).
    app = FastAPIOffline(
        title="comfygate",
        version=comfygate.__version__,
        description="Colorize old photos by the token: quotes, jobs, balances, plans.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
        openapi_url="/openapi.json",
        static_url="/docs-static",
    )
    app.state.container = container
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware)  # inside the request context: logged, with an id
    app.add_middleware(RequestContextMiddleware, metrics=container.metrics)
    for router in _routers():
        app.include_router(router)
    app.include_router(web_routes.router, include_in_schema=False)  # pages, not API
    return app
